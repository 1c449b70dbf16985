"""Dunning and the notifier killed mid-run and restarted send every e-mail a clean run sends, and none
twice: same recipients, same subjects, same contents."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller

from contracts.policy import PolicyPublished
from contracts.topics import CASES, CLOCK, COMMANDS, CONTACTS, DEBTORS, POLICIES, RECEIVABLES
from services.dunning.api import policy_message
from services.dunning.main import DunningService
from services.dunning.policies import default_policy
from services.notifier.main import NotifierService
from services.runtime import clock
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_log import KafkaLog
from services.runtime.process import open_resources
from services.runtime.service import Service
from services.runtime.settings import Settings
from tests.infra.kafka_broker import KafkaBroker, free_ports
from tests.integration.collections_stack import collections_stack
from tests.integration.conftest import (
    LedgerStack,
    begin_at_test_start,
    ledger_stack,
    log_end_offsets,
    settings_for,
)
from tests.integration.events import envelope, invoice, payment

FIRST, LAST = dt.date(2026, 1, 1), dt.date(2026, 2, 25)
KILLS = {
    dt.date(2026, 1, 12): "dunning",
    dt.date(2026, 1, 20): "notifier",
    dt.date(2026, 1, 28): "dunning",
    dt.date(2026, 2, 5): "notifier",
    dt.date(2026, 2, 12): "dunning",
}
DUNNING_TOPICS = [RECEIVABLES.name, CONTACTS.name, CLOCK.name, DEBTORS.name, POLICIES.name]
NOTIFIER_TOPICS = [COMMANDS.name, CASES.name, RECEIVABLES.name, CONTACTS.name, DEBTORS.name]
Mail = tuple[str, str, str]


def scenario(tenant: str) -> dict[dt.date, list[dict[str, Any]]]:
    """Twelve debtors, invoices falling due through January, some paid early, some late, some never."""
    days: dict[dt.date, list[dict[str, Any]]] = {}
    for n in range(12):
        debtor = f"D{n:02d}"
        issued = FIRST + dt.timedelta(days=n % 4)
        due = issued + dt.timedelta(days=10 + n)
        days.setdefault(issued, []).extend(
            [
                envelope(
                    "ar.debtor.registered.v1",
                    tenant,
                    debtor,
                    f"reg-{debtor}",
                    {"name": f"Debtor {debtor}", "email": f"{debtor.lower()}@{tenant}.example"},
                ),
                invoice(
                    tenant, debtor, f"{debtor}-1", issued.isoformat(), due.isoformat(), 40_000 + 10_000 * n
                ),
                invoice(
                    tenant,
                    debtor,
                    f"{debtor}-2",
                    issued.isoformat(),
                    (due + dt.timedelta(days=5)).isoformat(),
                    25_000,
                ),
            ]
        )
        if n % 3 != 2:
            paid_on = due + dt.timedelta(days=(n * 7) % 30 - 5)
            days.setdefault(paid_on, []).append(
                payment(tenant, debtor, f"{debtor}-P", paid_on.isoformat(), 40_000 + 10_000 * n)
            )
    return days


def normalised(messages: list[email.message.EmailMessage], tenant: str) -> list[Mail]:
    """Each e-mail of the tenant as (debtor, subject, body), the tenant's name taken out."""
    return sorted(
        (str(m["To"]).split("@")[0], str(m["Subject"]), m.get_content().replace(tenant, "T"))
        for m in messages
        if str(m["To"]).endswith(f"@{tenant}.example")
    )


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        return "250 OK"


async def clean_run(kafka: KafkaBroker, database_url: str, tenant: str, letters: Path) -> list[Mail]:
    days = scenario(tenant)
    async with collections_stack(settings_for(database_url, kafka), tenant, letters) as stack:
        await stack.publish_policy(FIRST)
        day = FIRST
        while day <= LAST:
            if day in days:
                async with stack.client("ledger", "erp") as api:
                    assert (await api.post("/v1/events", json=days[day])).status_code == 202
            await stack.start_day(day)
            day += dt.timedelta(days=1)
        return normalised(stack.received.emails, tenant)


class Services:
    """Dunning and the notifier as processes of their own, to be killed with SIGKILL."""

    def __init__(self, kafka: KafkaBroker, database_url: str, smtp_port: int, letters: Path) -> None:
        self.env = {
            **os.environ,
            "ARREARS_DATABASE_URL": database_url,
            "ARREARS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "ARREARS_SMTP_PORT": str(smtp_port),
            "ARREARS_SEND_WINDOWS": "ignore",
            "ARREARS_LETTERS_DIR": str(letters),
            "ARREARS_CONSUMER_FETCH_TIMEOUT_MS": "50",
            "ARREARS_OUTBOX_POLL_MS": "20",
            "ARREARS_LOG_LEVEL": "WARNING",
            "ARREARS_SEND_LEASE_S": "3",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        (port,) = free_ports(1)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name],
            env={**self.env, "ARREARS_HTTP_PORT": str(port)},
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    def stop(self) -> None:
        for name in list(self.processes):
            process = self.processes.pop(name)
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def end_offsets(kafka: KafkaBroker, topics: list[str]) -> int:
    ends = await log_end_offsets(kafka.bootstrap_servers)
    return sum(end for (topic, _), end in ends.items() if topic in topics)


