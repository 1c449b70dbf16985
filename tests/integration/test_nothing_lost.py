"""Nothing the ledger accepted is ever lost, with real processes and real faults: `kill -9` of the
ledger during continuous posting, a broker outage, a PostgreSQL outage, and four ledgers in one
consumer group with one of them killed.

An ERP's view throughout: an event id answered 202 (`accepted`, or `duplicate` on a retry) must be on
its debtor's statement exactly once, and the portfolio aging must hold exactly those invoices. The
poster retries every batch until it is answered 202. Each test runs `arrears serve ledger` as
subprocesses and kills them, whatever happens, when it ends.

The module has a broker of its own (the broker-outage test stops it; stopping the session's broker
would break the other tests), and the PostgreSQL-outage test a PostgreSQL server of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from contracts.topics import CONTACTS
from services.runtime.embedded_postgres import start_embedded_postgres, stop_embedded_postgres
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from tests.infra.kafka_broker import KafkaBroker, start_kafka_broker
from tests.infra.postgres_server import PostgresServer, start_postgres
from tests.integration.fault_processes import (
    Event,
    Findings,
    InvoiceBook,
    Ledgers,
    Poster,
    ReadinessProbe,
    Steps,
    check_applied,
    create_database,
    debtor_event,
    kafka_sh,
    now,
    readyz,
    reset_topics,
    wait_caught_up,
    wait_ready,
)

pytestmark = pytest.mark.integration

CATCH_UP_S = 40.0


@pytest.fixture(scope="module")
def fault_broker() -> Iterator[KafkaBroker]:
    """A broker for this module alone: the outage test stops and starts it."""
    broker = start_kafka_broker()
    yield broker
    broker.stop()


@pytest.fixture
async def broker(fault_broker: KafkaBroker) -> KafkaBroker:
    """The module's broker with every topic empty: a test's ledgers (on a fresh database) do not
    replay what the earlier tests posted."""
    await reset_topics(fault_broker.bootstrap_servers)
    return fault_broker


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the outage test alone (embedded: it can be stopped and started)."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL names an external PostgreSQL: the test cannot stop it")
    server = start_postgres()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def posting(poster: Poster) -> AsyncIterator[asyncio.Task[None]]:
    """The poster running in the background; stopped (and drained) when the block ends."""
    task = asyncio.create_task(poster.run())
    try:
        yield task
    finally:
        poster.stop()
        await asyncio.wait_for(task, poster.drain_s + poster.request_timeout_s + 10)


def report(findings: Findings, *extra: str) -> str:
    return "\n".join([findings.summary(), *findings.problems(), *extra])


# --- 1. kill -9 -------------------------------------------------------------------------------------

KILL_AFTER_S = (3.0, 4.0, 3.5, 4.0)
BURST_S = 1.0
"""Before each kill (and each outage) the ERP posts as fast as the ledger answers for a second, so
that many requests are in flight, claimed or publishing, when the process or the server goes."""
RATE = 400.0
"""Events per second the ERP posts: about what the ledger's consumer applies on a small machine,
so that it can catch up within the test's time."""


