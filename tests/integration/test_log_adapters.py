"""One suite for every adapter of the event log (in-process, PostgreSQL, Kafka): what the consumer loop
and the ledger rely on, whichever log a process runs with."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from services.runtime.kafka_log import BATCHED_FROM, KafkaLog
from services.runtime.log import EventLog, LogConsumer, Message, Record, TopicPartition
from services.runtime.memory_log import InProcessLog
from services.runtime.postgres_log import PostgresLog

pytestmark = pytest.mark.integration

PARTITIONS = 3
KEYS = [f"tenant:debtor-{n}".encode() for n in range(12)]
BASE_MS = 1_700_000_000_000
TopicSpec = list[tuple[str, int, int]]
MakeLog = Callable[[TopicSpec], Awaitable[EventLog]]


@dataclass
class Adapter:
    log: EventLog
    topic: str


@pytest.fixture(params=["in_process", "postgres", "kafka"])
def make_log(request: pytest.FixtureRequest) -> MakeLog:
    """How to open a log of this adapter over the given topics (created where the adapter needs it)."""
    if request.param == "in_process":

        async def in_process(topics: TopicSpec) -> EventLog:
            return InProcessLog(topics)

        return in_process
    if request.param == "postgres":
        new_database: Callable[[], Awaitable[str]] = request.getfixturevalue("new_database")

        async def postgres(topics: TopicSpec) -> EventLog:
            return PostgresLog(sqlalchemy_to_libpq(await new_database()), topics=topics)

        return postgres
    bootstrap_servers: str = request.getfixturevalue("kafka").bootstrap_servers

    async def kafka(topics: TopicSpec) -> EventLog:
        await ensure_topics(bootstrap_servers, topics)
        return KafkaLog(bootstrap_servers)

    return kafka


@pytest.fixture
async def adapter(make_log: MakeLog) -> AsyncIterator[Adapter]:
    topic = f"test.log.{uuid.uuid4().hex[:8]}.v1"
    topics = [(topic, PARTITIONS, -1)]
    log = await make_log(topics)
    await log.start()
    try:
        yield Adapter(log, topic)
    finally:
        await log.stop()


def messages(topic: str, count: int, start: int = 0) -> list[Message]:
    return [
        Message(
            topic,
            KEYS[n % len(KEYS)],
            f"{n}".encode(),
            headers=(("seq", f"{n}".encode()), ("raw", bytes([0, 255, n % 256])), ("empty", b"")),
            timestamp_ms=BASE_MS + n,
        )
        for n in range(start, start + count)
    ]


def by_partition(records: Sequence[Record]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.partition].append(r)
    return out


async def test_a_keys_records_stay_in_one_partition_in_publishing_order(adapter: Adapter) -> None:
    large = messages(adapter.topic, BATCHED_FROM * 2)  # Kafka: the batched path
    small = messages(adapter.topic, 30, start=len(large))  # Kafka: record by record
    await adapter.log.publish(large)
    await adapter.log.publish(small)

    records = await adapter.log.read_all(adapter.topic)
    assert len(records) == len(large) + len(small)
    partitions: dict[bytes | None, set[int]] = defaultdict(set)
    sequence: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions[r.key].add(r.partition)
        sequence[r.key].append(int(r.value))
    assert all(len(found) == 1 for found in partitions.values()), "a key's records went to two partitions"
    assert all(seq == sorted(seq) for seq in sequence.values()), "a key's records came out of order"
    assert len({p for found in partitions.values() for p in found}) > 1


async def test_offsets_are_dense_from_zero_in_every_partition(adapter: Adapter) -> None:
    for start in range(0, 90, 30):
        await adapter.log.publish(messages(adapter.topic, 30, start))

    partitions = by_partition(await adapter.log.read_all(adapter.topic))
    assert sum(len(records) for records in partitions.values()) == 90
    for records in partitions.values():
        assert [r.offset for r in records] == list(range(len(records)))


async def test_concurrent_publishes_leave_no_gap_and_keep_each_calls_order(adapter: Adapter) -> None:
    calls = [messages(adapter.topic, 20, start) for start in range(0, 400, 20)]
    await asyncio.gather(*(adapter.log.publish(call) for call in calls))

    partitions = by_partition(await adapter.log.read_all(adapter.topic))
    assert sum(len(records) for records in partitions.values()) == 400
    for records in partitions.values():
        assert [r.offset for r in records] == list(range(len(records)))
        for key in KEYS:
            values = [int(r.value) for r in records if r.key == key]
            for call in range(0, 400, 20):
                in_call = [v for v in values if call <= v < call + 20]
                assert in_call == sorted(in_call)


async def test_headers_and_timestamps_round_trip(adapter: Adapter) -> None:
    stamped = messages(adapter.topic, 5)
    unstamped = Message(adapter.topic, b"tenant:now", b"now", headers=(("dlq.reason", "ü €".encode()),))
    before_ms = int(time.time() * 1000)
    await adapter.log.publish([*stamped, unstamped])
    after_ms = int(time.time() * 1000)

    records = {r.value: r for r in await adapter.log.read_all(adapter.topic)}
    for m in stamped:
        assert records[m.value].headers == m.headers
        assert records[m.value].timestamp_ms == m.timestamp_ms
        assert records[m.value].key == m.key
    now = records[b"now"]
    assert now.headers == unstamped.headers and now.header("dlq.reason") == "ü €".encode()
    assert before_ms - 1_000 <= now.timestamp_ms <= after_ms + 1_000


class Positions:
    """A consumer loop's part: on assignment, seek to the stored offsets."""

    def __init__(self, consumer: LogConsumer, stored: dict[TopicPartition, int | None]) -> None:
        self.consumer = consumer
        self.stored = stored
        self.assigned: list[TopicPartition] = []

    async def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.assigned.extend(partitions)
        for tp in partitions:
            await self.consumer.seek(tp, self.stored.get(tp))

    async def on_revoked(self, partitions: list[TopicPartition]) -> None:
        return None


