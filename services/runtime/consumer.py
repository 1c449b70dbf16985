"""The consumer loop every service runs: batch fetch, one database transaction per batch, offsets in
PostgreSQL, dead letters for what cannot be applied.

Delivery guarantee: exactly-once effect. For each batch, in ONE transaction:
  1. advance the stored offset of every partition in the batch by compare-and-set against the offset
     this consumer seeked to (a consumer that lost its partition in a rebalance fails here and rolls
     back, so two members can never both apply the same records);
  2. record the event ids and keep only those never applied before (the outbox relay or an API retry
     may deliver a record twice);
  3. let the projection update its tables and return the records to emit;
  4. write those, and a dead letter for every record that could not be parsed or was rejected, to
     the outbox.
Nothing is committed to Kafka. On partition assignment the consumer seeks to the stored offsets.
A batch that fails on a transient error (database or connection) is retried from the stored offsets
with back-off; one that fails otherwise is replayed record by record so the one poison record goes
to the dead-letter topic and the rest are applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope
from contracts.registry import ContractError, decode_event
from services.runtime import metrics
from services.runtime.database import driver_connection
from services.runtime.log import EventLog, Message, Record, TopicPartition
from services.runtime.outbox import write_outbox
from services.runtime.tables import RuntimeTables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    record: Record
    event: Envelope[Any]


@dataclass
class Applied:
    messages: list[Message] = field(default_factory=list)
    rejected: list[tuple[Delivered, str]] = field(default_factory=list)


class Projection(Protocol):
    """How a batch changes a service's tables.

    A projection may also define any of these methods, which the consumer loop calls when present
    (for a projection that keeps state in memory between batches, such as a cache of aggregates):
      - `batch_committed()`: the transaction of the last `apply` committed;
      - `batch_failed()`: it did not (rolled back, or its outcome is unknown);
      - `partitions_changed()`: partitions were assigned or revoked, or the loop re-seeks to the
        stored offsets; another member may have written what this one holds.
    """

    group_id: str
    topics: tuple[str, ...]

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied: ...


def _hook(projection: Projection, name: str) -> Callable[[], None]:
    """The projection's optional notification `name`, or a no-op."""
    found: Callable[[], None] | None = getattr(projection, name, None)
    return found if callable(found) else _nothing


def _nothing() -> None:
    return None


class StaleOffsets(Exception):
    """Another member advanced a partition first, or this member no longer owns it."""


def dead_letter(record: Record, reason: str, group_id: str) -> Message:
    return Message(
        topic=f"{record.topic}.dlq",
        key=record.key,
        value=record.value,
        headers=(
            *record.headers,
            ("dlq.reason", reason.encode()[:4000]),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.group", group_id.encode()),
        ),
    )


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError | ConnectionError)