async def test_kill_9_of_the_ledger_during_continuous_posting_loses_nothing(
    broker: KafkaBroker,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    step = Steps()
    database_url = await new_database()
    book = InvoiceBook(tenant, debtors=200)
    async with Ledgers(database_url, broker.bootstrap_servers, tmp_path) as ledgers:
        key = await ledgers.create_key(tenant)
        await ledgers.start()
        step("ledger up")
        poster = Poster(ledgers.urls, key, book.batches(200, 40_000), concurrency=4, rate=RATE)
        async with posting(poster):
            for pause in KILL_AFTER_S:
                await asyncio.sleep(pause - BURST_S)
                poster.rate = None
                await asyncio.sleep(BURST_S)
                ledgers.kill()
                poster.rate = RATE
                step(f"kill -9 ({len(poster.acknowledged)} events answered 202 so far)")
                await ledgers.restart()
                step("restarted")
            await asyncio.sleep(3)
        step(f"posting stopped: {len(poster.acknowledged)} events answered 202")
        process = ledgers.processes[0]
        lag = await wait_caught_up(database_url, broker.bootstrap_servers, CATCH_UP_S)
        step(f"backlog {lag}")
        findings = await check_applied(
            ledgers.urls, key, book, poster, database_url, broker.bootstrap_servers, lag
        )
        step("checked")

    failed_posts = sum(n for outcome, n in poster.outcomes().items() if outcome != "202")
    assert process.kills == len(KILL_AFTER_S) and failed_posts > 0, "the kills hit the posting"
    assert findings.acknowledged >= 2_000, findings.summary()
    assert not findings.problems(), report(
        findings, f"{process.kills} kills, POST outcomes {dict(poster.outcomes())}", str(step)
    )


# --- 2. broker outage -------------------------------------------------------------------------------

BROKER_OUTAGE_S = 10.0


async def test_broker_outage_loses_nothing_and_ingest_recovers_without_a_restart(
    broker: KafkaBroker,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    step = Steps()
    database_url = await new_database()
    book = InvoiceBook(tenant, debtors=200)
    broker_down = False
    try:
        async with Ledgers(database_url, broker.bootstrap_servers, tmp_path) as ledgers:
            key = await ledgers.create_key(tenant)
            await ledgers.start()
            process = ledgers.processes[0]
            # Slower: the broker takes a while to come back, and all that time the posting goes on.
            poster = Poster(ledgers.urls, key, book.batches(200, 30_000), concurrency=3, rate=RATE * 0.75)
            probe = ReadinessProbe(ledgers.urls)
            probing = asyncio.create_task(probe.run())
            try:
                async with posting(poster):
                    await asyncio.sleep(3)
                    poster.rate = None
                    await asyncio.sleep(BURST_S)
                    poster.rate = RATE * 0.75
                    step(f"stopping the broker ({len(poster.acknowledged)} events answered 202 so far)")
                    stopping_at = now()
                    broker_down = True
                    await asyncio.to_thread(kafka_sh, broker, "stop")
                    down_at = now()
                    step("broker down")
                    await asyncio.sleep(BROKER_OUTAGE_S)
                    starting_at = now()
                    step(f"starting the broker ({len(poster.acknowledged)} events answered 202 so far)")
                    await asyncio.to_thread(kafka_sh, broker, "start")
                    broker_down = False
                    up_at = now()
                    step("broker up")
                    recovered_at = await poster.wait_202_after(up_at, 30)
                    step(f"first 202 after the restart: {recovered_at is not None}")
                    if recovered_at is not None:
                        await asyncio.sleep(3)  # posting goes on after the recovery
                step(f"posting stopped: {len(poster.acknowledged)} events answered 202")
                ready_at_end = await wait_ready(process.url, 15)
                step(f"/readyz {ready_at_end}")
            finally:
                probe.stopping.set()
                await probing
            lag = await wait_caught_up(database_url, broker.bootstrap_servers, CATCH_UP_S)
            step(f"backlog {lag}")
            findings = await check_applied(
                ledgers.urls, key, book, poster, database_url, broker.bootstrap_servers, lag
            )
            step("checked")
            out_of_order = ledgers.log_count("OutOfOrderSequenceNumber")
            still_running = process.running and process.starts == 1
    finally:
        if broker_down:  # the later tests of the module need it
            await asyncio.to_thread(kafka_sh, broker, "start")

    accepted_while_down = poster.accepted_between(down_at, starting_at)
    readiness_down = probe.between(down_at, starting_at)
    figures = (
        f"broker stopping at +0.0 s, down at +{down_at - stopping_at:.1f} s, starting at"
        f" +{starting_at - stopping_at:.1f} s, up at +{up_at - stopping_at:.1f} s;"
        f" first 202 after it: {'never' if recovered_at is None else f'+{recovered_at - stopping_at:.1f} s'}",
        f"POST outcomes before {dict(poster.outcomes(0, stopping_at))}, while down"
        f" {dict(poster.outcomes(down_at, starting_at))}, after {dict(poster.outcomes(up_at))}"
        f" ({out_of_order} OutOfOrderSequenceNumber in the ledger's log)",
        f"/readyz while down {dict(readiness_down)}, after {dict(probe.between(up_at, now()))},"
        f" at the end {ready_at_end}",
    )
    print(findings.summary(), *figures, sep="\n")
    problems = findings.problems()
    if recovered_at is None:
        problems.append("no POST was answered 202 within 30 s after the broker came back (no restart)")
    if ready_at_end != 200:
        problems.append(f"/readyz at the end answered {ready_at_end}, not 200")
    if accepted_while_down == 0:
        problems.append("no event was accepted while the broker was down: a 202 needs only the database")
    if not any(o != "200" for o in readiness_down.elements()):
        problems.append("the ledger could not publish while the broker was down, yet /readyz answered 200")
    if recovered_at is None and ready_at_end == 200:
        problems.append("/readyz answered 200 while no POST could be accepted")
    if not still_running:
        problems.append("the ledger process did not stay up through the outage")
    assert not problems, "\n".join([findings.summary(), *problems, *figures, str(step)])


# --- 3. PostgreSQL outage -----------------------------------------------------------------------------

POSTGRES_OUTAGE_S = 10.0


async def test_postgres_outage_the_consumer_catches_up_without_a_restart(
    broker: KafkaBroker, own_postgres: PostgresServer, tenant: str, tmp_path: Path
) -> None:
    data_dir = own_postgres.data_dir
    assert data_dir is not None
    step = Steps()
    database_url = await create_database(own_postgres.url)
    book = InvoiceBook(tenant, debtors=200)
    postgres_down = False
    try:
        async with Ledgers(database_url, broker.bootstrap_servers, tmp_path) as ledgers:
            key = await ledgers.create_key(tenant)
            await ledgers.start()
            process = ledgers.processes[0]
            poster = Poster(ledgers.urls, key, book.batches(200, 30_000), concurrency=2, rate=RATE)
            probe = ReadinessProbe(ledgers.urls)
            probing = asyncio.create_task(probe.run())
            try:
                async with posting(poster):
                    await asyncio.sleep(3)
                    poster.rate = None  # the consumer is behind, applying, when the database goes
                    await asyncio.sleep(2 * BURST_S)
                    poster.rate = RATE
                    step(f"stopping PostgreSQL ({len(poster.acknowledged)} events answered 202 so far)")
                    stopping_at = now()
                    postgres_down = True
                    await asyncio.to_thread(stop_embedded_postgres, data_dir)
                    down_at = now()
                    step("PostgreSQL down")
                    await asyncio.sleep(POSTGRES_OUTAGE_S)
                    starting_at = now()
                    restarted = await asyncio.to_thread(start_embedded_postgres, data_dir)
                    postgres_down = False
                    up_at = now()
                    step("PostgreSQL up")
                    assert restarted.url == own_postgres.url, "the server came back where it was"
                    recovered_at = await poster.wait_202_after(up_at, 20)
                    step(f"first 202 after the restart: {recovered_at is not None}")
                    await asyncio.sleep(4)  # posting goes on after the recovery
                step(f"posting stopped: {len(poster.acknowledged)} events answered 202")
                ready_at_end = await wait_ready(process.url, 15)
                step(f"/readyz {ready_at_end}")
            finally:
                probe.stopping.set()
                await probing
            lag = await wait_caught_up(database_url, broker.bootstrap_servers, CATCH_UP_S)
            ready_after_catch_up = await readyz(process.url)
            step(f"backlog {lag}, /readyz {ready_after_catch_up}")
            findings = await check_applied(
                ledgers.urls, key, book, poster, database_url, broker.bootstrap_servers, lag
            )
            step("checked")
            still_running = process.running and process.starts == 1
    finally:
        if postgres_down:  # the fixture's teardown stops it
            await asyncio.to_thread(start_embedded_postgres, data_dir)

    # A request sent just before the stop may still be answered from the pool's open connection.
    readiness_down = probe.between(down_at + 1, starting_at)
    figures = (
        f"PostgreSQL stopping at +0.0 s, down at +{down_at - stopping_at:.1f} s, up at"
        f" +{up_at - stopping_at:.1f} s; first 202 after it:"
        f" {'never' if recovered_at is None else f'+{recovered_at - stopping_at:.1f} s'}",
        f"POST outcomes while down {dict(poster.outcomes(down_at, starting_at))},"
        f" after {dict(poster.outcomes(up_at))}",
        f"/readyz while down {dict(readiness_down)}, after {dict(probe.between(up_at, now()))},"
        f" at the end {ready_at_end}, after catching up (or giving up) {ready_after_catch_up}",
    )
    print(findings.summary(), *figures, sep="\n")
    problems = findings.problems()
    if readiness_down["200"] or not readiness_down["503"]:
        problems.append(f"/readyz while the database was down: {dict(readiness_down)}; expected only 503")
    if ready_at_end != 200:
        problems.append(f"/readyz after the outage answered {ready_at_end}, not 200")
    if lag != 0 and ready_after_catch_up == 200:
        problems.append(f"/readyz answered 200 with the consumer {lag} records behind and not moving")
    if recovered_at is None:
        problems.append("no POST was answered 202 within 20 s after PostgreSQL came back")
    if not still_running:
        problems.append("the ledger process did not stay up through the outage")
    assert not problems, "\n".join([findings.summary(), *problems, *figures, str(step)])


# --- 4. scale-out ---------------------------------------------------------------------------------------

LEDGERS = 4
DEBTORS = 300
INVOICES_PER_DEBTOR = 8
CURRENCIES = ("EUR", "USD")


def interleaved(book: InvoiceBook, batch_size: int) -> Iterator[list[Event]]:
    """Master data and invoices of every debtor, interleaved: a registration, then rounds of one
    invoice each with an update every other round, then one last update naming the debtor's final
    profile. Posted in order (one batch in flight), so each debtor's events are in that order."""
    tenant = book.tenant
    events: list[Event] = []
    for debtor in (f"D{n:04d}" for n in range(DEBTORS)):
        events.append(debtor_event(tenant, debtor, f"reg-{book.run}-{debtor}", f"{debtor} v0", True))
    for round_ in range(INVOICES_PER_DEBTOR):
        for n in range(DEBTORS):
            debtor = f"D{n:04d}"
            events.append(book.invoice(debtor))
            if round_ % 2 == 1:
                event_id = f"upd-{book.run}-{debtor}-{round_}"
                events.append(debtor_event(tenant, debtor, event_id, f"{debtor} v{round_}", False))
    for n in range(DEBTORS):
        debtor = f"D{n:04d}"
        events.append(
            debtor_event(tenant, debtor, f"upd-{book.run}-{debtor}-final", f"{debtor} final", False)
        )
    for start in range(0, len(events), batch_size):
        yield events[start : start + batch_size]


async def test_four_ledgers_in_one_group_keep_every_invoice_on_its_statement(
    broker: KafkaBroker,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    step = Steps()
    database_url = await new_database()
    book = InvoiceBook(tenant, debtors=DEBTORS, currencies=CURRENCIES)
    env = {"ARREARS_DB_POOL_SIZE": "4"}
    async with Ledgers(database_url, broker.bootstrap_servers, tmp_path, LEDGERS, env) as ledgers:
        key = await ledgers.create_key(tenant)
        await ledgers.start()
        step(f"{LEDGERS} ledgers up")
        # One batch in flight, round robin over the four: a debtor's events reach the log in order.
        poster = Poster(ledgers.urls, key, interleaved(book, 100), concurrency=1, rate=250)
        async with posting(poster) as task:
            await asyncio.sleep(6)
            ledgers.kill(1)  # the group rebalances, twice
            step(f"kill -9 of ledger-1 ({len(poster.acknowledged)} events answered 202 so far)")
            ledgers.processes[1].start()  # the poster goes round it until it serves again
            await asyncio.wait_for(asyncio.shield(task), 60)
            step(f"posting done: {len(poster.acknowledged)} events answered 202")
            await ledgers.processes[1].healthy()
            step("ledger-1 restarted")
        lag = await wait_caught_up(database_url, broker.bootstrap_servers, CATCH_UP_S)
        step(f"backlog {lag}")
        findings = await check_applied(
            ledgers.urls, key, book, poster, database_url, broker.bootstrap_servers, lag
        )
        step("checked")

    assert len(book.invoices) == DEBTORS * INVOICES_PER_DEBTOR
    stale = sorted(
        debtor
        for debtor, statement in findings.shown.items()
        if statement is None or (statement["profile"] or {}).get("name") != f"{debtor} final"
    )
    problems = findings.problems()
    if stale:
        problems.append(f"{len(stale)} of {DEBTORS} debtors without their final profile: {stale[:10]}")
    assert not problems, "\n".join(
        [findings.summary(), *problems, f"POST outcomes {dict(poster.outcomes())}", str(step)]
    )


# --- 5. the producer across a broker restart ------------------------------------------------------------


async def test_a_producer_that_failed_is_replaced_and_publishes_again_without_a_restart(
    broker: KafkaBroker,
) -> None:
    """A publish while the broker is away fails, the log says it is not healthy, and once the broker
    is back the next publish goes through on a new producer: every record acknowledged is in the
    topic. (A publish that failed may still have reached the broker: its caller retries from the
    outbox and consumers drop the repeat by event id, so it may be there too, never anything else.)"""
    event_log = KafkaLog(broker.bootstrap_servers, timeout_s=5)
    await event_log.start()
    broker_down = False
    try:
        acknowledged: list[bytes] = []

        async def publish(value: bytes) -> bool:
            try:
                await event_log.publish([Message(CONTACTS.name, b"t:D1", value)])
            except Exception:
                return False
            acknowledged.append(value)
            return True

        assert await publish(b"before")
        broker_down = True
        await asyncio.to_thread(kafka_sh, broker, "stop")
        assert not await publish(b"while down"), "a publish while the broker is down cannot succeed"
        assert not await event_log.healthy()
        await asyncio.to_thread(kafka_sh, broker, "start")
        broker_down = False
        deadline = now() + 60
        while not await publish(b"after"):
            assert now() < deadline, "no publish went through within 60 s of the broker's return"
            await asyncio.sleep(0.5)
        assert await event_log.healthy()
        assert event_log.producers_started >= 2, "the failed producer was replaced"
        in_topic = [r.value for r in await event_log.read_all(CONTACTS.name) if r.key == b"t:D1"]
    finally:
        await event_log.stop()
        if broker_down:
            await asyncio.to_thread(kafka_sh, broker, "start")
    assert sorted(acknowledged) == [b"after", b"before"]
    assert set(acknowledged) <= set(in_topic) <= {b"before", b"while down", b"after"}
    assert in_topic.count(b"before") == 1
