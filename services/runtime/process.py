"""What a service process holds: the database and the log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.runtime.database import make_engine, make_sessions
from services.runtime.embedded_postgres import (
    find_embedded_postgres,
    sqlalchemy_to_libpq,
    start_embedded_postgres,
)
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import EventLog
from services.runtime.postgres_log import PostgresLog
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
    """The database (external by DATABASE_URL, else embedded) and the log (Kafka, else the PostgreSQL
    log in that database, which outlives the process as the consumers' stored offsets do)."""
    with _database_url(settings) as url:
        engine = make_engine(url, settings.db_pool_size)
        try:
            event_log = event_log or _default_log(settings, url)
            await event_log.start()
            try:
                yield Resources(settings, engine, make_sessions(engine), event_log)
            finally:
                await event_log.stop()
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def open_log(settings: Settings) -> AsyncIterator[EventLog]:
    """The log alone, for a command that only publishes: Kafka, or with none configured the PostgreSQL
    log in the services' database (the embedded server of the data dir, running or not, or
    DATABASE_URL)."""
    if not settings.kafka_bootstrap_servers:
        async with open_resources(settings) as resources:
            yield resources.event_log
        return
    log = KafkaLog(settings.kafka_bootstrap_servers, timeout_s=settings.producer_timeout_s)
    await log.start()
    try:
        yield log
    finally:
        await log.stop()


@contextlib.contextmanager
def _database_url(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, or the embedded server of the data dir: the running one, left running at exit (a
    CLI command beside a serving process), else one started here and stopped at exit."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    data_dir = settings.data_dir / "postgres"
    running = find_embedded_postgres(data_dir)
    if running is not None:
        yield running.url
        return
    started = start_embedded_postgres(data_dir)
    try:
        yield started.url
    finally:
        started.stop()


def _default_log(settings: Settings, database_url: str) -> EventLog:
    if settings.kafka_bootstrap_servers:
        return KafkaLog(
            settings.kafka_bootstrap_servers,
            linger_ms=settings.producer_linger_ms,
            timeout_s=settings.producer_timeout_s,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
    return PostgresLog(
        sqlalchemy_to_libpq(database_url),
        pool_size=settings.db_pool_size,
        timeout_s=settings.producer_timeout_s,
    )
