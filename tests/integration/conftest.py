"""Integration fixtures: one real Kafka broker (KRaft) and one real PostgreSQL per test session,
a fresh database per service stack, and the ledger served over real HTTP on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from contracts.topics import catalogue
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime.auth import create_key
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from services.runtime.kafka_log import KafkaLog
from services.runtime.process import Resources, open_resources
from services.runtime.settings import Settings
from tests.infra.kafka_broker import KafkaBroker, free_ports, start_kafka_broker
from tests.infra.postgres_server import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    broker = start_kafka_broker()
    asyncio.run(ensure_topics(broker.bootstrap_servers, catalogue()))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def new_database(postgres: PostgresServer) -> Callable[[], Awaitable[str]]:
    """A fresh, empty database on the session's server; returns its SQLAlchemy URL."""

    async def create() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(sqlalchemy_to_libpq(postgres.url))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        base, _, query = postgres.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    return create


def settings_for(database_url: str, kafka: KafkaBroker, **overrides: object) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        consumer_fetch_timeout_ms=50,
        outbox_poll_ms=20,
        **overrides,  # type: ignore[arg-type]
    )


@dataclass
class LedgerStack:
    service: LedgerService
    resources: Resources
    url: str
    api_key: str
    tenant: str

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": key or self.api_key}, timeout=30)

    async def caught_up(self, timeout_s: float = 60) -> None:
        """Wait until every accepted event is published from the outbox and the ledger consumer has
        applied everything in its topics."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await asyncio.wait_for(self.service.consumer.started.wait(), timeout_s)
        while await outbox_rows(self.resources) > 0 or await self.service.consumer.lag() > 0:
            if loop.time() > deadline:
                raise TimeoutError("the ledger did not catch up")
            await asyncio.sleep(0.02)


async def outbox_rows(resources: Resources) -> int:
    async with resources.sessions() as session:
        return await session.scalar(select(func.count()).select_from(store.runtime.outbox)) or 0


@contextlib.asynccontextmanager
async def ledger_stack(settings: Settings, tenant: str) -> AsyncIterator[LedgerStack]:
    async with open_resources(settings) as resources:
        service = LedgerService(resources)
        await service.migrate()
        async with resources.sessions() as session, session.begin():
            key = await create_key(session, store.runtime, tenant, "test-erp", "erp")
        (port,) = free_ports(1)
        server = uvicorn.Server(
            uvicorn.Config(service.app(), host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        try:
            yield LedgerStack(service, resources, f"http://127.0.0.1:{port}", key, tenant)
        finally:
            server.should_exit = True
            await serving


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def kafka_log(kafka: KafkaBroker) -> AsyncIterator[KafkaLog]:
    log = KafkaLog(kafka.bootstrap_servers)
    await log.start()
    yield log
    await log.stop()
