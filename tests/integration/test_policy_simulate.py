"""Policy what-if on the real broker and database: a history driven through ledger, dunning and the
notifier under the default policy, then a candidate without the agency step replayed over it, over
HTTP and through the `arrears` command line.

The history (tenant's policy: the default, version 1, from 2026-01-01): three debtors with one
invoice each, issued 2026-01-02 — D1 2,000.00 EUR due 2026-01-10, D2 5,000.00 EUR due 2026-01-10 and
paid in full on 2026-02-01, D3 1,500.00 EUR due 2026-01-20 — business days 2026-01-03 to 2026-03-15.
In the window 2026-01-15..2026-03-15 the default ladder places D1 with an agency on 2026-03-11 (60 days
after its due date); D3's placement would be on 2026-03-21, after the window; D2 has paid. D2's payment
comes 7 days after its formal notice and phone call of 2026-01-25."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts.collections import CollectionCommand
from contracts.registry import decode_event
from contracts.topics import COMMANDS
from services.dunning.policies import default_policy
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import log_end_offsets, settings_for
from tests.integration.events import envelope, invoice, payment

pytestmark = pytest.mark.integration

D = dt.date
ROOT = Path(__file__).resolve().parents[2]
START, END = D(2026, 1, 15), D(2026, 3, 15)


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


def debtor(tenant: str, debtor_id: str) -> dict[str, object]:
    profile = {"name": f"Debtor {debtor_id}", "email": f"{debtor_id.lower()}@{tenant}.example"}
    return envelope("ar.debtor.registered.v1", tenant, debtor_id, f"reg-{debtor_id}", profile)


async def post(stack: CollectionsStack, events: list[dict[str, object]]) -> None:
    async with stack.client("ledger", "erp") as api:
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text


def without_agency() -> dict[str, Any]:
    document = default_policy().model_dump(mode="json")
    document["steps"] = [s for s in document["steps"] if s["name"] != "agency_placement"]
    return document


async def issued_live(stack: CollectionsStack) -> Counter[tuple[str, str, str]]:
    """What the live run issued in the window: (step, action, preferred channel) -> commands."""
    issued: Counter[tuple[str, str, str]] = Counter()
    for record in await stack.stack.event_log.read_all(COMMANDS.name):
        event = decode_event(record.value)
        command = event.data
        mine = event.tenantid == stack.tenant and isinstance(command, CollectionCommand)
        if mine and START <= command.business_date <= END:
            issued[(command.step, command.action, command.channels[0])] += 1
    return issued


async def dunning_state(stack: CollectionsStack) -> list[Any]:
    url = stack.resources.settings.database_url
    assert url is not None
    connection = await asyncpg.connect(sqlalchemy_to_libpq(url.get_secret_value()))
    try:
        return [
            await connection.fetch("SELECT case_id, xmin::text FROM dunning.cases ORDER BY case_id"),
            await connection.fetchval("SELECT count(*) FROM dunning.timeline"),
            await connection.fetchval("SELECT count(*) FROM dunning.outbox"),
        ]
    finally:
        await connection.close()


async def run_cli(stack: CollectionsStack, candidate: Path) -> dict[str, Any]:
    settings = stack.resources.settings
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARREARS_") and k != "DATABASE_URL"},
        "ARREARS_DATABASE_URL": settings.database_url.get_secret_value(),
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    arrears = Path(sys.executable).parent / "arrears"
    process = await asyncio.create_subprocess_exec(
        str(arrears),
        "policy",
        "simulate",
        "--tenant",
        stack.tenant,
        "--candidate",
        str(candidate),
        "--from",
        START.isoformat(),
        "--to",
        END.isoformat(),
        "--workers",
        "2",
        "--json",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()
    report: dict[str, Any] = json.loads(stdout)
    return report


async def test_the_replay_of_the_policy_in_force_matches_the_live_run_and_the_candidate_differs(
    stack: CollectionsStack, tmp_path: Path
) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 2))
    await post(
        stack,
        [
            debtor(t, "D1"),
            debtor(t, "D2"),
            debtor(t, "D3"),
            invoice(t, "D1", "A-1", "2026-01-02", "2026-01-10", 200_000),
            invoice(t, "D2", "B-1", "2026-01-02", "2026-01-10", 500_000),
            invoice(t, "D3", "C-1", "2026-01-02", "2026-01-20", 150_000),
        ],
    )
    await stack.run_days(D(2026, 1, 3), D(2026, 2, 1))
    await post(stack, [payment(t, "D2", "P-1", "2026-02-01", 500_000)])
    await stack.run_days(D(2026, 2, 2), END)
    await stack.settled()

    live = await issued_live(stack)
    assert live[("agency_placement", "place_with_agency", "webhook")] == 1, live
    offsets_before = await log_end_offsets(stack.resources.settings.kafka_bootstrap_servers or "")
    state_before = await dunning_state(stack)

    body = {"document": without_agency(), "from": START.isoformat(), "to": END.isoformat()}
    async with stack.client("dunning", "collector") as api:
        answer = await api.post("/v1/policies/simulate", json=body)
    assert answer.status_code == 200, answer.text
    report = answer.json()

    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps(without_agency()))
    from_cli = await run_cli(stack, candidate)
    assert from_cli == report

    # The replay of the versions in force issues exactly what the live run issued.
    current = {(c["step"], c["action"], c["channel"]): c["current"] for c in report["commands"]}
    assert {k: n for k, n in current.items() if n} == dict(live)
    # The candidate issues the same, less D1's placement and the letter telling D1 of it.
    candidate_rows = {(c["step"], c["action"], c["channel"]): c["candidate"] for c in report["commands"]}
    expected = dict(live)
    expected[("agency_placement", "place_with_agency", "webhook")] = 0
    expected[("agency_placement_notice", "formal_notice", "letter")] = 0
    assert candidate_rows == {**{k: 0 for k in current}, **expected}
    assert report["agency_placements"] == {"current": 1, "candidate": 0, "difference": -1}
    assert report["legal_actions"] == {"current": 0, "candidate": 0, "difference": 0}
    assert report["debtors"] == 3
    # D2 paid 5,000.00 EUR 7 days after the commands of 2026-01-25, under either policy.
    assert report["paid_within"] == [
        {"currency": "EUR", "current": 500_000, "candidate": 500_000, "difference": 0}
    ]
    assert report["current_versions"] == [1] and report["candidate_version"] == 2
    assert report["caveats"]

    # Nothing was written: no record on any topic, no row of dunning changed.
    assert await log_end_offsets(stack.resources.settings.kafka_bootstrap_servers or "") == offsets_before
    assert await dunning_state(stack) == state_before


async def test_a_window_that_ends_before_it_starts_is_refused(stack: CollectionsStack) -> None:
    body = {"document": without_agency(), "from": "2026-02-01", "to": "2026-01-01"}
    async with stack.client("dunning", "collector") as api:
        assert (await api.post("/v1/policies/simulate", json=body)).status_code == 422
    async with stack.client("dunning", "agency") as api:
        assert (await api.post("/v1/policies/simulate", json=body)).status_code == 403
