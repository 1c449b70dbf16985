"""The notifier on a real broker and database, sending to a real SMTP server and a local HTTP gateway."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from sqlalchemy import select

from contracts.collections import CollectionCommand, CommandItem
from contracts.journal import DebtorProfile
from contracts.money import Money
from contracts.receivables import ReceivableBalance
from contracts.registry import decode_event, encode_event, make_event
from contracts.topics import CONTACTS
from services.notifier import store
from services.notifier.channels import signature
from services.notifier.sender import Sender
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from services.stack import open_stack, serving
from tests.infra.kafka_broker import KafkaBroker, free_ports
from tests.integration.conftest import from_test_start, settings_for

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@dataclass
class Mailbox:
    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def with_id(self, command_id: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["Message-ID"] == f"<{command_id}@arrears>"]


@contextlib.contextmanager
def smtp_server(handler: Mailbox) -> Iterator[int]:
    """An SMTP server on a free loopback port that hands every message to `handler`; its port."""
    (port,) = free_ports(1)
    smtp = Controller(handler, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        yield port
    finally:
        smtp.stop()


@dataclass
class Gateway:
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(path: str, request: Request) -> dict[str, str]:
            self.requests.append((path, dict(request.headers), await request.body()))
            return {"status": "queued"}

        return app


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


def record(event: Any) -> Message:
    return Message(event.data.TOPIC, event.key.encode(), encode_event(event))


def profile(tenant: str, debtor: str, **fields: Any) -> Message:
    data = DebtorProfile(name=f"Debtor {debtor}", **fields)
    return record(
        make_event(
            "ar.debtor.registered.v1",
            data,
            event_id=f"reg-{debtor}",
            tenant_id=tenant,
            debtor_id=debtor,
            source="test",
            time=NOW,
        )
    )


def balance(tenant: str, debtor: str, invoice: str, outstanding: int, cause: str) -> Message:
    data = ReceivableBalance(
        invoice_id=invoice,
        issue_date=dt.date(2026, 1, 1),
        due_date=dt.date(2026, 1, 31),
        amount=eur(50_000),
        outstanding=eur(outstanding),
        change=eur(outstanding - 50_000),
        status="open",
        effective_date=dt.date(2026, 3, 1),
        cause_type="ar.payment.received.v1",
        cause_id=cause,
    )
    return record(
        make_event(
            "ar.receivable.changed.v1",
            data,
            event_id=f"bal-{cause}",
            tenant_id=tenant,
            debtor_id=debtor,
            source="test",
            time=NOW,
        )
    )


def command(
    tenant: str, debtor: str, command_id: str, action: str, channels: list[str], **more: Any
) -> Message:
    item = CommandItem(
        invoice_id=f"{debtor}-INV-1",
        issue_date=dt.date(2026, 1, 1),
        due_date=dt.date(2026, 1, 31),
        outstanding=eur(50_000),
        days_past_due=30,
        penalty=eur(250),
    )
    data = CollectionCommand.model_validate(
        {
            "command_id": command_id,
            "case_id": f"{debtor}:EUR",
            "action": action,
            "step": "claim",
            "channels": channels,
            "template": "default",
            "business_date": dt.date(2026, 3, 2),
            "case_version": 1,
            "items": [item],
            "total": eur(50_000),
            "policy_version": 1,
            **more,
        }
    )
    return record(
        make_event(
            f"collections.command.{action}.v1",
            data,
            event_id=command_id,
            tenant_id=tenant,
            debtor_id=debtor,
            source="test",
            time=NOW,
        )
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_commands_are_sent_once_through_their_channel_unless_the_last_look_says_no(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    mailbox, gateway = Mailbox(), Gateway()
    with smtp_server(mailbox) as smtp_port:
        async with serving(gateway.app()) as gateway_url:
            settings = settings_for(
                await new_database(),
                kafka,
                smtp_port=smtp_port,
                send_windows="ignore",
                letters_dir=tmp_path / "letters",
                webhook_urls={"agency": f"{gateway_url}/agency"},
                webhook_secret="s3cret",
            )
            async with open_stack(settings, ["notifier"], prepare=from_test_start) as stack:
                await run_scenario(kafka_log, stack.sessions, tenant, mailbox, gateway, tmp_path)


async def run_scenario(
    kafka_log: KafkaLog, sessions: Any, tenant: str, mailbox: Mailbox, gateway: Gateway, tmp_path: Path
) -> None:
    await kafka_log.publish(
        [
            profile(tenant, "D1", email="d1@example.com", language="ru"),
            profile(tenant, "D2", email="d2@example.com"),
            profile(tenant, "D3", postal_address=["1 Main Street", "Springfield"], language="zh"),
            profile(tenant, "D4", email="d4@example.com"),  # no postal address
        ]
    )
    # D2 pays part of its invoice before the reminder decided earlier goes out.
    await kafka_log.publish([balance(tenant, "D2", "D2-INV-1", 20_000, "pay-d2")])

    async def paid_seen() -> bool:
        async with sessions() as session:
            return bool(
                await session.scalar(
                    select(store.item_balances.c.outstanding).where(
                        store.item_balances.c.tenant_id == tenant,
                        store.item_balances.c.invoice_id == "D2-INV-1",
                    )
                )
            )

    await eventually(paid_seen)
    reminder = command(tenant, "D1", f"{tenant}-c1", "send_reminder", ["email", "letter"])
    await kafka_log.publish(
        [
            reminder,
            reminder,  # delivered twice
            command(tenant, "D2", f"{tenant}-c2", "send_reminder", ["email"]),
            command(
                tenant,
                "D3",
                f"{tenant}-c3",
                "claim_letter",
                ["email", "letter"],
                deadline=dt.date(2026, 3, 16),
                penalty=eur(250),
            ),
            command(tenant, "D1", f"{tenant}-c4", "place_with_agency", ["webhook"], agency_id="A1"),
            # D4 has no postal address: a letter-first claim goes by e-mail, a letter-only notice
            # becomes a task to find the address.
            command(
                tenant,
                "D4",
                f"{tenant}-c5",
                "claim_letter",
                ["letter", "email"],
                deadline=dt.date(2026, 3, 16),
            ),
            command(tenant, "D4", f"{tenant}-c6", "formal_notice", ["letter"]),
        ]
    )

    async def all_done() -> bool:
        async with sessions() as session:
            statuses = (
                (
                    await session.execute(
                        select(store.deliveries.c.status).where(store.deliveries.c.tenant_id == tenant)
                    )
                )
                .scalars()
                .all()
            )
        return len(statuses) == 6 and all(s in ("sent", "skipped", "failed") for s in statuses)

    await eventually(all_done)

    sent_to_d1 = mailbox.with_id(f"{tenant}-c1")
    assert len(sent_to_d1) == 1, "a command delivered twice is sent once"
    assert sent_to_d1[0]["To"] == "d1@example.com"
    body = sent_to_d1[0].get_content()
    assert "D1-INV-1" in body and "500,00" in body and "Уважаемый" in body
    assert mailbox.with_id(f"{tenant}-c2") == [], "paid since decided: the last look drops it"
    letters = list((tmp_path / "letters" / tenant).glob("*.pdf"))
    assert [p.name for p in letters] == [f"{tenant}-c3.pdf"], "D3 has no email address: a letter instead"
    assert letters[0].read_bytes().startswith(b"%PDF-")
    (path, headers, payload) = next(
        r for r in gateway.requests if r[1].get("idempotency-key") == f"{tenant}-c4"
    )
    assert path == "agency"
    assert headers["x-arrears-signature"] == signature("s3cret", payload)
    assert orjson.loads(payload)["data"]["agency_id"] == "A1"
    assert [m["To"] for m in mailbox.with_id(f"{tenant}-c5")] == ["d4@example.com"]
    async with sessions() as session:
        task = (
            await session.execute(
                select(store.tasks.c.kind, store.tasks.c.script).where(
                    store.tasks.c.tenant_id == tenant, store.tasks.c.command_id == f"{tenant}-c6"
                )
            )
        ).one()
        failed = await session.scalar(
            select(store.deliveries.c.reason).where(
                store.deliveries.c.tenant_id == tenant, store.deliveries.c.command_id == f"{tenant}-c6"
            )
        )
    assert task.kind == "find_address" and "postal address of Debtor D4" in task.script
    assert failed is not None and "no postal address" in failed

    async def contacts() -> dict[str, str]:
        records = [decode_event(r.value) for r in await kafka_log.read_all(CONTACTS.name)]
        return {e.data.command_id: e.type for e in records if e.tenantid == tenant}

    async def reported() -> bool:
        return len(await contacts()) == 6

    await eventually(reported)
    assert await contacts() == {
        f"{tenant}-c1": "ar.contact.delivered.v1",
        f"{tenant}-c2": "ar.contact.skipped.v1",
        f"{tenant}-c3": "ar.contact.delivered.v1",
        f"{tenant}-c4": "ar.contact.delivered.v1",
        f"{tenant}-c5": "ar.contact.delivered.v1",
        f"{tenant}-c6": "ar.contact.failed.v1",
    }


@dataclass
class SlowMailbox(Mailbox):
    """An SMTP relay that takes a second per message."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(1.0)
        return await super().handle_DATA(server, session, envelope)


