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
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts.topics import catalogue
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from services.runtime.kafka_log import KafkaLog
from services.runtime.process import Resources
from services.runtime.service import Service
from services.runtime.settings import Settings
from services.stack import Stack, open_stack, serving
from tests.infra.kafka_broker import KafkaBroker, start_kafka_broker
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


_log_start: dict[str, dict[tuple[str, int], int]] = {}
"""Per broker: where every topic ended when the running test began."""
_probes: dict[str, AIOKafkaConsumer] = {}
"""Per broker: a consumer without a group, kept for the session, that reads end offsets."""


async def log_end_offsets(bootstrap_servers: str) -> dict[tuple[str, int], int]:
    """Where every topic of the catalogue ends now."""
    probe = _probes.get(bootstrap_servers)
    if probe is None:
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
        await probe.start()
        _probes[bootstrap_servers] = probe
    partitions = [TopicPartition(name, p) for name, count, _ in catalogue() for p in range(count)]
    ends = await probe.end_offsets(partitions)
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


@pytest.fixture(scope="session")
async def offset_probes() -> AsyncIterator[None]:
    yield
    for probe in _probes.values():
        await probe.stop()
    _probes.clear()


@pytest.fixture(autouse=True)
async def log_start(request: pytest.FixtureRequest, offset_probes: None) -> None:
    """Record where the session broker's topics end as a test begins: services the test starts on a
    fresh database begin there (`begin_at_test_start`) instead of replaying what earlier tests posted,
    which would make each test slower than the one before."""
    if "kafka" not in request.fixturenames:
        return
    broker: KafkaBroker = request.getfixturevalue("kafka")
    _log_start[broker.bootstrap_servers] = await log_end_offsets(broker.bootstrap_servers)


async def begin_at_test_start(resources: Resources, services: list[Service]) -> None:
    """Store the test's starting offsets as the services' consumed offsets, where none are stored yet
    (a restarted service on the same database goes on from its own)."""
    start = _log_start.get(resources.settings.kafka_bootstrap_servers or "")
    if not start:
        return
    async with resources.sessions() as session, session.begin():
        for service in services:
            loop = service.consumer
            rows = [
                {"group_id": loop.group_id, "topic": topic, "partition": partition, "next_offset": end}
                for (topic, partition), end in start.items()
                if topic in loop.topics
            ]
            if rows:
                insert = pg_insert(loop.tables.consumer_offsets).values(rows)
                await session.execute(insert.on_conflict_do_nothing())


async def from_test_start(stack: Stack) -> None:
    """`begin_at_test_start` for every service of a stack (its `prepare`)."""
    await begin_at_test_start(stack.resources, list(stack.services.values()))


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
        kafka_fetch_max_wait_ms=10,
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
    async with open_stack(settings, ["ledger"], prepare=from_test_start) as stack:
        key = await stack.create_key(tenant, "test-erp", "erp", on=["ledger"])
        async with serving(stack.app("ledger")) as url:
            yield LedgerStack(stack.ledger, stack.resources, url, key, tenant)


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def kafka_log(kafka: KafkaBroker) -> AsyncIterator[KafkaLog]:
    log = KafkaLog(kafka.bootstrap_servers)
    await log.start()
    yield log
    await log.stop()
