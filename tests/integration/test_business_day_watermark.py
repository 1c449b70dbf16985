"""A business day is never decided on facts still in flight: a clock record waits until the group has
applied every record its other topics held when the clock record was first seen, in whichever
partition and by whichever member, while the member holding it goes on applying the rest."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import BusinessDayStarted
from contracts.topics import CLOCK, JOURNAL
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime.clock import day_started
from services.runtime.consumer import Applied, ConsumerLoop, Delivered
from services.runtime.kafka_admin import ensure_topics
from services.runtime.log import EventLog, Message
from services.runtime.memory_log import InProcessLog
from services.runtime.process import Resources, open_resources
from services.runtime.supervisor import Health
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import settings_for
from tests.integration.events import invoice

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 3, 2)


@dataclass
class Seen:
    """What a member applied, in order: invoice numbers and "day"; facts wait while `blocked` is set."""

    group_id: str
    topics: tuple[str, ...]
    business_clock: str
    applied: list[str] = field(default_factory=list)
    blocked: asyncio.Event | None = None

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        facts = [d for d in batch if not isinstance(d.event.data, BusinessDayStarted)]
        if facts and self.blocked is not None:
            await self.blocked.wait()
        for d in facts:
            self.applied.append(getattr(d.event.data, "invoice_id", "?"))
        self.applied.extend("day" for d in batch if isinstance(d.event.data, BusinessDayStarted))
        return Applied()


def invoice_message(topic: str, tenant: str, debtor: str, number: str) -> Message:
    event = invoice(tenant, debtor, number, "2026-02-01", "2026-02-28", 100)
    return Message(topic, f"{tenant}:{debtor}".encode(), orjson.dumps(event))


def clock_message(topic: str, tenant: str) -> Message:
    started = day_started(tenant, DAY, dt.datetime.now(dt.UTC))
    return Message(topic, started.key, started.value)


@contextlib.asynccontextmanager
async def resources_on(database_url: str, kafka: KafkaBroker) -> AsyncIterator[Resources]:
    async with open_resources(settings_for(database_url, kafka)) as resources:
        await LedgerService(resources).migrate()  # the offsets table
        yield resources


@contextlib.asynccontextmanager
async def member(
    resources: Resources, event_log: EventLog, projection: Seen, max_records: int = 500
) -> AsyncIterator[ConsumerLoop]:
    loop = ConsumerLoop(
        projection, resources.sessions, store.runtime, event_log, max_records=max_records, fetch_timeout_ms=50
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping, Health(running=True)))
    try:
        yield loop
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def until(condition: object, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def test_a_clock_record_fetched_before_an_earlier_fact_waits_for_it(
    new_database: object, kafka: KafkaBroker, tenant: str
) -> None:
    # The in-process log hands the clock partition over first, one record per fetch: without the
    # watermark the day would be applied before the invoice published ahead of it.
    log = InProcessLog()
    await log.publish([invoice_message(JOURNAL.name, tenant, "D1", "I1")])
    await log.publish([clock_message(CLOCK.name, tenant)])
    projection = Seen(f"gate-{uuid.uuid4().hex[:8]}", (CLOCK.name, JOURNAL.name), CLOCK.name)
    url = await new_database()  # type: ignore[operator]
    async with resources_on(url, kafka) as resources, member(resources, log, projection, max_records=1):
        await until(lambda: "day" in projection.applied)
    assert projection.applied == ["I1", "day"]


async def test_a_day_waits_for_the_facts_another_member_has_not_applied_yet(
    new_database: object, kafka: KafkaBroker, tenant: str
) -> None:
    run = uuid.uuid4().hex[:8]
    clock, facts = f"test.clock.{run}", f"test.facts.{run}"
    await ensure_topics(kafka.bootstrap_servers, [(clock, 1, -1), (facts, 2, -1)])
    group = f"gate-{run}"
    url = await new_database()  # type: ignore[operator]
    async with resources_on(url, kafka) as resources:
        log = resources.event_log
        first = Seen(group, (clock, facts), clock)
        second = Seen(group, (clock, facts), clock, blocked=asyncio.Event())
        async with member(resources, log, first) as one, member(resources, log, second) as two:
            await until(lambda: len(one.assigned) + len(two.assigned) == 3 and one.assigned and two.assigned)
            owner, other = (first, second) if (clock, 0) in one.assigned else (second, first)
            other.blocked = other.blocked or asyncio.Event()
            owner.blocked = None
            # Facts on both partitions, then the day: the member without the clock may not apply its
            # partition's facts yet.
            await log.publish([invoice_message(facts, tenant, f"D{n}", f"I{n}") for n in range(20)])
            await log.publish([clock_message(clock, tenant)])
            await until(lambda: len(owner.applied) > 0)
            await asyncio.sleep(3)
            assert "day" not in owner.applied, "the day was decided while facts were still in flight"
            assert other.applied == []
            other.blocked.set()
            await until(lambda: "day" in owner.applied)
            assert len(owner.applied) + len(other.applied) == 21
            assert owner.applied[-1] == "day"
