"""The event log of the embedded default, kept in PostgreSQL (schema `eventlog`) beside the services'
own schemas, so it survives a restart or a kill -9 together with the consumers' stored offsets.

It keeps the Kafka adapter's semantics: the topics and partition counts of the catalogue, a key's
partition chosen by murmur2 as Kafka's default partitioner does, offsets dense per partition from 0,
headers and timestamps kept, and `publish` returning once its transaction committed.

Offsets: `eventlog.partitions` holds one row per topic partition with the next offset to write. A
publish locks the rows of the partitions it writes (in one order, so two publishes never deadlock),
copies its records in at the offsets that follow, advances the rows and commits. The row lock makes
publishes to a partition commit one after another in offset order, so a reader never sees offset n+1
without offset n, and the records below a partition's `next_offset` are exactly the committed ones.

Consumers: a consumer is the only member of its group and owns every partition of its topics. A fetch
reads the `next_offset` of its partitions, then the records between its positions and those, in one
query. With nothing new it waits for a publish of this process to one of its topics, or until the fetch
timeout: a record another process published (a CLI starting a business day) is seen by the next fetch.
A position past a partition's end (offsets stored beside another log) reads it again from the start,
as Kafka's auto.offset.reset=earliest does; consumers drop the repeats by event id.

The log has its own small asyncpg pool, so a request that publishes while holding a session of the
engine's pool never waits for a second connection from that pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import asyncpg
from aiokafka.partitioner import murmur2

from contracts.topics import catalogue
from services.runtime.log import (
    AssignmentCallback,
    EventLog,
    LogConsumer,
    Message,
    Record,
    SoleMemberConsumer,
    TopicPartition,
)

SCHEMA = "eventlog"
log = logging.getLogger(__name__)

_CREATE_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.partitions (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.records (
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    key bytea,
    value bytea NOT NULL,
    header_names text[] NOT NULL,
    header_values bytea[] NOT NULL,
    timestamp_ms bigint NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
"""

# Only the missing rows: a row being advanced by a publish is not waited for.
_ADD_PARTITIONS = f"""
INSERT INTO {SCHEMA}.partitions (topic, partition)
SELECT w.topic, w.partition FROM unnest($1::text[], $2::integer[]) AS w(topic, partition)
WHERE NOT EXISTS (
    SELECT 1 FROM {SCHEMA}.partitions p WHERE p.topic = w.topic AND p.partition = w.partition
)
ON CONFLICT DO NOTHING
"""

_LOCK_PARTITIONS = f"""
SELECT p.topic, p.partition, p.next_offset
FROM {SCHEMA}.partitions p
JOIN unnest($1::text[], $2::integer[]) AS w(topic, partition) USING (topic, partition)
ORDER BY p.topic, p.partition
FOR UPDATE OF p
"""

_ADVANCE_PARTITIONS = f"""
UPDATE {SCHEMA}.partitions p SET next_offset = w.next_offset
FROM unnest($1::text[], $2::integer[], $3::bigint[]) AS w(topic, partition, next_offset)
WHERE p.topic = w.topic AND p.partition = w.partition
"""

_NEXT_OFFSETS = f"""
SELECT topic, partition, next_offset FROM {SCHEMA}.partitions WHERE topic = ANY($1::text[])
"""

_RECORD_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "key",
    "value",
    "header_names",
    "header_values",
    "timestamp_ms",
)
_SELECTED = ", ".join(f'r."{c}"' for c in _RECORD_COLUMNS)

_READ_RANGES = f"""
SELECT {_SELECTED}
FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::bigint[]) WITH ORDINALITY
    AS w(topic, partition, first, stop, n)
JOIN {SCHEMA}.records r
    ON r.topic = w.topic AND r.partition = w.partition AND r."offset" >= w.first AND r."offset" < w.stop
ORDER BY w.n, r."offset"
"""

