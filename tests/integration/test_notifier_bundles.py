"""Bundles at the notifier on a real broker and database: one message for a debtor's commands in
several currencies, sent once when all have arrived, without the members cancelled before the send,
and an outcome for every member naming the same Message-ID or letter."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from sqlalchemy import select

from contracts.channels import Channel
from contracts.collections import CollectionCommand, CommandCancelled, CommandItem
from contracts.money import Money
from contracts.registry import decode_event, make_event
from contracts.topics import CONTACTS
from services.notifier import store
from services.notifier.sender import Sender
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from services.stack import open_stack
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import from_test_start, settings_for
from tests.integration.test_notifier import (
    NOW,
    Mailbox,
    SlowMailbox,
    eventually,
    profile,
    record,
    smtp_server,
)

AMOUNTS = {"EUR": 250_000, "USD": 180_000, "GBP": 90_000}


def member(tenant: str, debtor: str, currency: str, bundle: list[str], channels: list[Channel]) -> Message:
    money = Money(amount_minor=AMOUNTS[currency], currency=currency)
    command_id = f"{tenant}-{debtor}-{currency}"
    data = CollectionCommand(
        command_id=command_id,
        case_id=f"{debtor}:{currency}",
        action="formal_notice",
        step="formal_notice",
        channels=channels,
        template="formal_notice",
        business_date=dt.date(2026, 3, 2),
        case_version=1,
        items=[
            CommandItem(
                invoice_id=f"{debtor}-{currency}-1",
                issue_date=dt.date(2026, 1, 1),
                due_date=dt.date(2026, 1, 31),
                outstanding=money,
                days_past_due=30,
            )
        ],
        total=money,
        deadline=dt.date(2026, 3, 12),
        policy_version=1,
        bundle=bundle,
    )
    return record(
        make_event(
            "collections.command.formal_notice.v1",
            data,
            event_id=command_id,
            tenant_id=tenant,
            debtor_id=debtor,
            source="test",
            time=NOW,
        )
    )


def cancelled(tenant: str, debtor: str, currency: str) -> Message:
    command_id = f"{tenant}-{debtor}-{currency}"
    data = CommandCancelled(
        command_id=command_id,
        case_id=f"{debtor}:{currency}",
        business_date=dt.date(2026, 3, 2),
        reason="paid",
    )
    return record(
        make_event(
            "collections.command.cancelled.v1",
            data,
            event_id=f"cancel-{command_id}",
            tenant_id=tenant,
            debtor_id=debtor,
            source="test",
            time=NOW,
        )
    )


def ids(tenant: str, debtor: str, *currencies: str) -> list[str]:
    return sorted(f"{tenant}-{debtor}-{c}" for c in currencies)


async def test_one_message_per_bundle_with_an_outcome_for_every_member(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as smtp_port:
        settings = settings_for(
            await new_database(),
            kafka,
            smtp_port=smtp_port,
            send_windows="ignore",
            letters_dir=tmp_path / "letters",
        )
        async with open_stack(settings, ["notifier"], prepare=from_test_start) as stack:
            await kafka_log.publish(
                [
                    profile(tenant, "D1", email="d1@example.com"),
                    profile(tenant, "D2", email="d2@example.com", language="ru"),
                    profile(tenant, "D3", postal_address=["1 Main Street", "Springfield"], language="zh"),
                    profile(tenant, "D4", email="d4@example.com"),
                ]
            )
            d1 = ids(tenant, "D1", "EUR", "USD", "GBP")
            d2 = ids(tenant, "D2", "EUR", "USD")
            d3 = ids(tenant, "D3", "EUR", "USD")
            d4 = ids(tenant, "D4", "EUR", "USD")
            email_first: list[Channel] = ["email", "letter"]
            # D1: two of three members arrive; the third comes in a later batch. D2: USD is
            # cancelled before the send. D3 has no e-mail address: one letter. D4: all cancelled.
            await kafka_log.publish(
                [
                    member(tenant, "D1", "EUR", d1, email_first),
                    member(tenant, "D1", "USD", d1, email_first),
                    member(tenant, "D2", "EUR", d2, email_first),
                    member(tenant, "D2", "USD", d2, email_first),
                    cancelled(tenant, "D2", "USD"),
                    member(tenant, "D3", "EUR", d3, email_first),
                    member(tenant, "D3", "USD", d3, email_first),
                    member(tenant, "D4", "EUR", d4, email_first),
                    member(tenant, "D4", "USD", d4, email_first),
                    cancelled(tenant, "D4", "EUR"),
                    cancelled(tenant, "D4", "USD"),
                ]
            )

            async def statuses() -> dict[str, str]:
                async with stack.sessions() as session:
                    rows = await session.execute(
                        select(store.deliveries.c.command_id, store.deliveries.c.status).where(
                            store.deliveries.c.tenant_id == tenant
                        )
                    )
                    return {r.command_id: r.status for r in rows}

            async def others_done() -> bool:
                done = await statuses()
                return all(done.get(i) in ("sent", "cancelled") for i in (*d2, *d3, *d4))

            await eventually(others_done)
            assert mailbox.with_id(d1[0]) == [], "a bundle waits for the member that has not arrived"
            waiting = {i: s for i, s in (await statuses()).items() if i in d1}
            assert waiting == dict.fromkeys(ids(tenant, "D1", "EUR", "USD"), "pending")
            await kafka_log.publish([member(tenant, "D1", "GBP", d1, email_first)])

            async def d1_sent() -> bool:
                done = await statuses()
                return all(done.get(i) == "sent" for i in d1)

            await eventually(d1_sent)
            contacts: list[Any] = []

            async def outcomes_published() -> bool:
                # a delivery's status is written with its outcome in an outbox; the relay
                # publishes the outcome a moment later
                contacts[:] = [decode_event(r.value) for r in await kafka_log.read_all(CONTACTS.name)]
                published = {e.data.command_id for e in contacts if e.tenantid == tenant}
                return published >= {*d1, d2[0], *d3}

            await eventually(outcomes_published)

    (mail,) = [m for m in mailbox.messages if m["To"] == "d1@example.com"]
    assert mail["Message-ID"] == f"<{d1[0]}@arrears>"
    body = mail.get_content()
    for amount in ("€2,500.00", "$1,800.00", "£900.00"):
        assert amount in body, body

    (to_d2,) = [m for m in mailbox.messages if m["To"] == "d2@example.com"]
    body = " ".join(to_d2.get_content().split())
    assert "D2-EUR-1" in body and "2 500,00" in body
    assert "D2-USD-1" not in body and "1 800,00" not in body, "the cancelled member is left out"
    assert [m for m in mailbox.messages if m["To"] == "d4@example.com"] == [], "all cancelled: nothing"

    letters = sorted((tmp_path / "letters" / tenant).glob("*.pdf"))
    assert [p.name for p in letters] == [f"{d3[0]}.pdf"]
    reader = PdfReader(io.BytesIO(letters[0].read_bytes()))
    text = " ".join("".join(page.extract_text() for page in reader.pages).split())
    assert "D3-EUR-1" in text and "D3-USD-1" in text and "€2,500.00" in text and "US$1,800.00" in text

    outcomes: dict[str, Any] = {
        e.data.command_id: e.data for e in contacts if e.tenantid == tenant and e.data.outcome != "deferred"
    }
    assert {i: outcomes[i].outcome for i in d1} == dict.fromkeys(d1, "delivered")
    assert {outcomes[i].reference for i in d1} == {f"<{d1[0]}@arrears>"}
    assert outcomes[d2[0]].outcome == "delivered" and d2[1] not in outcomes
    assert {i: outcomes[i].outcome for i in d3} == dict.fromkeys(d3, "delivered")
    assert {outcomes[i].reference for i in d3} == {str(letters[0])}
    assert not set(d4) & set(outcomes)


async def test_a_bundle_taken_over_after_its_lease_is_sent_once(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    # Three bundles at a second per e-mail against a lease of 1.5 s, and two more notifiers looking
    # for expired claims: a bundle is claimed, renewed and finished as one, so whichever notifier
    # sends it, each goes once.
    mailbox = SlowMailbox()
    with smtp_server(mailbox) as smtp_port:
        settings = settings_for(
            await new_database(),
            kafka,
            smtp_port=smtp_port,
            send_windows="ignore",
            letters_dir=tmp_path / "letters",
            send_lease_s=1.5,
        )
        async with open_stack(settings, ["notifier"], prepare=from_test_start) as stack:
            debtors = [f"D{n}" for n in range(3)]
            await kafka_log.publish([profile(tenant, d, email=f"{d.lower()}@example.com") for d in debtors])
            bundles = {d: ids(tenant, d, "EUR", "USD") for d in debtors}
            await kafka_log.publish(
                [member(tenant, d, c, bundles[d], ["email"]) for d in debtors for c in ("EUR", "USD")]
            )
            stopping = asyncio.Event()
            others = [Sender(stack.sessions, settings, poll_interval_s=0.05) for _ in range(2)]
            running = [asyncio.create_task(s.run(stopping)) for s in others]

            async def all_sent() -> bool:
                async with stack.sessions() as session:
                    statuses = await session.scalars(
                        select(store.deliveries.c.status).where(store.deliveries.c.tenant_id == tenant)
                    )
                    return sorted(statuses) == ["sent"] * 6

            try:
                await eventually(all_sent)
                await asyncio.sleep(1.5)  # a send taken over late would arrive by now
            finally:
                stopping.set()
                await asyncio.gather(*running)
    assert {d: len(mailbox.with_id(b[0])) for d, b in bundles.items()} == dict.fromkeys(debtors, 1)
    assert len(mailbox.messages) == 3
