"""The transactional outbox: rows written in a consumer's or request's transaction, published by a relay.

The ledger's API writes every accepted ERP event here in the transaction that claims its id, so a 202
is durable while the broker is away; consumers write the records they emit here in the transaction
of their batch. Rows carry the time they were written (`created_at`), published as the record's
timestamp: when Arrears accepted it, however late the relay publishes it.

Commit order: the relay holds a per-service advisory lock inside its transaction (one relay publishes
at a time, which keeps per-key order), reads the oldest rows, publishes them with the idempotent
producer and waits for every acknowledgement, then deletes them and commits. A crash between the
acknowledgement and the commit publishes those rows again; consumers drop the repeats by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime import metrics
from services.runtime.database import driver_connection
from services.runtime.log import EventLog, Message
from services.runtime.supervisor import Health
from services.runtime.tables import RuntimeTables
from services.runtime.tracing import current_traceparent, with_traceparent

log = logging.getLogger(__name__)


def outbox_rows(messages: Sequence[Message]) -> list[dict[str, object]]:
    return [
        {
            "topic": m.topic,
            "key": m.key,
            "value": m.value,
            # JSONB holds no NUL character.
            "headers": [[k, v.decode("utf-8", "replace").replace("\x00", "\ufffd")] for k, v in m.headers],
        }
        for m in messages
    ]


_OUTBOX_COLUMNS = ("topic", "key", "value", "headers")


async def write_outbox(session: AsyncSession, tables: RuntimeTables, messages: Sequence[Message]) -> None:
    """Append the messages to the outbox in the session's transaction (COPY: a batch of any size).
    A message without a trace context gets the current span's (an API request's, a consumer batch's)."""
    if not messages:
        return
    traceparent = current_traceparent()
    if traceparent is not None:
        messages = [with_traceparent(m, traceparent) for m in messages]
    await copy_to_outbox(await driver_connection(session), tables, messages)


async def copy_to_outbox(connection: Any, tables: RuntimeTables, messages: Sequence[Message]) -> None:
    """Append the messages to the outbox in the transaction of a driver (asyncpg) connection."""
    if not messages:
        return
    await connection.copy_records_to_table(
        tables.outbox.name,
        schema_name=tables.schema,
        columns=_OUTBOX_COLUMNS,
        records=[
            (r["topic"], r["key"], r["value"], orjson.dumps(r["headers"]).decode())
            for r in outbox_rows(messages)
        ],
    )


def _message(row: Any) -> Message:
    """A row as the relay reads it (`OutboxRelay._read`): the headers as JSON text, most often none."""
    topic, key, value, headers, created_at = row[1:]
    return Message(
        topic,
        key,
        value,
        () if headers == "[]" else tuple((k, v.encode()) for k, v in orjson.loads(headers)),
        timestamp_ms=int(created_at.timestamp() * 1000),
    )


BACKLOG_EVERY_S = 1.0
"""How often the relay counts its outbox for the metrics."""

COUNTED_IN_ORDER = 50_000
"""The backlog is counted in id order through the primary key up to this many rows; a larger one is
counted by reading the whole table."""

