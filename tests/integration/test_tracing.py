"""One payment followed by its trace id from the ERP's POST to the reminder it cancels: the ledger's
request span continues the ERP's `traceparent`; the journal record, the balance fact and dunning's
cancellation carry that context in their headers; the ledger's, dunning's and the notifier's batch
spans link to it.

The notifier runs its consumer but not its sender, so the reminder is still waiting to be sent when
the payment comes and its cancellation finds it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from contracts.topics import COMMANDS, JOURNAL, RECEIVABLES
from services.dunning.policies import default_policy
from services.notifier import store as notifier_store
from services.runtime import clock
from services.runtime.log import Record
from services.runtime.settings import Settings
from services.runtime.tracing import configure_tracing
from services.stack import Stack, open_stack
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import from_test_start, settings_for
from tests.integration.events import envelope, invoice, payment

pytestmark = pytest.mark.integration

D = dt.date
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ERP_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{ERP_SPAN}-01"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("tests").add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.clear()
    exporter.shutdown()  # keeps nothing of the later tests' spans


@contextlib.asynccontextmanager
async def notifier_without_sender(settings: Settings) -> AsyncIterator[Stack]:
    async with open_stack(settings, ["notifier"], background=False, prepare=from_test_start) as stack:
        service = stack.notifier
        for name, loop in service.loops():
            if not name.endswith("-sender"):
                service.background.start(name, loop)
        try:
            yield stack
        finally:
            await service.stop_background()


async def delivery_status(stack: Stack, tenant: str) -> list[tuple[str, str]]:
    d = notifier_store.deliveries
    async with stack.sessions() as session:
        rows = await session.execute(select(d.c.action, d.c.status).where(d.c.tenant_id == tenant))
        return [(r.action, r.status) for r in rows]


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await condition():
        assert loop.time() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


def trace_of(record: Record) -> str | None:
    parent = record.header("traceparent")
    return parent.decode().split("-")[1] if parent else None


async def records_of(stack: Stack, topic: str, tenant: str) -> list[tuple[dict[str, Any], Record]]:
    found = []
    for record in await stack.event_log.read_all(topic):
        with contextlib.suppress(orjson.JSONDecodeError):
            event = orjson.loads(record.value)
            if isinstance(event, dict) and event.get("tenantid") == tenant:
                found.append((event, record))
    return found


def linked_to_trace(span: ReadableSpan) -> bool:
    return any(format(link.context.trace_id, "032x") == TRACE_ID for link in span.links)


async def test_a_payment_is_followed_by_its_trace_to_the_cancelled_reminder(
    kafka: KafkaBroker,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    spans: InMemorySpanExporter,
) -> None:
    t = tenant
    settings = settings_for(await new_database(), kafka, send_windows="ignore")
    services = ["ledger", "dunning"]
    async with (
        open_stack(settings, services, prepare=from_test_start) as core,
        notifier_without_sender(settings) as notifier,
    ):
        erp_key = await core.create_key(t, "erp", "erp", on=["ledger"])
        ops_key = await core.create_key(t, "ops", "operations", on=["dunning"])
        ledger = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=core.app("ledger")), base_url="http://ledger", timeout=30
        )
        dunning = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=core.app("dunning")), base_url="http://dunning", timeout=30
        )
        async with ledger, dunning:
            document = default_policy().model_dump(mode="json")
            policy = {"effective_from": "2026-01-01", "document": document}
            put = await dunning.put("/v1/policies/1", json=policy, headers={"X-API-Key": ops_key})
            assert put.status_code == 202, put.text

            async def start_day(day: dt.date) -> None:
                await core.settled()
                await core.event_log.publish([clock.day_started(t, day, dt.datetime.now(dt.UTC))])
                await core.settled()

            await start_day(D(2026, 1, 5))
            registered = envelope(
                "ar.debtor.registered.v1",
                t,
                "D1",
                "reg-D1",
                {"name": "Debtor D1", "language": "en", "email": f"d1@{t}.example"},
            )
            posted = await ledger.post(
                "/v1/events",
                json=[registered, invoice(t, "D1", "A-1", "2026-01-05", "2026-01-10", 50_000)],
                headers={"X-API-Key": erp_key},
            )
            assert posted.status_code == 202, posted.text
            # Three days before the due date: the courtesy reminder, which the notifier holds.
            await start_day(D(2026, 1, 7))

            async def reminder_waits() -> bool:
                return await delivery_status(notifier, t) == [("send_reminder", "pending")]

            await until(reminder_waits, "the reminder reached the notifier")

            spans.clear()
            paid = await ledger.post(
                "/v1/events",
                json=[payment(t, "D1", "P-1", "2026-01-07", 50_000, allocate_to="A-1")],
                headers={"X-API-Key": erp_key, "traceparent": TRACEPARENT},
            )
            assert paid.status_code == 202, paid.text
            await core.settled()

            async def reminder_cancelled() -> bool:
                return await delivery_status(notifier, t) == [("send_reminder", "cancelled")]

            await until(reminder_cancelled, "the reminder was cancelled")

        journal = [r for e, r in await records_of(core, JOURNAL.name, t) if e["id"] == "pay-P-1"]
        facts = [
            r for e, r in await records_of(core, RECEIVABLES.name, t) if e.get("causationid") == "pay-P-1"
        ]
        cancellations = [
            r
            for e, r in await records_of(core, COMMANDS.name, t)
            if e["type"] == "collections.command.cancelled.v1"
        ]

    assert [trace_of(r) for r in journal] == [TRACE_ID], "the ERP's event on the journal"
    assert facts and all(trace_of(r) == TRACE_ID for r in facts), "the balance facts it caused"
    assert len(cancellations) == 1 and trace_of(cancellations[0]) == TRACE_ID, "dunning's cancellation"

    finished = spans.get_finished_spans()
    request = [s for s in finished if s.kind == SpanKind.SERVER and s.name == "POST /v1/events"]
    assert len(request) == 1
    assert format(request[0].context.trace_id, "032x") == TRACE_ID
    assert request[0].parent is not None and format(request[0].parent.span_id, "016x") == ERP_SPAN
    for group in ("ledger", "dunning", "notifier"):
        batches = [s for s in finished if s.name == f"{group} apply" and linked_to_trace(s)]
        assert batches, f"no {group} batch span links to the payment's trace"
