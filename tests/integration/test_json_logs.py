"""`arrears serve ledger` writes one JSON object a line, and the lines of a request and of the
batch that applied what it posted name the tenant, the debtor and the record, and carry the trace
of the ERP's request."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import log_end_offsets
from tests.integration.events import envelope
from tests.integration.fault_processes import LEDGER_GROUP, LEDGER_TOPICS, Ledgers, wait_caught_up

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def begin_at_the_end(database_url: str, bootstrap_servers: str) -> None:
    """The ledger group starts where its topics end now, not at what earlier tests posted."""
    ends = await log_end_offsets(bootstrap_servers)
    names = {t.name for t in LEDGER_TOPICS}
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url))
    try:
        await connection.executemany(
            "INSERT INTO ledger.consumer_offsets (group_id, topic, partition, next_offset)"
            " VALUES ($1, $2, $3, $4)",
            [
                (LEDGER_GROUP, topic, partition, end)
                for (topic, partition), end in ends.items()
                if topic in names
            ],
        )
    finally:
        await connection.close()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line the process wrote (the harness's own `===== start n =====` lines left out), each
    parsed: a line that is not JSON fails the test."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("=====")]
    return [json.loads(line) for line in lines]


async def test_a_served_ledger_logs_json_lines_with_what_they_are_about(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> None:
    database_url = await new_database()
    ledgers = Ledgers(database_url, kafka.bootstrap_servers, tmp_path, env={"ARREARS_LOG_LEVEL": "INFO"})
    async with ledgers:
        key = await ledgers.create_key(tenant)
        await begin_at_the_end(database_url, kafka.bootstrap_servers)
        await ledgers.start()
        registration = envelope(
            "ar.debtor.registered.v1", tenant, "D1", "reg-D1", {"name": "Debtor D1", "language": "en"}
        )
        async with httpx.AsyncClient(base_url=ledgers.urls[0], timeout=30) as erp:
            headers = {"X-API-Key": key, "traceparent": TRACEPARENT}
            response = await erp.post("/v1/events", json=[registration], headers=headers)
            assert response.status_code == 202, response.text
        assert await wait_caught_up(database_url, kafka.bootstrap_servers, 60) == 0
        ledgers.stop()
        lines = json_lines(ledgers.processes[0].log_path)

    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    request = [line for line in lines if line.get("route") == "/v1/events"]
    assert len(request) == 1, request
    assert request[0]["method"] == "POST" and request[0]["status"] == 202
    assert request[0]["tenant"] == tenant and request[0]["service"] == "ledger"
    assert request[0]["trace_id"] == TRACE_ID, "the line carries the ERP's trace"

    applied = [line for line in lines if line.get("group") == "ledger" and line.get("record") == "reg-D1"]
    assert applied, [line for line in lines if line.get("group") == "ledger"]
    assert all(line["tenant"] == tenant and line["debtor"] == "D1" for line in applied)
    assert any(line["message"].startswith("ledger applied 1 records") for line in applied)