WHOLE_PROBE_EVERY_S = 1.0
"""How often the relay's idle poll looks at the whole outbox rather than past what it published."""


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: RuntimeTables,
        event_log: EventLog,
        *,
        batch_size: int = 5_000,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self._tables = tables
        self._log = event_log
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lock_key = zlib.crc32(f"outbox:{tables.schema}".encode())
        # Through the driver: the relay reads thousands of rows a second. By the primary key: a table
        # scan would wade through the rows published and deleted since the last vacuum.
        table = f'"{tables.schema}".{tables.outbox.name}'
        self._any_waiting = f"SELECT id FROM {table} WHERE id > $1 ORDER BY id LIMIT 1"
        self._read = (
            f"SELECT id, topic, key, value, headers::text, created_at FROM {table} ORDER BY id LIMIT $1"
        )
        self._delete = f"DELETE FROM {table} WHERE id = ANY($1::bigint[])"
        backlog = "count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8"
        self._count_in_order = (
            f"SELECT {backlog} FROM (SELECT created_at FROM {table} ORDER BY id LIMIT $1) AS waiting"
        )
        self._count_whole = f"SELECT {backlog} FROM {table}"
        self.wake = asyncio.Event()
        self.published = 0
        self._backlog_due = 0.0
        self._published_up_to = 0
        """The highest id the relay has published (and deleted)."""
        self._whole_probe_due = 0.0

    async def _anything_waiting(self) -> bool:
        """Whether the outbox has a row, in one statement outside a transaction: most polls of an
        idle relay find nothing, and this is all they cost.

        Rows published are deleted, but their index entries stay until no transaction is older than
        the delete (a business day's batch stays open while its slices commit), and a scan from the
        start of the index visits every one of them. So a poll looks past the rows the relay has
        published, and only once a second at the whole outbox, for a row that committed after rows
        with higher ids were published. The read itself (`publish_once`) always takes the outbox
        from its first row, in id order, so what is published, and in which order, is as before."""
        floor = self._published_up_to
        if time.monotonic() >= self._whole_probe_due:
            self._whole_probe_due = time.monotonic() + WHOLE_PROBE_EVERY_S
            floor = 0
        async with self._sessions() as session:
            connection = await session.connection()
            raw: Any = (await connection.get_raw_connection()).driver_connection
            return await raw.fetchval(self._any_waiting, floor) is not None

    async def publish_once(self) -> int:
        if not await self._anything_waiting():
            return 0
        async with self._sessions() as session, session.begin():
            connection = await driver_connection(session)
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return 0
            rows = await connection.fetch(self._read, self._batch_size)
            if not rows:
                return 0
            messages = [_message(r) for r in rows]
            await self._log.publish(messages)
            await connection.execute(self._delete, [r[0] for r in rows])
        self._published_up_to = max(self._published_up_to, rows[-1][0])  # published and deleted
        self.published += len(rows)
        for topic, count in Counter(m.topic for m in messages).items():
            metrics.PRODUCED.labels(self._tables.schema, topic).inc(count)
        return len(rows)

    async def measure_backlog(self) -> tuple[int, float]:
        """Rows waiting in the outbox and the age in seconds of the oldest; sets the gauges.

        Counted through the primary key from the first row: the table's pages still hold the rows
        published and deleted since its last vacuum (at full size 250 MB of them, behind a few
        thousand rows waiting), and a count of the whole table, every second in every process of a
        busy service, read them all. The planner, which sees only the pages, would scan them, so
        it is told not to. Only a backlog of `COUNTED_IN_ORDER` rows or more is counted whole."""
        async with self._sessions() as session, session.begin():
            connection = await driver_connection(session)
            await connection.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            rows, age = await connection.fetchrow(self._count_in_order, COUNTED_IN_ORDER)
            if rows >= COUNTED_IN_ORDER:
                await connection.execute("SET LOCAL enable_seqscan = on")
                rows, age = await connection.fetchrow(self._count_whole)
        age = max(0.0, age)
        metrics.OUTBOX_ROWS.labels(self._tables.schema).set(rows)
        metrics.OUTBOX_OLDEST_SECONDS.labels(self._tables.schema).set(age)
        return rows, age

    async def _measure_now_and_then(self) -> None:
        """The backlog gauges, every `BACKLOG_EVERY_S`, also while publishing fails (when they
        matter most); a database that does not answer leaves them as they were."""
        if time.monotonic() < self._backlog_due:
            return
        self._backlog_due = time.monotonic() + BACKLOG_EVERY_S
        try:
            await asyncio.wait_for(self.measure_backlog(), 2.0)
        except Exception as exc:
            log.debug("outbox backlog not measured: %s", exc)

    async def run(self, stopping: asyncio.Event, health: Health | None = None) -> None:
        health = health or Health(running=True)
        backoff = 0.2
        while not stopping.is_set():
            await self._measure_now_and_then()
            try:
                published = await self.publish_once()
                backoff = 0.2
                health.recover()
            except Exception as exc:
                log.warning("outbox relay failed, retrying in %.1f s: %s", backoff, exc)
                health.fail(f"cannot publish: {type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published < self._batch_size:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._poll_interval_s)
