"""The consumer loop on a real broker and database: a record that fails alone is tried a bounded
number of times and dead-lettered with its reason (a NUL in it included), a transient failure is
waited out, and the loop goes on applying what follows either way."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.topics import JOURNAL
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime.consumer import ATTEMPTS_BEFORE_DEAD_LETTER, Applied, ConsumerLoop, Delivered
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message, Record
from services.runtime.outbox import OutboxRelay
from services.runtime.process import open_resources
from services.runtime.supervisor import Health
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import settings_for
from tests.integration.events import invoice

pytestmark = pytest.mark.integration


@dataclass
class Scripted:
    """A projection that records the invoice ids of its tenant, and fails on the ones it is told to."""

    tenant: str
    poison: dict[str, BaseException]
    transient_times: dict[str, int] = field(default_factory=dict)
    group_id: str = field(default_factory=lambda: f"loop-test-{uuid.uuid4().hex[:8]}")
    topics: tuple[str, ...] = (JOURNAL.name,)
    applied: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    dead: list[Record] = field(default_factory=list)
    batches: int = 0
    """Batches holding a record of its tenant that it was asked to apply."""

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        mine = [d.event.id for d in batch if d.event.tenantid == self.tenant]
        self.batches += bool(mine)
        for event_id in mine:
            self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
            if event_id in self.poison:
                raise self.poison[event_id]
            if self.transient_times.get(event_id, 0) >= self.attempts[event_id]:
                raise ConnectionResetError("the database went away")
        self.applied.extend(mine)
        return Applied()

    async def dead_lettered(self, session: AsyncSession, dead: list[tuple[Record, str]]) -> None:
        """Keeps the dead letters of its tenant: the topic also holds other tests' records, some
        of them broken on purpose."""
        self.dead.extend(record for record, _ in dead if self.tenant.encode() in record.value)


@contextlib.asynccontextmanager
async def running(
    database_url: str, kafka: KafkaBroker, projection: Scripted, max_records: int = 1
) -> AsyncIterator[tuple[ConsumerLoop, Health, asyncio.Task[None]]]:
    settings = settings_for(database_url, kafka)
    async with open_resources(settings) as resources:
        await LedgerService(resources).migrate()
        loop = ConsumerLoop(
            projection,
            resources.sessions,
            store.runtime,
            resources.event_log,
            max_records=max_records,
            fetch_timeout_ms=50,
        )
        relay = OutboxRelay(resources.sessions, store.runtime, resources.event_log, poll_interval_s=0.02)
        stopping, health = asyncio.Event(), Health(running=True)
        task = asyncio.create_task(loop.run(stopping, health))
        relaying = asyncio.create_task(relay.run(stopping))
        try:
            yield loop, health, task
        finally:
            stopping.set()
            await asyncio.wait_for(asyncio.gather(task, relaying), 30)


async def _until(condition: object, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


def _messages(events: list[dict[str, object]]) -> list[Message]:
    return [
        Message(JOURNAL.name, f"{e['tenantid']}:{e['debtorid']}".encode(), orjson.dumps(e)) for e in events
    ]


async def _dead_letters(kafka_log: KafkaLog, event_id: str) -> list[Record]:
    """The dead letters of the event, once the relay published them."""
    for _ in range(100):
        dead = [r for r in await kafka_log.read_all(f"{JOURNAL.name}.dlq") if event_id.encode() in r.value]
        if dead:
            return dead
        await asyncio.sleep(0.05)
    return []


async def test_a_record_failing_alone_is_dead_lettered_with_its_reason_and_the_loop_goes_on(
    new_database: object, kafka: KafkaBroker, kafka_log: KafkaLog, tenant: str
) -> None:
    events = [invoice(tenant, "D1", f"I{n}", "2026-01-01", "2026-01-31", 100 + n) for n in range(3)]
    poison_id = str(events[1]["id"])
    projection = Scripted(tenant, poison={poison_id: ValueError("cannot store 'Acme\x00 Ltd'")})
    url = await new_database()  # type: ignore[operator]
    async with running(url, kafka, projection) as (_, health, task):
        await kafka_log.publish(_messages(events))
        await _until(lambda: str(events[2]["id"]) in projection.applied)
        assert not task.done(), "the consumer loop ended"
        assert health.ok
        assert projection.applied == [str(events[0]["id"]), str(events[2]["id"])]
        assert projection.attempts[poison_id] == ATTEMPTS_BEFORE_DEAD_LETTER
        assert len(projection.dead) == 1
        dead = await _dead_letters(kafka_log, poison_id)
        assert len(dead) == 1
    reason = (dead[0].header("dlq.reason") or b"").decode()
    assert reason.startswith("ValueError: cannot store 'Acme\\x00 Ltd'")
    assert (dead[0].header("dlq.group") or b"").decode() == projection.group_id


async def test_a_transient_failure_is_waited_out_and_nothing_is_dead_lettered(
    new_database: object, kafka: KafkaBroker, kafka_log: KafkaLog, tenant: str
) -> None:
    events = [invoice(tenant, "D2", f"I{n}", "2026-01-01", "2026-01-31", 100 + n) for n in range(3)]
    flaky = str(events[1]["id"])
    projection = Scripted(tenant, poison={}, transient_times={flaky: ATTEMPTS_BEFORE_DEAD_LETTER + 2})
    url = await new_database()  # type: ignore[operator]
    async with running(url, kafka, projection) as (_, health, task):
        await kafka_log.publish(_messages(events))
        await _until(lambda: not health.ok or str(events[2]["id"]) in projection.applied)
        await _until(lambda: str(events[2]["id"]) in projection.applied)
        assert not task.done()
        assert health.ok
        assert projection.dead == []
    assert projection.applied == [str(e["id"]) for e in events]
    assert projection.attempts[flaky] == ATTEMPTS_BEFORE_DEAD_LETTER + 3


async def test_a_record_failing_in_a_large_batch_is_found_in_halves_and_the_rest_applied_in_order(
    new_database: object, kafka: KafkaBroker, kafka_log: KafkaLog, tenant: str
) -> None:
    events = [invoice(tenant, "D3", f"I{n}", "2026-01-01", "2026-01-31", 100 + n) for n in range(256)]
    poison_id = str(events[150]["id"])
    projection = Scripted(tenant, poison={poison_id: ValueError("no such currency")})
    url = await new_database()  # type: ignore[operator]
    async with running(url, kafka, projection, max_records=1_000) as (_, health, task):
        await kafka_log.publish(_messages(events))
        await _until(lambda: str(events[-1]["id"]) in projection.applied)
        assert not task.done() and health.ok
        assert projection.applied == [str(e["id"]) for e in events if e["id"] != poison_id]
        assert len(projection.dead) == 1 and poison_id.encode() in projection.dead[0].value
    # One record at a time would have been 256 transactions and more; halving takes a few per try.
    assert projection.batches < 64
