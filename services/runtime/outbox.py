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
import zlib
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import BigInteger, any_, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.database import driver_connection
from services.runtime.log import EventLog, Message
from services.runtime.supervisor import Health
from services.runtime.tables import RuntimeTables

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
    """Append the messages to the outbox in the session's transaction (COPY: a batch of any size)."""
    if not messages:
        return
    connection = await driver_connection(session)
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
    return Message(
        row.topic,
        row.key,
        row.value,
        tuple((k, v.encode()) for k, v in row.headers),
        timestamp_ms=int(row.created_at.timestamp() * 1000),
    )


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
        self.wake = asyncio.Event()
        self.published = 0

    async def publish_once(self) -> int:
        outbox = self._tables.outbox
        async with self._sessions() as session, session.begin():
            locked = await session.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key)))
            if not locked:
                return 0
            rows = (
                await session.execute(
                    select(
                        outbox.c.id,
                        outbox.c.topic,
                        outbox.c.key,
                        outbox.c.value,
                        outbox.c.headers,
                        outbox.c.created_at,
                    )
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                )
            ).all()
            if not rows:
                return 0
            await self._log.publish([_message(r) for r in rows])
            published = bindparam("published", [r.id for r in rows], type_=ARRAY(BigInteger))
            await session.execute(delete(outbox).where(outbox.c.id == any_(published)))
        self.published += len(rows)
        return len(rows)

    async def run(self, stopping: asyncio.Event, health: Health | None = None) -> None:
        health = health or Health(running=True)
        backoff = 0.2
        while not stopping.is_set():
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