async def test_a_batch_that_outlasts_the_send_lease_sends_each_email_once(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    # Four e-mails at a second each against a lease of 3 s: whichever notifier claims them first
    # still holds the batch when the lease of its last ones runs out, and two more notifiers are
    # looking for expired claims. Each claim is renewed right before its send, so a delivery another
    # notifier took over is left to it instead of being sent by both. (One send must fit in the lease
    # with room for a machine at half speed: a send longer than the lease is sent again, by design.)
    mailbox = SlowMailbox()
    with smtp_server(mailbox) as smtp_port:
        settings = settings_for(
            await new_database(),
            kafka,
            smtp_port=smtp_port,
            send_windows="ignore",
            letters_dir=tmp_path / "letters",
            send_lease_s=3.0,
        )
        async with open_stack(settings, ["notifier"], prepare=from_test_start) as stack:
            debtors = [f"D{n}" for n in range(4)]
            await kafka_log.publish([profile(tenant, d, email=f"{d.lower()}@example.com") for d in debtors])
            ids = [f"{tenant}-lease-{d}" for d in debtors]
            await kafka_log.publish(
                [command(tenant, d, i, "send_reminder", ["email"]) for d, i in zip(debtors, ids, strict=True)]
            )
            stopping = asyncio.Event()
            others = [Sender(stack.sessions, settings, poll_interval_s=0.05) for _ in range(2)]
            running = [asyncio.create_task(s.run(stopping)) for s in others]

            async def all_sent() -> bool:
                async with stack.sessions() as session:
                    statuses = await session.scalars(
                        select(store.deliveries.c.status).where(store.deliveries.c.tenant_id == tenant)
                    )
                    return sorted(statuses) == ["sent"] * len(ids)

            try:
                await eventually(all_sent)
                await asyncio.sleep(3.0)  # a send taken over late would arrive by now
            finally:
                stopping.set()
                await asyncio.gather(*running)
    assert {i: len(mailbox.with_id(i)) for i in ids} == dict.fromkeys(ids, 1)


def acme(iban: str) -> dict[str, Any]:
    return {
        "legal_name": "Acme Industrial Supplies GmbH",
        "address": ["Hauptstraße 1", "10115 Berlin"],
        "bank_account": {"iban": iban, "bic": "COBADEFFXXX"},
        "payment_reference": "AR-{debtor_id}",
        "signatory": {"name": "Anna Schmidt", "title": "Head of Accounts Receivable"},
    }


async def test_the_creditor_profile_is_versioned_and_a_message_carries_the_version_in_force(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as smtp_port:
        settings = settings_for(
            await new_database(), kafka, smtp_port=smtp_port, send_windows="ignore", letters_dir=tmp_path
        )
        async with open_stack(settings, ["notifier"], prepare=from_test_start) as stack:
            keys = {
                role: await stack.create_key(tenant, role, role, on=["notifier"])
                for role in ("operations", "collector")
            }
            transport = httpx.ASGITransport(app=stack.app("notifier"))
            async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as api:
                ops, collector = {"X-API-Key": keys["operations"]}, {"X-API-Key": keys["collector"]}
                assert (await api.get("/v1/tenant-profile", headers=ops)).status_code == 404
                first = {"effective_from": "2026-01-01", "profile": acme("DE89370400440532013000")}
                second = {"effective_from": "2026-03-01", "profile": acme("DE02120300000000202051")}
                assert (
                    await api.put("/v1/tenant-profile/versions/1", json=first, headers=collector)
                ).status_code == 403
                assert (
                    await api.put("/v1/tenant-profile/versions/1", json=first, headers=ops)
                ).status_code == 201
                assert (
                    await api.put("/v1/tenant-profile/versions/1", json=first, headers=ops)
                ).status_code == 200
                assert (
                    await api.put("/v1/tenant-profile/versions/1", json=second, headers=ops)
                ).status_code == 409
                assert (
                    await api.put("/v1/tenant-profile/versions/2", json=second, headers=ops)
                ).status_code == 201
                bad = {
                    "effective_from": "2026-03-01",
                    "profile": {**acme("not an iban"), "payment_reference": "{x}"},
                }
                refused = await api.put("/v1/tenant-profile/versions/3", json=bad, headers=ops)
                assert refused.status_code == 422
                assert {p["field"] for p in refused.json()["detail"]} == {
                    "profile.bank_account.iban",
                    "profile.payment_reference",
                }
                in_february = await api.get(
                    "/v1/tenant-profile", params={"as_of": "2026-02-15"}, headers=collector
                )
                assert in_february.json()["version"] == 1
                in_march = await api.get(
                    "/v1/tenant-profile", params={"as_of": "2026-03-02"}, headers=collector
                )
                assert in_march.json()["profile"]["bank_account"]["iban"] == "DE02120300000000202051"

            await kafka_log.publish([profile(tenant, "D1", email="d1@example.com")])
            reminder = command(
                tenant, "D1", f"{tenant}-profile-c1", "send_reminder", ["email"]
            )  # on 2026-03-02
            await kafka_log.publish([reminder])
            await eventually(lambda: _received(mailbox, f"{tenant}-profile-c1"))
    (mail,) = mailbox.with_id(f"{tenant}-profile-c1")
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "DE02120300000000202051" in text and "DE89370400440532013000" not in text
    assert "AR-D1" in text and "Anna Schmidt" in text and "Acme Industrial Supplies GmbH" in text


async def _received(mailbox: Mailbox, command_id: str) -> bool:
    return bool(mailbox.with_id(command_id))
