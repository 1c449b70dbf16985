"""The outbox relay publishes every committed row, also one whose transaction commits after rows with
higher ids were already read and published (the relay's idle poll looks past what it read)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY

from contracts.topics import JOURNAL
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime import outbox
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from services.runtime.outbox import WHOLE_PROBE_EVERY_S, OutboxRelay, copy_to_outbox
from services.runtime.process import open_resources
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import settings_for

pytestmark = pytest.mark.integration


def _message(marker: str, name: str) -> Message:
    value = f'{{"marker":"{marker}","name":"{name}"}}'.encode()
    return Message(JOURNAL.name, f"{marker}:{name}".encode(), value)


async def _published(kafka_log: KafkaLog, marker: str) -> list[str]:
    records = await kafka_log.read_all(JOURNAL.name)
    return [r.key.decode().split(":", 1)[1] for r in records if r.key and r.key.startswith(marker.encode())]


async def _until_published(kafka_log: KafkaLog, marker: str, names: set[str], timeout_s: float) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        seen = await _published(kafka_log, marker)
        if names <= set(seen) or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def test_a_row_committed_after_later_rows_were_published_is_published_too(
    new_database: Callable[[], Awaitable[str]], kafka: KafkaBroker, kafka_log: KafkaLog
) -> None:
    url = await new_database()
    marker = uuid.uuid4().hex
    async with open_resources(settings_for(url, kafka)) as resources:
        await LedgerService(resources).migrate()
        relay = OutboxRelay(resources.sessions, store.runtime, resources.event_log, poll_interval_s=0.02)
        stopping = asyncio.Event()
        relaying = asyncio.create_task(relay.run(stopping))
        slow = await asyncpg.connect(sqlalchemy_to_libpq(url))
        fast = await asyncpg.connect(sqlalchemy_to_libpq(url))
        try:
            late = slow.transaction()
            await late.start()
            await copy_to_outbox(slow, store.runtime, [_message(marker, "late")])  # the lower id
            async with fast.transaction():
                await copy_to_outbox(fast, store.runtime, [_message(marker, "early")])
            assert await _until_published(kafka_log, marker, {"early"}, 30) == ["early"]
            # The relay has published past the uncommitted row; nothing else is written from here on.
            await asyncio.sleep(3 * WHOLE_PROBE_EVERY_S)
            await late.commit()
            seen = await _until_published(kafka_log, marker, {"late"}, 10 * WHOLE_PROBE_EVERY_S)
            assert sorted(seen) == ["early", "late"]  # each once (their keys, so partitions, differ)
            assert await slow.fetchval(f"SELECT count(*) FROM {store.runtime.schema}.outbox") == 0
        finally:
            stopping.set()
            await asyncio.wait_for(relaying, 30)
            await slow.close()
            await fast.close()


async def test_a_row_is_published_with_its_headers_and_the_time_it_was_written(
    new_database: Callable[[], Awaitable[str]], kafka: KafkaBroker, kafka_log: KafkaLog
) -> None:
    url = await new_database()
    marker = uuid.uuid4().hex
    headers = (
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("note", b"a\x00b"),
    )
    async with open_resources(settings_for(url, kafka)) as resources:
        await LedgerService(resources).migrate()
        connection = await asyncpg.connect(sqlalchemy_to_libpq(url))
        try:
            async with connection.transaction():
                plain, traced = _message(marker, "plain"), _message(marker, "traced")
                await copy_to_outbox(
                    connection,
                    store.runtime,
                    [plain, Message(traced.topic, traced.key, traced.value, headers)],
                )
            written = await connection.fetch(
                f"SELECT created_at FROM {store.runtime.schema}.outbox ORDER BY id"
            )
        finally:
            await connection.close()
        relay = OutboxRelay(resources.sessions, store.runtime, resources.event_log)
        assert await relay.publish_once() == 2

    records = {
        r.key: r
        for r in await kafka_log.read_all(JOURNAL.name)
        if r.key and r.key.startswith(marker.encode())
    }
    assert records[f"{marker}:plain".encode()].headers == ()
    # JSONB holds no NUL: the relay publishes what the outbox could hold.
    assert records[f"{marker}:traced".encode()].headers == (headers[0], ("note", "a\ufffdb".encode()))
    stamps = [int(row["created_at"].timestamp() * 1000) for row in written]
    assert [
        records[f"{marker}:plain".encode()].timestamp_ms,
        records[f"{marker}:traced".encode()].timestamp_ms,
    ] == stamps


async def test_the_backlog_gauges_count_every_row_waiting_and_the_age_of_the_oldest(
    new_database: Callable[[], Awaitable[str]], kafka: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows published and deleted before those waiting are not counted; a backlog past what is counted
    in id order is counted whole."""
    url = await new_database()
    marker = uuid.uuid4().hex
    monkeypatch.setattr(outbox, "COUNTED_IN_ORDER", 10)
    table = f"{store.runtime.schema}.outbox"
    async with open_resources(settings_for(url, kafka)) as resources:
        await LedgerService(resources).migrate()
        relay = OutboxRelay(resources.sessions, store.runtime, resources.event_log)
        assert await relay.measure_backlog() == (0, 0.0)
        connection = await asyncpg.connect(sqlalchemy_to_libpq(url))
        try:
            await copy_to_outbox(connection, store.runtime, [_message(marker, f"{n}") for n in range(8)])
            await connection.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT 5)"
            )
            waited_s = await connection.fetchval(
                f"SELECT extract(epoch FROM clock_timestamp() - min(created_at))::float8 FROM {table}"
            )
            rows, age = await relay.measure_backlog()
            assert rows == 3 and age >= waited_s
            assert REGISTRY.get_sample_value("arrears_outbox_rows", {"service": store.runtime.schema}) == 3

            await copy_to_outbox(
                connection, store.runtime, [_message(marker, f"more {n}") for n in range(22)]
            )
            rows, age = await relay.measure_backlog()
            assert rows == 25 and age >= waited_s
        finally:
            await connection.close()