async def settled(
    connection: asyncpg.Connection, kafka: KafkaBroker, ledger: LedgerStack, timeout_s: float = 120
) -> None:
    """Everything published is applied by dunning and the notifier, and nothing waits to be sent."""
    await ledger.caught_up()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        waiting = await connection.fetchval(
            "SELECT (SELECT count(*) FROM ledger.outbox) + (SELECT count(*) FROM dunning.outbox)"
            " + (SELECT count(*) FROM notifier.outbox)"
            " + (SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'sending'))"
        )
        dunning = await connection.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM dunning.consumer_offsets WHERE topic = any($1)",
            DUNNING_TOPICS,
        )
        notifier = await connection.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM notifier.consumer_offsets WHERE topic = any($1)",
            NOTIFIER_TOPICS,
        )
        if (
            waiting == 0
            and dunning == await end_offsets(kafka, DUNNING_TOPICS)
            and notifier == await end_offsets(kafka, NOTIFIER_TOPICS)
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("dunning and the notifier did not settle")
        await asyncio.sleep(0.1)


async def begin_services_at_test_start(settings: Settings) -> None:
    """Migrate dunning's and the notifier's schemas and start their consumers where this test began."""
    async with open_resources(settings) as resources:
        services: list[Service] = [DunningService(resources), NotifierService(resources)]
        for service in services:
            await service.migrate()
        await begin_at_test_start(resources, services)


async def migrated(connection: asyncpg.Connection, timeout_s: float = 60) -> None:
    """Both processes have created their schemas."""
    for _ in range(int(timeout_s * 10)):
        tables = await connection.fetchval(
            "SELECT to_regclass('notifier.deliveries') IS NOT NULL"
            " AND to_regclass('dunning.cases') IS NOT NULL"
        )
        if tables:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("dunning and the notifier did not migrate")


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    (port,) = free_ports(1)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


async def test_killing_dunning_and_the_notifier_mid_run_sends_what_a_clean_run_sends_once(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    expected = await clean_run(kafka, await new_database(), f"{tenant}c", tmp_path / "clean")
    assert len(expected) >= 12, "the scenario sends reminders"

    database_url = await new_database()
    days = scenario(tenant)
    async with (
        smtp_server() as (mailbox, smtp_port),
        ledger_stack(settings_for(database_url, kafka), tenant) as ledger,
    ):
        await begin_services_at_test_start(settings_for(database_url, kafka))
        services = Services(kafka, database_url, smtp_port, tmp_path / "killed")
        for name in ("dunning", "notifier"):
            services.start(name)
        connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url))
        try:
            policy = PolicyPublished(version=1, effective_from=FIRST, document=default_policy())
            await kafka_log.publish([policy_message(tenant, policy, dt.datetime.now(dt.UTC))])
            await migrated(connection)
            day = FIRST
            while day <= LAST:
                if day in days:
                    async with ledger.client() as api:
                        assert (await api.post("/v1/events", json=days[day])).status_code == 202
                await settled(connection, kafka, ledger)
                await kafka_log.publish([clock.day_started(tenant, day, dt.datetime.now(dt.UTC))])
                if day in KILLS:
                    await asyncio.sleep(0.3)  # mid-batch: the tick is being applied, commands being sent
                    services.kill(KILLS[day])
                    services.start(KILLS[day])
                await settled(connection, kafka, ledger)
                day += dt.timedelta(days=1)
        finally:
            await connection.close()
            services.stop()

    # A notifier killed after the SMTP server took an e-mail and before it recorded the send sends it
    # again after the lease: the same message under the same Message-ID, which the receiving side
    # shows once (no SMTP exchange can tell the sender whether the last one got through). So a
    # Message-ID may arrive twice, never with two different e-mails; and each arrives at least once.
    copies: dict[str, set[Mail]] = defaultdict(set)
    for message in mailbox.messages:
        for mail in normalised([message], tenant):
            copies[str(message["Message-ID"])].add(mail)
    assert [i for i, mails in copies.items() if len(mails) > 1] == [], "one Message-ID, one e-mail"
    sent = sorted(mail for mails in copies.values() for mail in mails)
    assert sent == expected, "the same e-mails as the clean run: none lost, none added"
