"""The debtor's record on real Kafka and PostgreSQL: one chronological, hash-chained record of a debtor
across its currencies (invoices, a payment, a promise, reminders with their delivery by e-mail, a
step deferred by the contact cap and one passed over for want of a consented channel), and
`arrears audit verify` naming the entry changed behind Arrears' back."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from contracts.registry import decode_event
from contracts.topics import CONTACTS
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice, payment

pytestmark = pytest.mark.integration

D = dt.date
ARREARS = Path(sys.executable).parent / "arrears"


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


def profile(tenant: str, event_type: str, event_id: str, consented: list[str] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "Debtor D1", "language": "en", "email": f"d1@{tenant}.example"}
    if consented is not None:
        data["consented_channels"] = consented
    return envelope(event_type, tenant, "D1", event_id, data)


async def post(stack: CollectionsStack, events: list[dict[str, Any]]) -> None:
    async with stack.client("ledger", "erp") as api:
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text


async def timeline(stack: CollectionsStack, **params: Any) -> list[dict[str, Any]]:
    """Every entry of D1's record, read in pages of 5 as a collector's screen pages them."""
    entries: list[dict[str, Any]] = []
    after = 0
    async with stack.client("dunning", "collector") as api:
        while True:
            response = await api.get("/v1/debtors/D1/timeline", params={"after": after, "limit": 5, **params})
            assert response.status_code == 200, response.text
            page = response.json()
            entries += page["entries"]
            if not page["entries"]:
                return entries
            after = page["next"]


def audit(stack: CollectionsStack, *args: str) -> subprocess.CompletedProcess[str]:
    settings = stack.stack.settings
    assert settings.database_url is not None and settings.kafka_bootstrap_servers
    env = {
        **os.environ,
        "ARREARS_DATABASE_URL": settings.database_url.get_secret_value(),
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    return subprocess.run(
        [str(ARREARS), "audit", "verify", "--tenant", stack.tenant, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def first(entries: list[dict[str, Any]], kind: str, **where: Any) -> dict[str, Any]:
    return next(e for e in entries if e["kind"] == kind and all(e[k] == v for k, v in where.items()))


async def test_the_debtors_record_across_currencies_and_its_audit(
    stack: CollectionsStack, kafka_log: KafkaLog
) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 5))
    # Courtesy reminders go 3 days before each due date: A-1 on Feb 1, A-2 on Feb 2 (two contacts in
    # 7 days, the cap), U-1 on Feb 3: deferred by the cap, the debtor's contacts in EUR count for USD.
    await post(
        stack,
        [
            profile(t, "ar.debtor.registered.v1", "reg-D1", None),
            invoice(t, "D1", "A-1", "2026-01-05", "2026-02-04", 50_000),
            invoice(t, "D1", "A-2", "2026-01-05", "2026-02-05", 20_000),
            invoice(t, "D1", "U-1", "2026-01-05", "2026-02-06", 30_000, currency="USD"),
        ],
    )
    await stack.run_days(D(2026, 1, 6), D(2026, 2, 3))
    reminders = stack.received.to(f"d1@{t}.example")
    assert len(reminders) == 2, [m["Subject"] for m in reminders]

    # A-2 is paid; the debtor withdraws every consent; a collector records a promise on the USD debt.
    await post(
        stack,
        [
            payment(t, "D1", "P-1", "2026-02-03", 20_000, allocate_to="A-2"),
            profile(t, "ar.debtor.updated.v1", "upd-D1", []),
        ],
    )
    await stack.settled()
    async with stack.client("dunning", "collector") as api:
        promised = await api.post(
            "/v1/cases/D1:USD/promises",
            json={"amount": {"amount_minor": 30_000, "currency": "USD"}, "promised_date": "2026-02-20"},
        )
        assert promised.status_code == 202, promised.text
    await stack.settled()
    # A-1's friendly reminder is due on Feb 8 (1 day past due + 3 for a small amount): no channel left.
    await stack.run_days(D(2026, 2, 4), D(2026, 2, 9))
    assert len(stack.received.to(f"d1@{t}.example")) == 2, "no consent: nothing more by e-mail"

    entries = await timeline(stack)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["previous_hash"] == "0" * 64
    assert all(b["previous_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert {e["currency"] for e in entries} == {"EUR", "USD"}, "one record across currencies"

    a1 = first(entries, "invoice", source_id=entries[0]["source_id"])
    assert (a1["business_date"], a1["currency"], a1["amount_minor"]) == ("2026-01-05", "EUR", 50_000)
    u1 = first(entries, "invoice", currency="USD")
    assert (u1["case_id"], u1["amount_minor"]) == ("D1:USD", 30_000)
    remind_a1 = first(entries, "command.send_reminder", business_date="2026-02-01")
    remind_a2 = first(entries, "command.send_reminder", business_date="2026-02-02")
    assert (remind_a1["case_id"], remind_a1["amount_minor"]) == ("D1:EUR", 50_000)
    assert remind_a2["amount_minor"] == 20_000
    delivered = [e for e in entries if e["kind"] == "delivery.delivered"]
    assert [d["channel"] for d in delivered] == ["email", "email"]
    # The document is the e-mail's Message-ID, the one the debtor's mailbox received.
    assert sorted(d["document"] for d in delivered) == sorted(m["Message-ID"] for m in reminders)
    assert delivered[0]["document"] == f"<{remind_a1['source_id']}@arrears>"
    assert delivered[0]["sentence"].startswith("courtesy_reminder")
    assert "A-1, 500.00 EUR" in remind_a1["sentence"]
    deferred = first(entries, "step.deferred")
    assert (deferred["business_date"], deferred["case_id"]) == ("2026-02-03", "D1:USD")
    # The two EUR contacts of Feb 1 and 2 fill the cap of 2 in 7 days until Feb 1 + 7.
    assert "contact cap reached until 2026-02-08" in deferred["sentence"]
    assert [e["kind"] for e in entries].count("step.deferred") == 1, "decided again that day: noted once"
    paid = first(entries, "payment")
    assert (paid["business_date"], paid["currency"], paid["case_id"]) == ("2026-02-03", "EUR", "D1:EUR")
    assert paid["amount_minor"] == 20_000 and "invoice A-2, 0.00 EUR outstanding" in paid["sentence"]
    promise = first(entries, "promise")
    assert (promise["case_id"], promise["amount_minor"]) == ("D1:USD", 30_000)
    passed = first(entries, "step.passed", case_id="D1:EUR")
    assert passed["business_date"] == "2026-02-08" and "no consented channel" in passed["sentence"]

    order = [remind_a1, delivered[0], remind_a2, deferred, paid, promise, passed]
    assert [e["seq"] for e in order] == sorted(e["seq"] for e in order), "in the order they happened"

    usd_only = await timeline(stack, currency="USD")
    assert usd_only and all(e["currency"] == "USD" for e in usd_only)
    assert [e["seq"] for e in usd_only] == [e["seq"] for e in entries if e["currency"] == "USD"]

    # A delivery outcome delivered again (a producer's retry) is applied once: no second entry.
    contacts = [r for r in await kafka_log.read_all(CONTACTS.name) if decode_event(r.value).tenantid == t]
    again = next(r for r in contacts if decode_event(r.value).type == "ar.contact.delivered.v1")
    await stack.stack.event_log.publish([Message(again.topic, again.key, again.value)])
    await stack.settled()
    assert await timeline(stack) == entries

    intact = audit(stack)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert f"{len(entries)} entries checked" in intact.stdout

    async with stack.resources.sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE dunning.debtor_timeline SET amount_minor = 2000"
                " WHERE tenant_id = :t AND debtor_id = 'D1' AND seq = :seq"
            ),
            {"t": t, "seq": paid["seq"]},
        )
    broken = audit(stack)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"debtor D1, entry {paid['seq']}: hash differs (stored {paid['hash']}" in broken.stdout
    assert audit(stack, "--debtor", "D1").returncode == 1
    assert audit(stack, "--debtor", "D2").returncode == 0, "another debtor's record is not concerned"
