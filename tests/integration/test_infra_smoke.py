"""The test infrastructure itself: a real Kafka broker and a real PostgreSQL start, answer and stop."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.topics import JOURNAL, catalogue
from services.runtime.kafka_admin import ensure_topics
from tests.infra import KafkaBroker, PostgresServer, start_kafka_broker, start_postgres

pytestmark = pytest.mark.integration

RECORDS = 1000


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaBroker]:
    with start_kafka_broker() as broker:
        yield broker


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


async def test_topics_are_created_idempotently(kafka: KafkaBroker) -> None:
    await ensure_topics(kafka.bootstrap_servers, catalogue())  # kafka.sh start created them already
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([name for name, _, _ in catalogue()])
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {n: p for n, p, _ in catalogue()}


async def test_idempotent_producer_round_trip(kafka: KafkaBroker) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        futures = [
            await producer.send(JOURNAL.name, key=f"t1:d{i % 37}".encode(), value=str(i).encode())
            for i in range(RECORDS)
        ]
        delivered = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len({(m.partition, m.offset) for m in delivered}) == RECORDS

    consumer = AIOKafkaConsumer(
        JOURNAL.name,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"smoke-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes, int]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < RECORDS:
                batches = await consumer.getmany(timeout_ms=1000)
                received += [(r.key, int(r.value)) for records in batches.values() for r in records]
    finally:
        await consumer.stop()

    assert sorted(value for _, value in received) == list(range(RECORDS))
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for key, value in received:
        by_key[key].append(value)
    assert all(values == sorted(values) for values in by_key.values()), "one key, one partition, in order"


async def test_postgres_answers(postgres: PostgresServer) -> None:
    engine = create_async_engine(postgres.url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
    asyncpg = pytest.importorskip("asyncpg")  # untyped; importorskip keeps mypy quiet without an ignore
    connection = await asyncpg.connect(postgres.dsn)
    try:
        assert await connection.fetchval("select 1") == 1
    finally:
        await connection.close()
