"""What a service process holds: the database, the log, and its background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.runtime.database import make_engine, make_sessions
from services.runtime.embedded_postgres import start_embedded_postgres
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import EventLog
from services.runtime.memory_log import InProcessLog
from services.runtime.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    event_log: EventLog


@contextlib.asynccontextmanager
async def open_resources(settings: Settings, event_log: EventLog | None = None) -> AsyncIterator[Resources]:
    """The database (external by DATABASE_URL, else embedded) and the log (Kafka, else in-process)."""
    embedded = None
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    else:
        embedded = start_embedded_postgres(settings.data_dir / "postgres")
        url = embedded.url
    engine = make_engine(url, settings.db_pool_size)
    if event_log is None:
        event_log = (
            KafkaLog(
                settings.kafka_bootstrap_servers,
                linger_ms=settings.producer_linger_ms,
                timeout_s=settings.producer_timeout_s,
            )
            if settings.kafka_bootstrap_servers
            else InProcessLog()
        )
    await event_log.start()
    try:
        yield Resources(settings, engine, make_sessions(engine), event_log)
    finally:
        await event_log.stop()
        await engine.dispose()
        if embedded is not None:
            embedded.stop()


@dataclass
class BackgroundTasks:
    """Long-running loops of a service; a loop that dies is logged and stops the others."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._guard(name, loop), name=name)
        self.tasks.append(task)

    async def _guard(self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        try:
            await loop(self.stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped on an error", name)
            self.stopping.set()
            raise

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping.set()
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout_s) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.tasks.clear()