_READ_TOPIC = f"""
SELECT {_SELECTED} FROM {SCHEMA}.records r WHERE r.topic = $1 ORDER BY r.partition, r."offset"
"""

_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('eventlog:schema'))"

Range = tuple[TopicPartition, int, int]
"""A partition and the offsets [first, stop) to read from it."""


@functools.lru_cache(maxsize=100_000)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class _Appends:
    """News of this process's publishes: a count per topic, and a wake-up for the consumers waiting."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    def seen(self, topics: Iterable[str]) -> int:
        return sum(self._counts[t] for t in topics)

    async def announce(self, topics: Iterable[str]) -> None:
        self._counts.update(topics)
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, topics: Sequence[str], seen: int, timeout_s: float) -> None:
        """Return once this process published to one of `topics` since `seen`, or after the timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self.seen(topics) != seen)


class PostgresLog(EventLog):
    def __init__(
        self,
        dsn: str,
        *,
        topics: Sequence[tuple[str, int, int]] | None = None,
        pool_size: int = 4,
        timeout_s: float = 30.0,
    ) -> None:
        """`dsn` is a libpq URL (postgresql://…); `topics` is (name, partitions, retention) as in
        the catalogue, which is the default."""
        self._dsn = dsn
        self._partition_counts = {name: count for name, count, _ in (topics or catalogue())}
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._round_robin = itertools.count()
        self.appends = _Appends()

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._pool_size, command_timeout=self._timeout_s
        )
        try:
            await self._create_schema()
        except BaseException:
            await self.stop()
            raise

    async def _create_schema(self) -> None:
        wanted = [(t, p) for t, count in self._partition_counts.items() for p in range(count)]
        async with self._started().acquire() as connection, connection.transaction():
            # Two processes starting at once must not both create the schema.
            await connection.execute(_SCHEMA_LOCK)
            await connection.execute(_CREATE_SCHEMA)
            await connection.execute(_ADD_PARTITIONS, [t for t, _ in wanted], [p for _, p in wanted])

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout_s)
        except TimeoutError:
            pool.terminate()

    def _started(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL log is not started")
        return self._pool

    def partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            raise KeyError(f"unknown topic {topic}")
        return count

    def _partition_for(self, message: Message) -> TopicPartition:
        count = self.partition_count(message.topic)
        placement = next(self._round_robin) if message.key is None else _key_hash(message.key)
        return (message.topic, placement % count)

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        placed = [(m, self._partition_for(m)) for m in messages]
        written = sorted({tp for _, tp in placed})
        async with asyncio.timeout(self._timeout_s):
            await self._append(placed, written)
        await self.appends.announce({topic for topic, _ in written})

    async def _append(
        self, placed: list[tuple[Message, TopicPartition]], written: list[TopicPartition]
    ) -> None:
        now_ms = int(time.time() * 1000)
        topics = [t for t, _ in written]
        partitions = [p for _, p in written]
        async with self._started().acquire() as connection, connection.transaction():
            locked = await connection.fetch(_LOCK_PARTITIONS, topics, partitions)
            next_offset: dict[TopicPartition, int] = {
                (r["topic"], r["partition"]): r["next_offset"] for r in locked
            }
            if len(next_offset) != len(written):
                missing = sorted(set(written) - next_offset.keys())
                raise KeyError(f"the log has no partitions {missing}; was it started?")
            rows: list[tuple[Any, ...]] = []
            for m, tp in placed:
                offset = next_offset[tp]
                next_offset[tp] = offset + 1
                rows.append(
                    (
                        *tp,
                        offset,
                        m.key,
                        m.value,
                        [name for name, _ in m.headers],
                        [value for _, value in m.headers],
                        m.timestamp_ms if m.timestamp_ms is not None else now_ms,
                    )
                )
            await connection.copy_records_to_table(
                "records", schema_name=SCHEMA, columns=_RECORD_COLUMNS, records=rows
            )
            await connection.execute(
                _ADVANCE_PARTITIONS, topics, partitions, [next_offset[tp] for tp in written]
            )

    async def next_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """The next offset to be written in every partition of `topics`."""
        rows = await self._started().fetch(_NEXT_OFFSETS, list(topics))
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def read_ranges(self, ranges: Sequence[Range]) -> list[Record]:
        """The records of each range, range by range, in offset order."""
        rows = await self._started().fetch(
            _READ_RANGES,
            [tp[0] for tp, _, _ in ranges],
            [tp[1] for tp, _, _ in ranges],
            [first for _, first, _ in ranges],
            [stop for _, _, stop in ranges],
        )
        return [_record(r) for r in rows]

    def consumer(self, group_id: str, topics: Sequence[str]) -> LogConsumer:
        return PostgresLogConsumer(self, group_id, list(topics))

    async def read_all(self, topic: str) -> list[Record]:
        return [_record(r) for r in await self._started().fetch(_READ_TOPIC, topic)]

    async def read_partition(
        self, topics: Sequence[str], partition: int, chunk: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        ends = await self.next_offsets(topics)
        for topic in topics:
            stop = ends.get((topic, partition), 0)
            for first in range(0, stop, chunk):
                yield await self.read_ranges([((topic, partition), first, min(first + chunk, stop))])

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(5):
                await self._started().fetchval("SELECT 1")
        except Exception:
            return False
        return True


def _record(row: asyncpg.Record) -> Record:
    return Record(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        key=row["key"],
        value=row["value"],
        headers=tuple(zip(row["header_names"], row["header_values"], strict=True)),
        timestamp_ms=row["timestamp_ms"],
    )


class PostgresLogConsumer(SoleMemberConsumer):
    def __init__(self, log: PostgresLog, group_id: str, topics: list[str]) -> None:
        super().__init__()
        self._log = log
        self._group_id = group_id
        self._topics = topics
        self._positions: dict[TopicPartition, int] = {
            (t, p): 0 for t in topics for p in range(log.partition_count(t))
        }
        self._fetches = itertools.count()

    async def start(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None:
        await on_assigned(list(self._positions))

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            seen = self._log.appends.seen(self._topics)
            ranges = self._ranges(await self._log.next_offsets(self._topics), max_records)
            if ranges:
                records = await self._log.read_ranges(ranges)
                for tp, _, stop in ranges:
                    self._positions[tp] = stop
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._log.appends.wait(self._topics, seen, remaining)

    def _ranges(self, next_offsets: dict[TopicPartition, int], max_records: int) -> list[Range]:
        """What to read next, at most `max_records`; each fetch starts at another partition, so a
        partition with a backlog cannot hold the others back."""
        owned = [tp for tp in self._positions if tp not in self._paused]
        start = next(self._fetches) % len(owned) if owned else 0
        ranges: list[Range] = []
        budget = max_records
        for tp in owned[start:] + owned[:start]:
            position = self._out_of_range_reset(tp, next_offsets.get(tp, 0))
            available = next_offsets.get(tp, 0) - position
            if available > 0 and budget > 0:
                take = min(available, budget)
                ranges.append((tp, position, position + take))
                budget -= take
        return ranges

    def _out_of_range_reset(self, tp: TopicPartition, next_offset: int) -> int:
        """The position in `tp`; one past its end (offsets stored beside another log) starts again
        from the beginning, as Kafka's auto.offset.reset=earliest does. Consumers drop the repeats."""
        position = self._positions[tp]
        if position > next_offset:
            log.warning(
                "%s: offset %d is past the end of %s/%d (%d); reading it from the beginning",
                self._group_id,
                position,
                *tp,
                next_offset,
            )
            position = self._positions[tp] = 0
        return position

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        self._positions[partition] = offset or 0

    async def end_offsets(self) -> dict[TopicPartition, int]:
        next_offsets = await self._log.next_offsets(self._topics)
        return {tp: next_offsets.get(tp, 0) for tp in self._positions}

    async def stop(self) -> None:
        return None
