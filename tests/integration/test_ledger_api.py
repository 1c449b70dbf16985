"""An ERP posts events over HTTP and reads back what the ledger made of them (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from contracts.registry import decode_event
from contracts.topics import RECEIVABLES
from services.runtime import clock
from services.runtime.kafka_log import KafkaLog
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, settings_for
from tests.integration.events import envelope, invoice, money, payment, reversal


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    settings = settings_for(
        await new_database(), kafka, max_events_per_request=50, max_request_bytes=64 * 1024
    )
    async with ledger_stack(settings, tenant) as running:
        yield running


async def test_posted_events_reach_the_statement_and_the_aging(
    stack: LedgerStack, kafka_log: KafkaLog
) -> None:
    t = stack.tenant
    events = [
        envelope(
            "ar.debtor.registered.v1",
            t,
            "D1",
            "reg-D1",
            {"name": "Müller GmbH", "language": "de", "timezone": "Europe/Berlin"},
        ),
        invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000),
        invoice(t, "D1", "B", "2026-02-01", "2026-03-03", 5_000),
        payment(t, "D1", "P1", "2026-02-10", 12_000),  # oldest first: pays A, 2,000 of B
        invoice(t, "D2", "C", "2026-01-15", "2026-02-14", 7_000, "USD"),
    ]
    async with stack.client() as api:
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202
        assert response.json()["accepted"] == 5
        await clock.advance(kafka_log, t, dt.date(2026, 3, 15), dt.datetime.now(dt.UTC))
        await stack.caught_up()

        statement = (await api.get("/v1/debtors/D1/statement")).json()
        assert statement["as_of"] == "2026-03-15"
        assert [(i["invoice_id"], i["outstanding"]) for i in statement["open_items"]] == [("B", 3_000)]
        assert statement["payment_history"][0]["invoice_id"] == "A"
        assert statement["payment_history"][0]["days_to_pay"] == 40
        assert statement["profile"]["name"] == "Müller GmbH"

        aging = (await api.get("/v1/aging")).json()
        assert aging["as_of"] == "2026-03-15"
        assert aging["currencies"]["EUR"]["total_minor"] == 3_000
        assert aging["currencies"]["EUR"]["buckets_minor"]["1-30"] == 3_000
        assert aging["currencies"]["USD"]["buckets_minor"]["1-30"] == 7_000  # due 14 Feb: 29 days past due

    facts = [
        decode_event(r.value)
        for r in await kafka_log.read_all(RECEIVABLES.name)
        if r.key and r.key.startswith(t.encode())
    ]
    settled = [f for f in facts if f.type == "ar.receivable.settled.v1"]
    assert [(f.data.invoice_id, f.data.outstanding.amount_minor) for f in settled] == [("A", 0)]


async def test_posting_the_same_event_again_changes_nothing_and_says_so(stack: LedgerStack) -> None:
    t = stack.tenant
    first = invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000)
    altered = invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 99_999)
    async with stack.client() as api:
        assert (await api.post("/v1/events", json=[first])).json()["accepted"] == 1
        again = (await api.post("/v1/events", json=[first, altered])).json()
        assert [r["status"] for r in again["results"]] == ["duplicate", "conflict"]
        await stack.caught_up()
        statement = (await api.get("/v1/debtors/D1/statement", params={"as_of": "2026-02-01"})).json()
        assert [i["outstanding"] for i in statement["open_items"]] == [10_000]


async def test_a_schema_violation_names_the_event_and_the_field_and_publishes_nothing(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    bad = invoice(t, "D1", "B", "2026-01-01", "2026-01-31", 1)
    bad["data"]["amount"] = {"amount_minor": 10.5, "currency": "EUR"}
    async with stack.client() as api:
        response = await api.post(
            "/v1/events", json=[invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 1), bad]
        )
        assert response.status_code == 422
        assert response.json()["detail"] == [
            {
                "event": 1,
                "id": "inv-B",
                "field": "data.amount.amount_minor",
                "message": "Input should be a valid integer",
            }
        ]
        await stack.caught_up()
        assert (await api.get("/v1/debtors/D1/statement", params={"as_of": "2026-02-01"})).status_code == 404


async def test_oversized_batches_are_refused_with_413(stack: LedgerStack) -> None:
    t = stack.tenant
    async with stack.client() as api:
        too_many = [invoice(t, "D1", f"N{i}", "2026-01-01", "2026-01-31", 1) for i in range(51)]
        assert (await api.post("/v1/events", json=too_many)).status_code == 413
        too_big = orjson.dumps(
            [invoice(t, "D1", "X", "2026-01-01", "2026-01-31", 1) | {"subject": "x" * 200}] * 400
        )
        response = await api.post("/v1/events", content=too_big, headers={"content-type": "application/json"})
        assert response.status_code == 413


async def test_keys_are_required_and_scoped_to_one_tenant(stack: LedgerStack) -> None:
    async with stack.client(key="ark_nothere_nothing") as api:
        assert (await api.get("/v1/aging", params={"as_of": "2026-01-01"})).status_code == 401
        assert (await api.post("/v1/events", json=[])).status_code == 401
    async with stack.client() as api:
        other_tenant = invoice("someone-else", "D1", "A", "2026-01-01", "2026-01-31", 1)
        assert (await api.post("/v1/events", json=[other_tenant])).status_code == 403


async def test_aging_as_reported_then_differs_from_aging_with_what_we_know_now(
    stack: LedgerStack,
) -> None:
    """A chargeback recorded later changes the past as we know it now, not what was reported then."""
    t = stack.tenant
    async with stack.client() as api:
        await api.post(
            "/v1/events",
            json=[
                invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000),
                payment(t, "D1", "P1", "2026-02-05", 10_000, allocate_to="A"),
                invoice(t, "D1", "B", "2026-02-01", "2026-03-03", 4_000),
            ],
        )
        await stack.caught_up()
        reported = (await api.get("/v1/aging", params={"as_of": "2026-02-28"})).json()
        reported_at = dt.datetime.now(dt.UTC)
        assert reported["currencies"]["EUR"]["total_minor"] == 4_000

        # Recorded later, effective in February: a backdated payment for B, and P1 bounces.
        await api.post(
            "/v1/events",
            json=[
                payment(t, "D1", "P2", "2026-02-20", 4_000, allocate_to="B"),
                reversal(t, "D1", "P1", "2026-02-25"),
            ],
        )
        await stack.caught_up()
        known_now = (await api.get("/v1/aging", params={"as_of": "2026-02-28"})).json()
        as_reported = (
            await api.get("/v1/aging", params={"as_of": "2026-02-28", "known_at": reported_at.isoformat()})
        ).json()

    assert known_now["currencies"]["EUR"]["total_minor"] == 10_000
    assert known_now["currencies"]["EUR"]["buckets_minor"]["1-30"] == 10_000
    assert as_reported["currencies"] == reported["currencies"]


async def test_csv_open_item_load_is_idempotent(stack: LedgerStack) -> None:
    csv_text = (
        "debtor_id,invoice_id,issue_date,due_date,amount,currency,amount_paid\n"
        "D7,OI-1,2025-11-01,2025-12-01,1200.50,EUR,200.50\n"
        "D7,OI-2,2025-12-01,2025-12-31,80,EUR,\n"
    )
    async with stack.client() as api:
        first = await api.post("/v1/imports/open-items", params={"as_of": "2026-01-10"}, content=csv_text)
        assert first.status_code == 202, first.text
        assert first.json()["accepted"] == 3
        second = await api.post("/v1/imports/open-items", params={"as_of": "2026-01-10"}, content=csv_text)
        assert second.json()["duplicates"] == 3
        bad = await api.post(
            "/v1/imports/open-items",
            content="debtor_id,invoice_id,issue_date,due_date,amount,currency\nD7,X,2025-13-01,2025-12-01,1,EUR\n",
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "line 2, column issue_date"
        await stack.caught_up()
        statement = (await api.get("/v1/debtors/D7/statement", params={"as_of": "2026-01-10"})).json()
    assert {i["invoice_id"]: i["outstanding"] for i in statement["open_items"]} == {
        "OI-1": 100_000,
        "OI-2": 8_000,
    }


async def test_unparseable_and_rejected_records_go_to_the_dead_letter_topic(
    stack: LedgerStack, kafka_log: KafkaLog
) -> None:
    from services.runtime.log import Message

    t = stack.tenant
    key = f"{t}:D9".encode()
    good_before = invoice(t, "D9", "A", "2026-01-01", "2026-01-31", 1_000)
    schema_violation = invoice(t, "D9", "B", "2026-01-01", "2026-01-31", 1_000)
    schema_violation["data"]["amount"] = money(-5)
    other_currency = envelope(
        "ar.writeoff.posted.v1",
        t,
        "D9",
        "wo-1",
        {
            "writeoff_id": "wo-1",
            "invoice_id": "A",
            "posting_date": "2026-02-01",
            "amount": {"amount_minor": 100, "currency": "USD"},
        },
    )
    good_after = payment(t, "D9", "P1", "2026-02-01", 400, allocate_to="A")
    await kafka_log.publish(
        [
            Message("ar.journal.v1", key, orjson.dumps(good_before)),
            Message("ar.journal.v1", key, b"\x00not json"),
            Message("ar.journal.v1", key, orjson.dumps(schema_violation)),
            Message("ar.journal.v1", key, orjson.dumps(other_currency)),
            Message("ar.journal.v1", key, orjson.dumps(good_after)),
        ]
    )
    await stack.caught_up()
    for _ in range(100):
        dead = [r for r in await kafka_log.read_all("ar.journal.v1.dlq") if r.key == key]
        if len(dead) == 3:
            break
        await asyncio_sleep()
    reasons = [(r.header("dlq.reason") or b"").decode() for r in dead]
    assert len(dead) == 3
    assert reasons[0].startswith("contract: (record): not JSON")
    assert "data.amount" in reasons[1]
    assert reasons[2].startswith("rejected:") and "USD" in reasons[2]
    assert dead[0].value == b"\x00not json"
    async with stack.client() as api:
        statement = (await api.get("/v1/debtors/D9/statement", params={"as_of": "2026-02-02"})).json()
        feed = (await api.get("/v1/rejections")).json()
    assert [i["outstanding"] for i in statement["open_items"]] == [600]
    rejected = {r["id"]: r["reason"] for r in feed["rejections"]}
    assert "USD" in rejected["wo-1"] and "data.amount" in rejected[schema_violation["id"]]


async def asyncio_sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def _arrears(*args: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_clock_command_starts_each_business_day_once_and_aging_follows_it(
    stack: LedgerStack, kafka: KafkaBroker
) -> None:
    env = {"ARREARS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    t = stack.tenant
    async with stack.client() as api:
        posted = await api.post(
            "/v1/events", json=[invoice(t, "D1", "C-1", "2026-03-01", "2026-03-10", 10_000)]
        )
        assert posted.status_code == 202
        assert "started 1 business day(s), 2026-03-09 to 2026-03-09" in await _arrears(
            "clock", "advance", "--tenant", t, "--to", "2026-03-09", env=env
        )
        await stack.caught_up()
        aging = (await api.get("/v1/aging")).json()
        assert aging["as_of"] == "2026-03-09"
        assert aging["currencies"]["EUR"]["buckets_minor"]["current"] == 10_000

        assert "2026-03-10 to 2026-03-20" in await _arrears(
            "clock", "advance", "--tenant", t, "--to", "2026-03-20", env=env
        )
        assert "started 0 business day(s)" in await _arrears(
            "clock", "advance", "--tenant", t, "--to", "2026-03-20", env=env
        )
        await stack.caught_up()
        assert (await api.get("/v1/business-date")).json()["business_date"] == "2026-03-20"
        aging = (await api.get("/v1/aging")).json()
        assert aging["as_of"] == "2026-03-20"
        assert aging["currencies"]["EUR"]["buckets_minor"]["1-30"] == 10_000
