"""Batches as large as the settings allow: the API's 10,000 events per request, and a consumer batch
of more rows than one SQL statement may have parameters (PostgreSQL's protocol allows 32,767)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import REGISTRY

from contracts.topics import JOURNAL
from services.ledger import store
from services.runtime.log import Message
from services.runtime.memory_log import InProcessLog
from services.runtime.settings import Settings
from services.stack import open_stack
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import ledger_stack, settings_for
from tests.integration.events import invoice

MAX_EVENTS_PER_REQUEST = 10_000  # the default of ARREARS_MAX_EVENTS_PER_REQUEST


async def test_a_request_of_the_largest_allowed_batch_is_accepted_and_reposting_it_is_a_no_op(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> None:
    events = [
        invoice(tenant, f"D{n % 500}", f"I{n}", "2026-01-05", "2026-02-04", 1_000 + n)
        for n in range(MAX_EVENTS_PER_REQUEST)
    ]
    async with (
        ledger_stack(settings_for(await new_database(), kafka), tenant) as stack,
        stack.client() as api,
    ):
        first = await api.post("/v1/events", json=events)
        assert first.status_code == 202, first.text[:500]
        assert first.json()["accepted"] == MAX_EVENTS_PER_REQUEST
        again = await api.post("/v1/events", json=events)
        assert again.status_code == 202
        assert again.json()["duplicates"] == MAX_EVENTS_PER_REQUEST


async def test_a_consumer_batch_of_twenty_thousand_records_is_applied_in_one_transaction(
    new_database: Callable[[], Awaitable[str]], tenant: str
) -> None:
    records = 20_000  # 2 parameters per processed event id: 40,000 in one statement
    event_log = InProcessLog()  # hands the consumer every record at once, up to max_records
    await event_log.publish(
        [
            Message(
                JOURNAL.name,
                f"{tenant}:D{n % 12_000}".encode(),
                orjson.dumps(invoice(tenant, f"D{n % 12_000}", f"I{n}", "2026-01-05", "2026-02-04", 500 + n)),
            )
            for n in range(records)
        ]
    )
    settings = Settings(database_url=await new_database(), consumer_max_records=50_000)
    batches_before = _batches()
    async with open_stack(settings, ["ledger"], event_log=event_log) as stack:
        service = stack.ledger
        deadline = asyncio.get_running_loop().time() + 120
        await asyncio.wait_for(service.consumer.started.wait(), 120)
        while await service.consumer.lag() > 0:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the consumer did not apply the batch")
            await asyncio.sleep(0.05)
        await stack.stop_background()
        async with stack.sessions() as session:
            ledger = await store.load_ledger(session, tenant, "D7")
    assert service.consumer.applied == records and service.consumer.dead_lettered == 0
    assert _batches() - batches_before <= 2, "one batch, not a failed one replayed record by record"
    assert ledger is not None and sorted(ledger.invoices) == ["I12007", "I7"]


def _batches() -> float:
    return REGISTRY.get_sample_value("arrears_consumer_batch_seconds_count", {"group": "ledger"}) or 0.0
