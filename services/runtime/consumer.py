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
A batch that fails on a transient error (database, broker or connection) is retried from the stored
offsets with back-off, as long as the outage lasts; one that fails otherwise is replayed record by
record, and a record that fails alone a few times goes to the dead-letter topic with the reason,
and the rest are applied. The loop never ends on a record: only on `stopping`, or on an error of its
own (then its supervisor starts it again and readiness is false meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope
from contracts.registry import ContractError, decode_event
from services.runtime import metrics
from services.runtime.database import driver_connection
from services.runtime.log import EventLog, Message, Record, TopicPartition
from services.runtime.logging_setup import bind, bound
from services.runtime.outbox import write_outbox
from services.runtime.supervisor import Health
from services.runtime.tables import RuntimeTables
from services.runtime.tracing import carry_causes, current_traceparent, links_of, traceparent_of, tracer
from services.runtime.watermark import BusinessDayGate

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
        stored offsets; another member may have written what this one holds;
      - `async dead_lettered(session, dead)`: these records, with the reasons, go to the dead-letter
        topic in this batch's transaction (a service that reports outcomes records them).
    and the attribute `business_clock`, the clock topic of a projection that decides on business
    days: each of its records waits for the facts published before it (`watermark.py`).
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


def _advance_offsets_sql(schema: str) -> str:
    """$1 the group; per partition ($2 topics, $3 partitions): $4 the offset this member expects
    stored (NULL: none yet) and $5 the new one. Returns the partitions it moved."""
    table = f'"{schema}".consumer_offsets'
    return (
        "WITH wanted AS (SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])"
        " AS w(topic, partition, expected, next_offset)),"
        f" updated AS (UPDATE {table} AS o SET next_offset = w.next_offset, updated_at = now()"
        " FROM wanted AS w WHERE o.group_id = $1 AND o.topic = w.topic AND o.partition = w.partition"
        " AND o.next_offset = w.expected RETURNING o.topic, o.partition),"
        f" inserted AS (INSERT INTO {table} (group_id, topic, partition, next_offset)"
        " SELECT $1, topic, partition, next_offset FROM wanted WHERE expected IS NULL"
        " ON CONFLICT DO NOTHING RETURNING topic, partition)"
        " SELECT topic, partition FROM updated UNION ALL SELECT topic, partition FROM inserted"
    )


class StaleOffsets(Exception):
    """Another member advanced a partition first, or this member no longer owns it."""


class StaleState(StaleOffsets):
    """A state row changed between this batch's read and its write (another member wrote it, as a
    rebalance hands partitions over): the batch is rolled back and read again from stored offsets."""


ATTEMPTS_BEFORE_DEAD_LETTER = 3
"""Times a record that fails alone (not on a transient error) is tried before it is dead-lettered."""

LAG_EVERY_S = 1.0
"""How often the loop measures its lag for the metrics (a round trip to the log)."""
LAG_TIMEOUT_S = 2.0


def reason_class(reason: str) -> str:
    """contract, rejected or failed: the low-cardinality class of a dead letter's reason."""
    head = reason.partition(":")[0]
    return head if head in ("contract", "rejected") else "failed"


def dead_letter(record: Record, reason: str, group_id: str, *, keep_headers: bool = True) -> Message:
    return Message(
        topic=f"{record.topic}.dlq",
        key=record.key,
        value=record.value,
        headers=(
            *(record.headers if keep_headers else ()),
            ("dlq.reason", printable(reason).encode()[:4000]),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.group", group_id.encode()),
        ),
    )


def printable(text: str) -> str:
    """The text without NUL and other control characters (a reason quotes what it refused)."""
    return "".join(c if c.isprintable() or c in "\t\n" else f"\\x{ord(c):02x}" for c in text)


_TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_transient(exc: BaseException) -> bool:
    """An outage or a race worth waiting out, as opposed to a record the service cannot apply."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig.__cause__ or exc.orig if exc.orig is not None else exc
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaConnectionError | KafkaTimeoutError)
    return isinstance(exc, _TRANSIENT_ERRORS)


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
        self._advance_statement = _advance_offsets_sql(tables.schema)
        self._consumer = event_log.consumer(projection.group_id, projection.topics)
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._on_committed = on_committed
        self._positions: dict[TopicPartition, int | None] = {}
        """Where each assigned partition was seeked to (then advanced by each commit): only these
        partitions may be committed."""
        self._assigned: set[TopicPartition] = set()
        self._seek_pending = False
        self._failures: dict[tuple[TopicPartition, int], int] = {}
        self._batch_committed = _hook(projection, "batch_committed")
        self._batch_failed = _hook(projection, "batch_failed")
        self._partitions_changed = _hook(projection, "partitions_changed")
        self._dead_lettered: Callable[[AsyncSession, list[tuple[Record, str]]], Awaitable[None]] | None = (
            getattr(projection, "dead_lettered", None)
        )
        clock: str | None = getattr(projection, "business_clock", None)
        self._clock_topic = clock
        self._lag_due = 0.0
        self._gate = (
            BusinessDayGate(self.group_id, clock, self._consumer, self._stored_offsets) if clock else None
        )
        self.applied = 0
        self.dead_lettered = 0
        self.started = asyncio.Event()

    @property
    def group_id(self) -> str:
        return self._projection.group_id

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._projection.topics)

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    @property
    def tables(self) -> RuntimeTables:
        """Where this loop stores its offsets."""
        return self._tables

    async def _stored_offsets(
        self, partitions: list[TopicPartition] | None = None
    ) -> dict[TopicPartition, int | None]:
        """The group's stored offsets of the partitions (of all its partitions by default, whichever
        member stored them)."""
        offsets = self._tables.consumer_offsets
        async with self._sessions() as session:
            rows = await session.execute(
                select(offsets.c.topic, offsets.c.partition, offsets.c.next_offset).where(
                    offsets.c.group_id == self.group_id
                )
            )
            return {
                (r.topic, r.partition): r.next_offset
                for r in rows
                if partitions is None or (r.topic, r.partition) in partitions
            }

    async def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        self._assigned.update(partitions)
        try:
            await self._seek_to_stored(partitions)
        except Exception as exc:
            # Called by the client's group coordinator, which would only log the error and go on
            # fetching from the wrong place: seek before the next batch instead.
            log.warning("%s: could not seek to the stored offsets (%s); will retry", self.group_id, exc)
            self._seek_pending = True
            return
        log.info("%s assigned %s", self.group_id, sorted(partitions))
        self.started.set()

    async def _seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        self._partitions_changed()
        for tp in partitions:
            self._positions.pop(tp, None)
        stored = await self._stored_offsets(partitions)
        for tp in partitions:
            await self._consumer.seek(tp, stored.get(tp))
            self._positions[tp] = stored.get(tp)

    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        self._partitions_changed()
        if self._gate is not None:
            self._gate.forget(partitions)
        for tp in partitions:
            self._positions.pop(tp, None)
            self._assigned.discard(tp)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(self.group_id, tp[0], str(tp[1]))

    async def _reseek(self) -> None:
        self._seek_pending = True
        await self._seek_to_stored(sorted(self._assigned))
        self._seek_pending = False
        self.started.set()

    async def run(self, stopping: asyncio.Event, health: Health | None = None) -> None:
        health = health or Health(running=True)
        await self._consumer.start(self._on_assigned, self._on_revoked)
        backoff = 0.1
        try:
            while not stopping.is_set():
                try:
                    if self._seek_pending:
                        await self._reseek()
                    if self._gate is not None:
                        await self._gate.release()
                    records = await self._consumer.fetch(self._max_records, self._fetch_timeout_ms)
                    if records:
                        await self.process(records)
                    await self._measure_lag()
                    backoff = 0.1
                    health.recover()
                except StaleOffsets:
                    self._seek_pending = True
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("%s: transient failure, retrying in %.1fs: %s", self.group_id, backoff, exc)
                    health.fail(f"waiting out {type(exc).__name__}: {exc}")
                    self._seek_pending = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            await self._consumer.stop()

    async def process(self, records: list[Record]) -> None:
        started = time.perf_counter()
        records = self._not_yet_applied(records)
        if self._gate is not None:
            records = await self._gate.admit(records)
        if not records:
            return
        with (
            tracer.start_as_current_span(
                f"{self.group_id} apply",
                links=links_of(records),
                attributes={
                    "messaging.consumer.group.name": self.group_id,
                    "messaging.batch.message_count": len(records),
                },
            ),
            bound(group=self.group_id, **_key_fields(records)),
        ):
            await self._process(records)
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.labels(self.group_id).observe(elapsed)
        metrics.BATCH_RECORDS.labels(self.group_id).observe(len(records))
        if self._clock_topic is not None and any(r.topic == self._clock_topic for r in records):
            metrics.BUSINESS_DAY_SECONDS.labels(self._tables.schema).observe(elapsed)

    async def _process(self, records: list[Record]) -> None:
        good: list[Delivered] = []
        broken: list[tuple[Record, str]] = []
        for record in records:
            try:
                good.append(Delivered(record, decode_event(record.value)))
            except ContractError as exc:
                broken.append((record, f"contract: {exc}"))
        if len(good) == 1:
            bind(record=good[0].event.id)
        try:
            await self._commit(records, good, broken)
        except StaleOffsets:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(records) == 1:
                await self._retry_or_dead_letter(records[0], exc)
            else:
                # Halves, in order, until the record that fails is alone: a poison record in a
                # batch of n costs about 2 log2(n) attempts, not n transactions of one record.
                log.warning("%s: batch failed (%s); isolating the record that fails", self.group_id, exc)
                half = len(records) // 2
                for part in (records[:half], records[half:]):
                    await self.process(part)

    def _not_yet_applied(self, records: list[Record]) -> list[Record]:
        """The records at or past the stored position of their partition (a fetch that raced a seek
        may return records this group already applied)."""
        positions = self._positions
        return [r for r in records if (positions.get(r.topic_partition) or 0) <= r.offset]

    async def _retry_or_dead_letter(self, record: Record, exc: Exception) -> None:
        """A record that failed alone: raise (to be fetched and tried again) until it has failed
        `ATTEMPTS_BEFORE_DEAD_LETTER` times, then dead-letter it with the reason."""
        where = (record.topic_partition, record.offset)
        failures = self._failures[where] = self._failures.get(where, 0) + 1
        if failures < ATTEMPTS_BEFORE_DEAD_LETTER:
            log.warning(
                "%s: %s/%s@%s failed (%d of %d): %s",
                self.group_id,
                *record.topic_partition,
                record.offset,
                failures,
                ATTEMPTS_BEFORE_DEAD_LETTER,
                exc,
            )
            raise StaleOffsets(record.topic_partition) from exc
        del self._failures[where]
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "%s: dead-lettering %s/%s@%s: %s", self.group_id, *record.topic_partition, record.offset, reason
        )
        try:
            await self._commit([record], [], [(record, reason)])
        except Exception as again:
            if is_transient(again) or isinstance(again, StaleOffsets):
                raise
            # Its headers may hold what the outbox cannot store: the record and the reason alone.
            await self._commit([record], [], [(record, reason)], keep_headers=False)

    async def _commit(
        self,
        records: list[Record],
        good: list[Delivered],
        broken: list[tuple[Record, str]],
        *,
        keep_headers: bool = True,
    ) -> None:
        try:
            async with self._sessions() as session, session.begin():
                advanced = await self._advance_offsets(session, records)
                fresh = await self._first_seen(session, good)
                applied = await self._projection.apply(session, fresh) if fresh else Applied()
                dead = broken + [(d.record, f"rejected: {reason}") for d, reason in applied.rejected]
                if dead and self._dead_lettered is not None:
                    await self._dead_lettered(session, dead)
                causes = {(d.event.tenantid, d.event.id): p for d in good if (p := traceparent_of(d.record))}
                produced = carry_causes(applied.messages, causes, len(good), current_traceparent())
                await write_outbox(
                    session,
                    self._tables,
                    produced
                    + [dead_letter(r, why, self.group_id, keep_headers=keep_headers) for r, why in dead],
                )
        except BaseException:
            self._batch_failed()
            raise
        self._batch_committed()
        self._positions.update(advanced)
        if self._failures:
            for record in records:
                self._failures.pop((record.topic_partition, record.offset), None)
        self.applied += len(fresh) - len(applied.rejected)
        self.dead_lettered += len(dead)
        self._count(good, fresh, dead)
        log.info(
            "%s applied %d records (%d duplicates, %d dead letters)",
            self.group_id,
            len(fresh) - len(applied.rejected),
            len(good) - len(fresh),
            len(dead),
        )
        if self._on_committed:
            self._on_committed()

    async def _advance_offsets(
        self, session: AsyncSession, records: list[Record]
    ) -> dict[TopicPartition, int]:
        """Move each partition's stored offset past the batch, on the condition that it is still
        where this member last left it (a partition seen for the first time: that it has none yet),
        in one statement whatever the number of partitions; `StaleOffsets` names one that is not."""
        ends: dict[TopicPartition, int] = {}
        for record in records:
            ends[record.topic_partition] = max(ends.get(record.topic_partition, -1), record.offset + 1)
        for tp in ends:
            if tp not in self._positions:
                raise StaleOffsets(tp)
        if not ends:
            return ends
        partitions = sorted(ends)
        connection = await driver_connection(session)
        moved = await connection.fetch(
            self._advance_statement,
            self.group_id,
            [topic for topic, _ in partitions],
            [partition for _, partition in partitions],
            [self._positions[tp] for tp in partitions],
            [ends[tp] for tp in partitions],
        )
        done = {(row["topic"], row["partition"]) for row in moved}
        for tp in partitions:
            if tp not in done:
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
        new = set(map(tuple, inserted))
        return [d for key, d in unique.items() if key in new]

    def _count(self, good: list[Delivered], fresh: list[Delivered], dead: list[tuple[Record, str]]) -> None:
        # One increment per topic and outcome, not per record: a labelled metric's lookup is costly.
        group = self.group_id
        dead_by = Counter((r.topic, reason_class(why)) for r, why in dead)
        taken = Counter(d.record.topic for d in fresh)
        duplicates = Counter(d.record.topic for d in good) - taken
        for (topic, reason), count in dead_by.items():
            if reason == "rejected":  # applied by the projection, then refused by it
                taken[topic] -= count
        for topic, count in taken.items():
            if count:
                metrics.RECORDS.labels(group, topic, "applied").inc(count)
        for topic, count in duplicates.items():
            metrics.RECORDS.labels(group, topic, "duplicate").inc(count)
        for (topic, reason), count in dead_by.items():
            metrics.RECORDS.labels(group, topic, "dead_lettered").inc(count)
            metrics.DEAD_LETTERS.labels(group, topic, reason).inc(count)

    async def lag_by_partition(self) -> dict[TopicPartition, int]:
        """Records not yet applied in each partition this member holds; sets the lag gauges."""
        ends = await self._consumer.end_offsets()
        lags = {tp: max(0, end - (self._positions.get(tp) or 0)) for tp, end in ends.items()}
        for (topic, partition), records in lags.items():
            metrics.LAG.labels(self.group_id, topic, str(partition)).set(records)
        return lags

    async def lag(self) -> int:
        return sum((await self.lag_by_partition()).values())

    async def _measure_lag(self) -> None:
        """The lag gauges, at most every `LAG_EVERY_S`; a log that does not answer in time leaves
        them as they were (readiness reports it)."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_EVERY_S
        try:
            await asyncio.wait_for(self.lag_by_partition(), LAG_TIMEOUT_S)
        except Exception as exc:
            log.debug("%s: lag not measured: %s", self.group_id, exc)


def _key_fields(records: Sequence[Record]) -> dict[str, object]:
    """The tenant and debtor a batch is about, from the records' keys (`tenant:debtor`, or the tenant
    alone), where it is about one; the number of debtors otherwise."""
    keys = {r.key for r in records}
    tenants = {k.partition(b":")[0] for k in keys if k}
    fields: dict[str, object] = {}
    if len(tenants) == 1:
        fields["tenant"] = next(iter(tenants)).decode(errors="replace")
    debtors = {k for k in keys if k and b":" in k}
    if len(debtors) == 1:
        fields["debtor"] = next(iter(debtors)).partition(b":")[2].decode(errors="replace")
    elif debtors:
        fields["debtors"] = len(debtors)
    return fields