async def consume(consumer: LogConsumer, count: int, timeout_s: float = 30) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} records in {timeout_s} s"
        got.extend(await consumer.fetch(max_records=7, timeout_ms=200))
    return got


async def test_a_consumer_seeked_to_stored_offsets_reads_exactly_the_records_from_there(
    adapter: Adapter,
) -> None:
    await adapter.log.publish(messages(adapter.topic, 60))
    written = by_partition(await adapter.log.read_all(adapter.topic))
    assert set(written) == set(range(PARTITIONS))
    stored: dict[TopicPartition, int | None] = {
        (adapter.topic, 0): 2,  # part-way
        (adapter.topic, 1): None,  # never consumed: from the beginning
        (adapter.topic, 2): len(written[2]),  # consumed to the end
    }
    expected = written[0][2:] + written[1]

    consumer = adapter.log.consumer(f"group-{uuid.uuid4().hex[:8]}", [adapter.topic])
    positions = Positions(consumer, stored)
    await consumer.start(positions.on_assigned, positions.on_revoked)
    try:
        got = await consume(consumer, len(expected))
        got += await consumer.fetch(max_records=100, timeout_ms=300)
        assert sorted(positions.assigned) == sorted(stored)
        assert sorted(got, key=lambda r: (r.partition, r.offset)) == expected
        ends = await consumer.end_offsets()
        assert ends == {(adapter.topic, p): len(records) for p, records in written.items()}
    finally:
        await consumer.stop()