class ConsumerLoop:
    def __init__(
        self,
        projection: Projection,
        sessions: async_sessionmaker[AsyncSession],
        tables: RuntimeTables,
        event_log: EventLog,
        *,
        max_records: int = 2_000,
        fetch_timeout_ms: int = 200,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        self._projection = projection
        self._sessions = sessions
        self._tables = tables
        self._consumer = event_log.consumer(projection.group_id, projection.topics)
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._on_committed = on_committed
        self._positions: dict[TopicPartition, int | None] = {}
        self._batch_committed = _hook(projection, "batch_committed")
        self._batch_failed = _hook(projection, "batch_failed")
        self._partitions_changed = _hook(projection, "partitions_changed")
        self.applied = 0
        self.dead_lettered = 0
        self.started = asyncio.Event()

    @property
    def group_id(self) -> str:
        return self._projection.group_id

    async def _stored_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        offsets = self._tables.consumer_offsets
        async with self._sessions() as session:
            rows = await session.execute(
                select(offsets.c.topic, offsets.c.partition, offsets.c.next_offset).where(
                    offsets.c.group_id == self.group_id
                )
            )
            return {
                (r.topic, r.partition): r.next_offset for r in rows if (r.topic, r.partition) in partitions
            }

    async def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        self._partitions_changed()
        stored = await self._stored_offsets(partitions)
        for tp in partitions:
            self._positions[tp] = stored.get(tp)
            await self._consumer.seek(tp, stored.get(tp))
        log.info("%s assigned %s", self.group_id, sorted(partitions))
        self.started.set()

    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        self._partitions_changed()
        for tp in partitions:
            self._positions.pop(tp, None)

    async def _reseek(self) -> None:
        await self._on_assigned(list(self._positions))

    async def run(self, stopping: asyncio.Event) -> None:
        await self._consumer.start(self._on_assigned, self._on_revoked)
        backoff = 0.1
        try:
            while not stopping.is_set():
                records = await self._consumer.fetch(self._max_records, self._fetch_timeout_ms)
                if not records:
                    continue
                try:
                    await self.process(records)
                    backoff = 0.1
                except StaleOffsets:
                    await self._reseek()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("%s: transient failure, retrying in %.1fs: %s", self.group_id, backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    await self._reseek()
        finally:
            await self._consumer.stop()

    async def process(self, records: list[Record]) -> None:
        started = time.perf_counter()
        good: list[Delivered] = []
        broken: list[tuple[Record, str]] = []
        for record in records:
            try:
                good.append(Delivered(record, decode_event(record.value)))
            except ContractError as exc:
                broken.append((record, f"contract: {exc}"))
        try:
            await self._commit(records, good, broken)
        except StaleOffsets:
            raise
        except Exception as exc:
            if is_transient(exc) or len(records) == 1:
                raise
            log.warning("%s: batch failed (%s); isolating the record that fails", self.group_id, exc)
            await self._isolate(records)
        metrics.BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)

    async def _isolate(self, records: list[Record]) -> None:
        for record in records:
            try:
                await self.process([record])
            except StaleOffsets:
                raise
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.exception(
                    "%s: dead-lettering %s/%s@%s", self.group_id, *record.topic_partition, record.offset
                )
                await self._commit([record], [], [(record, f"{type(exc).__name__}: {exc}")])

    async def _commit(
        self, records: list[Record], good: list[Delivered], broken: list[tuple[Record, str]]
    ) -> None:
        try:
            async with self._sessions() as session, session.begin():
                advanced = await self._advance_offsets(session, records)
                fresh = await self._first_seen(session, good)
                applied = await self._projection.apply(session, fresh) if fresh else Applied()
                dead = broken + [(d.record, f"rejected: {reason}") for d, reason in applied.rejected]
                await write_outbox(
                    session,
                    self._tables,
                    applied.messages + [dead_letter(r, why, self.group_id) for r, why in dead],
                )
        except BaseException:
            self._batch_failed()
            raise
        self._batch_committed()
        self._positions.update(advanced)
        self.applied += len(fresh) - len(applied.rejected)
        self.dead_lettered += len(dead)
        metrics.RECORDS.labels(self.group_id, "applied").inc(len(fresh) - len(applied.rejected))
        metrics.RECORDS.labels(self.group_id, "duplicate").inc(len(good) - len(fresh))
        metrics.RECORDS.labels(self.group_id, "dead_lettered").inc(len(dead))
        if self._on_committed:
            self._on_committed()

    async def _advance_offsets(
        self, session: AsyncSession, records: list[Record]
    ) -> dict[TopicPartition, int]:
        offsets = self._tables.consumer_offsets
        ends: dict[TopicPartition, int] = {}
        for record in records:
            ends[record.topic_partition] = max(ends.get(record.topic_partition, -1), record.offset + 1)
        for tp, next_offset in ends.items():
            if tp not in self._positions:
                raise StaleOffsets(tp)
            expected = self._positions[tp]
            key = and_(
                offsets.c.group_id == self.group_id, offsets.c.topic == tp[0], offsets.c.partition == tp[1]
            )
            if expected is None:
                statement: Any = (
                    pg_insert(offsets)
                    .values(group_id=self.group_id, topic=tp[0], partition=tp[1], next_offset=next_offset)
                    .on_conflict_do_nothing()
                )
            else:
                statement = (
                    update(offsets)
                    .where(key, offsets.c.next_offset == expected)
                    .values(next_offset=next_offset)
                )
            result = cast(CursorResult[Any], await session.execute(statement))
            if result.rowcount != 1:
                raise StaleOffsets(tp)
        return ends

    async def _first_seen(self, session: AsyncSession, batch: list[Delivered]) -> list[Delivered]:
        unique: dict[tuple[str, str], Delivered] = {}
        for delivered in batch:
            unique.setdefault((delivered.event.tenantid, delivered.event.id), delivered)
        if not unique:
            return []
        # One array parameter per column: no statement to compile per batch, no limit on its size.
        connection = await driver_connection(session)
        inserted = await connection.fetch(
            f'INSERT INTO "{self._tables.schema}".processed_events (tenant_id, event_id)'
            " SELECT * FROM unnest($1::text[], $2::text[])"
            " ON CONFLICT DO NOTHING RETURNING tenant_id, event_id",
            [t for t, _ in unique],
            [i for _, i in unique],
        )
        new = {(r["tenant_id"], r["event_id"]) for r in inserted}
        return [d for key, d in unique.items() if key in new]

    async def lag(self) -> int:
        ends = await self._consumer.end_offsets()
        return sum(max(0, end - (self._positions.get(tp) or 0)) for tp, end in ends.items())
