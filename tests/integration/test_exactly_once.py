"""No loss, no double application: a ledger killed mid-batch and restarted, and a projection dropped
and rebuilt from the topics, both end exactly where one clean run ends."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from contracts.topics import CLOCK, DEBTORS, JOURNAL
from services.ledger.state_codec import decode_ledger
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from tests.infra.kafka_broker import KafkaBroker, free_ports
from tests.integration.conftest import ledger_stack, settings_for
from tests.integration.events import invoice, payment, reversal

DEBTORS_COUNT = 300
EVENTS_PER_DEBTOR = 40


def portfolio(tenant: str, seed: int = 7) -> list[dict[str, Any]]:
    """Invoices, unallocated and allocated payments and chargebacks: every allocation rule in play."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for d in range(DEBTORS_COUNT):
        debtor = f"D{d:04d}"
        invoices: list[str] = []
        payments: list[str] = []
        for n in range(EVENTS_PER_DEBTOR):
            day = f"2026-{1 + n // 10:02d}-{1 + (n * 3) % 28:02d}"
            roll = rng.random()
            if roll < 0.5 or not invoices:
                number = f"{debtor}-I{n}"
                invoices.append(number)
                events.append(invoice(tenant, debtor, number, day, day, rng.randint(100, 90_000)))
            elif roll < 0.9:
                pid = f"{debtor}-P{n}"
                payments.append(pid)
                target = rng.choice(invoices) if roll < 0.6 else None
                events.append(payment(tenant, debtor, pid, day, rng.randint(100, 60_000), allocate_to=target))
            elif payments:
                events.append(reversal(tenant, debtor, payments.pop(rng.randrange(len(payments))), day))
    return events


async def publish(kafka_log: KafkaLog, events: list[dict[str, Any]]) -> None:
    messages = [
        Message(JOURNAL.name, f"{e['tenantid']}:{e['debtorid']}".encode(), orjson.dumps(e)) for e in events
    ]
    for start in range(0, len(messages), 2_000):
        await kafka_log.publish(messages[start : start + 2_000])


async def projection_of(database_url: str, tenant: str) -> dict[str, list[Any]]:
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url))
    try:
        return {
            # States as the ledger reads them: where a batch boundary put an item (working part
            # or archive) depends on the batches, what the state holds does not.
            "ledgers": [
                (r["debtor_id"], decode_ledger(r["state"], r["archive"]))
                for r in await connection.fetch(
                    "SELECT debtor_id, state, archive FROM ledger.debtor_ledgers"
                    " WHERE tenant_id = $1 ORDER BY debtor_id",
                    tenant,
                )
            ],
            "movements": [
                tuple(r)
                for r in await connection.fetch(
                    "SELECT debtor_id, invoice_id, currency, due_date, delta, effective_date, recorded_at"
                    " FROM ledger.balance_movements WHERE tenant_id = $1 ORDER BY 1, 2, 6, 5, 7",
                    tenant,
                )
            ],
            "aging": [
                tuple(r)
                for r in await connection.fetch(
                    "SELECT currency, due_date, effective_date, amount FROM ledger.aging_totals"
                    " WHERE tenant_id = $1 AND amount <> 0 ORDER BY 1, 2, 3",
                    tenant,
                )
            ],
        }
    finally:
        await connection.close()


async def applied_offsets(database_url: str) -> int:
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url))
    try:
        exists = await connection.fetchval("SELECT to_regclass('ledger.consumer_offsets') IS NOT NULL")
        return (
            int(
                await connection.fetchval("SELECT coalesce(sum(next_offset), 0) FROM ledger.consumer_offsets")
            )
            if exists
            else 0
        )
    finally:
        await connection.close()


async def log_end(kafka_log: KafkaLog) -> int:
    consumer = kafka_log.consumer("end-probe", [JOURNAL.name, DEBTORS.name, CLOCK.name])
    started = asyncio.Event()

    async def assigned(_: list[tuple[str, int]]) -> None:
        started.set()

    async def revoked(_: list[tuple[str, int]]) -> None:
        return None

    await consumer.start(assigned, revoked)
    try:
        while not started.is_set():
            await consumer.fetch(1, 100)
        return sum((await consumer.end_offsets()).values())
    finally:
        await consumer.stop()


def start_ledger_process(database_url: str, kafka: KafkaBroker) -> subprocess.Popen[bytes]:
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "ARREARS_DATABASE_URL": database_url,
        "ARREARS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ARREARS_HTTP_PORT": str(port),
        "ARREARS_CONSUMER_MAX_RECORDS": "300",
        "ARREARS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "ledger"], env=env)


async def test_killed_three_times_mid_run_ends_exactly_like_a_clean_run(
    kafka: KafkaBroker, kafka_log: KafkaLog, new_database: Callable[[], Awaitable[str]], tenant: str
) -> None:
    await publish(kafka_log, portfolio(tenant))
    target = await log_end(kafka_log)
    crashed_db = await new_database()

    for kill_at in (0.2, 0.45, 0.7):
        process = start_ledger_process(crashed_db, kafka)
        try:
            while await applied_offsets(crashed_db) < kill_at * target:
                assert process.poll() is None, "the ledger process died by itself"
                await asyncio.sleep(0.01)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    process = start_ledger_process(crashed_db, kafka)
    try:
        while await applied_offsets(crashed_db) < target:
            assert process.poll() is None
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)

    clean_db = await new_database()
    async with ledger_stack(settings_for(clean_db, kafka), tenant) as clean:
        await clean.caught_up()
    clean_projection = await projection_of(clean_db, tenant)
    assert len(clean_projection["ledgers"]) == DEBTORS_COUNT
    assert await projection_of(crashed_db, tenant) == clean_projection


async def test_dropping_the_projection_and_replaying_rebuilds_it_identically(
    kafka: KafkaBroker, kafka_log: KafkaLog, new_database: Callable[[], Awaitable[str]], tenant: str
) -> None:
    await publish(kafka_log, portfolio(tenant, seed=11)[:3_000])
    database = await new_database()
    async with ledger_stack(settings_for(database, kafka), tenant) as first:
        await first.caught_up()
    before = await projection_of(database, tenant)

    connection = await asyncpg.connect(sqlalchemy_to_libpq(database))
    await connection.execute("DROP SCHEMA ledger CASCADE")
    await connection.close()
    async with ledger_stack(settings_for(database, kafka), tenant) as rebuilt:
        await rebuilt.caught_up()
    assert before["ledgers"], "nothing was projected"
    assert await projection_of(database, tenant) == before