async def test_a_consumer_seeked_past_the_end_reads_the_partition_from_the_beginning(
    adapter: Adapter,
) -> None:
    """Offsets stored beside another log (Kafka: auto.offset.reset=earliest); consumers drop the repeats."""
    await adapter.log.publish(messages(adapter.topic, 30))
    written = by_partition(await adapter.log.read_all(adapter.topic))
    stored: dict[TopicPartition, int | None] = {
        (adapter.topic, p): len(records) + (100 if p == 0 else 0) for p, records in written.items()
    }

    consumer = adapter.log.consumer(f"group-{uuid.uuid4().hex[:8]}", [adapter.topic])
    positions = Positions(consumer, stored)
    await consumer.start(positions.on_assigned, positions.on_revoked)
    try:
        got = await consume(consumer, len(written[0]))
        got += await consumer.fetch(max_records=100, timeout_ms=300)
        assert sorted(got, key=lambda r: r.offset) == written[0]
    finally:
        await consumer.stop()


async def test_a_waiting_fetch_returns_soon_after_a_publish(adapter: Adapter) -> None:
    consumer = adapter.log.consumer(f"group-{uuid.uuid4().hex[:8]}", [adapter.topic])
    positions = Positions(consumer, {})
    await consumer.start(positions.on_assigned, positions.on_revoked)
    try:
        await adapter.log.publish(messages(adapter.topic, 1))
        for record in await consume(consumer, 1):  # Kafka: joined the group and positioned
            # Stored as the consumer loop stores it: a rebalance meanwhile (a heartbeat missed on a
            # busy machine) seeks past it, not back to the beginning.
            positions.stored[record.topic_partition] = record.offset + 1
        waiting = asyncio.create_task(consumer.fetch(max_records=10, timeout_ms=10_000))
        await asyncio.sleep(0.3)
        published = time.monotonic()
        await adapter.log.publish(messages(adapter.topic, 1, start=1))
        got = await waiting
        assert [r.value for r in got] == [b"1"]
        assert time.monotonic() - published < 2
    finally:
        await consumer.stop()


async def test_the_postgres_log_outlives_its_process_and_is_shared_with_others(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    dsn = sqlalchemy_to_libpq(await new_database())
    topic = f"test.log.{uuid.uuid4().hex[:8]}.v1"
    topics = [(topic, PARTITIONS, -1)]
    first, other = PostgresLog(dsn, topics=topics), PostgresLog(dsn, topics=topics)
    await first.start()
    await other.start()  # another process on the same database
    await first.publish(messages(topic, 12))
    consumer = first.consumer("group-a", [topic])
    positions = Positions(consumer, {})
    await consumer.start(positions.on_assigned, positions.on_revoked)
    try:
        assert len(await consume(consumer, 12)) == 12
        await other.publish(messages(topic, 12, start=12))  # e.g. `arrears clock advance`
        later = await consume(consumer, 12, timeout_s=5)
        assert sorted(int(r.value) for r in later) == list(range(12, 24))
    finally:
        await consumer.stop()
        await other.stop()
        await first.stop()
    assert not await first.healthy()

    restarted = PostgresLog(dsn, topics=topics)
    await restarted.start()
    try:
        await restarted.publish(messages(topic, 6, start=24))
        partitions = by_partition(await restarted.read_all(topic))
        assert sum(len(records) for records in partitions.values()) == 30
        for records in partitions.values():
            assert [r.offset for r in records] == list(range(len(records)))
        assert await restarted.healthy()
    finally:
        await restarted.stop()


async def test_a_partition_is_read_whole_in_offset_order_without_a_group(make_log: MakeLog) -> None:
    first, second = (f"test.log.{uuid.uuid4().hex[:8]}.v1" for _ in range(2))
    log = await make_log([(first, PARTITIONS, -1), (second, PARTITIONS, -1)])
    await log.start()
    try:
        await log.publish(messages(first, 25) + messages(second, 7))
        every = by_partition(await log.read_all(first) + await log.read_all(second))
        for partition in range(PARTITIONS):
            read = [
                r async for chunk in log.read_partition([first, second], partition, chunk=4) for r in chunk
            ]
            assert len(read) == len(every[partition])
            for topic in (first, second):
                offsets = [r.offset for r in read if r.topic == topic]
                assert offsets == list(range(len(offsets))), "each topic in offset order, from 0"
        assert sum(len(records) for records in every.values()) == 32
    finally:
        await log.stop()
