"""/readyz tells the truth about a served ledger: 503 while its broker or its PostgreSQL is down or
its consumer is further behind than the threshold, 200 again once they are back, and a body that
says which check failed.

The module has a broker and a PostgreSQL server of its own: the test stops and starts both."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from contracts.topics import JOURNAL, catalogue
from services.runtime.embedded_postgres import (
    sqlalchemy_to_libpq,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from services.runtime.kafka_admin import ensure_topics
from services.runtime.log import Message
from services.stack import Stack, open_stack, serving
from tests.infra.kafka_broker import KafkaBroker, start_kafka_broker
from tests.infra.postgres_server import PostgresServer, start_postgres
from tests.integration.conftest import settings_for
from tests.integration.fault_processes import create_database, kafka_sh

pytestmark = pytest.mark.integration

WAIT_S = 60.0
"""How long a probe is polled for an answer to change (the checks give up after 2 s each)."""


@pytest.fixture(scope="module")
def own_broker() -> Iterator[KafkaBroker]:
    broker = start_kafka_broker()
    asyncio.run(ensure_topics(broker.bootstrap_servers, catalogue()))
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL names an external PostgreSQL: the test cannot stop it")
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
async def ledger(own_broker: KafkaBroker, own_postgres: PostgresServer) -> AsyncIterator[tuple[Stack, str]]:
    settings = settings_for(await create_database(own_postgres.url), own_broker, ready_max_lag_records=1)
    async with open_stack(settings, ["ledger"]) as stack, serving(stack.app("ledger")) as url:
        await asyncio.wait_for(stack.ledger.consumer.started.wait(), WAIT_S)
        yield stack, url


async def probe(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/readyz")
    return response.status_code, response.json()


async def until(
    url: str, status: int, check: Callable[[dict[str, Any]], bool] = lambda _: True
) -> dict[str, Any]:
    """Poll /readyz until it answers `status` with a body `check` accepts; that body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    answers = []
    while loop.time() < deadline:
        code, body = await probe(url)
        if code == status and check(body):
            return body
        answers.append((code, body))
        await asyncio.sleep(0.25)
    raise AssertionError(f"/readyz never answered {status} as expected; last answers {answers[-3:]}")


def failing(body: dict[str, Any]) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


async def test_readiness_follows_the_broker_the_database_and_the_lag(
    ledger: tuple[Stack, str], own_broker: KafkaBroker, own_postgres: PostgresServer
) -> None:
    stack, url = ledger
    body = await until(url, 200)
    assert body["ready"] is True and failing(body) == set()
    assert body["checks"]["lag"] == {
        "ok": True,
        "records": 0,
        "threshold": 1,
        "groups": {"ledger": 0},
        "detail": "0 records behind",
    }

    await asyncio.to_thread(kafka_sh, own_broker, "stop")
    try:
        body = await until(url, 503, lambda b: "log" in failing(b))
        assert body["ready"] is False and body["checks"]["database"]["ok"] is True
    finally:
        await asyncio.to_thread(kafka_sh, own_broker, "start")
    await until(url, 200)

    data_dir = own_postgres.data_dir
    assert data_dir is not None
    await asyncio.to_thread(stop_embedded_postgres, data_dir)
    try:
        body = await until(url, 503, lambda b: "database" in failing(b))
        assert body["ready"] is False and body["checks"]["database"]["detail"]
    finally:
        await asyncio.to_thread(start_embedded_postgres, data_dir)
    await until(url, 200)

    # Three records wait on the journal while the consumer cannot store its offsets (reads of them
    # go on): three records behind a threshold of one.
    database_url = stack.settings.database_url
    assert database_url is not None
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url.get_secret_value()))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE ledger.consumer_offsets IN EXCLUSIVE MODE")
        await stack.event_log.publish(
            [Message(JOURNAL.name, f"t-ready:D{i}".encode(), b"not an event") for i in range(3)]
        )
        body = await until(url, 503, lambda b: b["checks"]["lag"]["records"] == 3)
        assert failing(body) == {"lag"}
        assert body["checks"]["lag"]["groups"] == {"ledger": 3} and body["checks"]["lag"]["threshold"] == 1
        await transaction.rollback()
    finally:
        await connection.close()
    body = await until(url, 200)
    assert body["checks"]["lag"]["records"] == 0
