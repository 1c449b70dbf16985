"""One message per debtor and day on real Kafka and PostgreSQL: a debtor owing in EUR and in USD whose
two cases escalate on the same business day gets one e-mail listing both, and each case sees its own
command delivered."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice

D = dt.date


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


async def record(stack: CollectionsStack, debtor: str) -> list[dict[str, Any]]:
    """Every entry of the debtor's record, page by page."""
    entries: list[dict[str, Any]] = []
    after = 0
    async with stack.client("dunning", "collector") as api:
        while True:
            response = await api.get(f"/v1/debtors/{debtor}/timeline", params={"after": after, "limit": 50})
            assert response.status_code == 200, response.text
            page = response.json()
            if not page["entries"]:
                return entries
            entries += page["entries"]
            after = page["next"]


async def test_a_debtor_owing_in_two_currencies_gets_one_email_listing_both(stack: CollectionsStack) -> None:
    t = stack.tenant
    mailbox = f"d1@{t}.example"
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 5))
    async with stack.client("ledger", "erp") as api:
        events = [
            envelope("ar.debtor.registered.v1", t, "D1", "reg-D1", {"name": "Debtor D1", "email": mailbox}),
            invoice(t, "D1", "E-1", "2026-01-05", "2026-01-20", 250_000, "EUR"),
            invoice(t, "D1", "U-1", "2026-01-06", "2026-01-20", 180_000, "USD"),
        ]
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text

    # Both fall due on 2026-01-20 (the courtesy reminders' days are left out: each member of a
    # bundled message counts against the contact caps); both cases send the friendly reminder the
    # day after.
    await stack.start_day(D(2026, 1, 21))
    await stack.settled()

    received = stack.received.to(mailbox)
    assert len(received) == 1, [m["Subject"] for m in received]
    (mail,) = received
    body = mail.get_content()
    assert "€2,500.00" in body and "$1,800.00" in body, body
    assert body.index("E-1") < body.index("U-1")
    assert "overdue" in mail["Subject"].lower()

    # The debtor's record: each case's own command, and the notifier's outcome of each, both
    # naming the one e-mail the debtor received.
    entries = await record(stack, "D1")
    commands = {e["case_id"]: e for e in entries if e["kind"] == "command.send_reminder"}
    delivered = {e["case_id"]: e for e in entries if e["kind"] == "delivery.delivered"}
    assert sorted(commands) == sorted(delivered) == ["D1:EUR", "D1:USD"], entries
    for case_id, command in commands.items():
        assert command["business_date"] == "2026-01-21"
        assert command["source_id"] in delivered[case_id]["sentence"]
        assert delivered[case_id]["channel"] == "email"
        assert delivered[case_id]["document"] == mail["Message-ID"]
    assert mail["Message-ID"] == f"<{min(c['source_id'] for c in commands.values())}@arrears>"
