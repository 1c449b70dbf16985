"""What /metrics of each service shows after a small workload, scraped over HTTP: the families an
operator graphs, and counts that match what was posted (the registry is the process's, so each
count is read as the difference between a scrape before the workload and one after)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import COMMANDS, DEBTORS, JOURNAL
from services.stack import serving
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice

pytestmark = pytest.mark.integration

D = dt.date
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STACK_GROUPS = {"ledger", "dunning", "notifier"}
FAMILIES = {
    "arrears_consumer_records",
    "arrears_produced_records",
    "arrears_consumer_batch_records",
    "arrears_consumer_batch_seconds",
    "arrears_consumer_lag_records",
    "arrears_outbox_rows",
    "arrears_outbox_oldest_age_seconds",
    "arrears_dead_letters",
    "arrears_ingested_events",
    "arrears_http_request_seconds",
    "arrears_notifier_deliveries",
    "arrears_business_day_seconds",
}


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


@contextlib.asynccontextmanager
async def served(stack: CollectionsStack) -> AsyncIterator[dict[str, str]]:
    async with (
        serving(stack.stack.app("ledger")) as ledger,
        serving(stack.stack.app("dunning")) as dunning,
        serving(stack.stack.app("notifier")) as notifier,
    ):
        yield {"ledger": ledger, "dunning": dunning, "notifier": notifier}


async def scrape(url: str) -> tuple[set[str], Samples]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    families, samples = set(), {}
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def registered(tenant: str, debtor: str) -> dict[str, object]:
    profile = {"name": f"Debtor {debtor}", "language": "en", "email": f"{debtor.lower()}@{tenant}.example"}
    return envelope("ar.debtor.registered.v1", tenant, debtor, f"reg-{debtor}", profile)


async def test_each_service_shows_what_it_did(stack: CollectionsStack) -> None:
    t = stack.tenant
    async with served(stack) as urls:
        families, before = await scrape(urls["ledger"])
        assert families >= FAMILIES, FAMILIES - families

        await stack.publish_policy(D(2026, 1, 1))
        await stack.start_day(D(2026, 1, 5))
        events = [
            registered(t, "D1"),
            registered(t, "D2"),
            invoice(t, "D1", "A-1", "2026-01-05", "2026-01-10", 50_000),
            invoice(t, "D1", "A-2", "2026-01-05", "2026-01-10", 20_000),
            invoice(t, "D2", "B-1", "2026-01-05", "2026-01-10", 80_000),
            invoice(t, "D3", "C-1", "2026-01-05", "2026-01-10", 10_000),
        ]
        # Accepted, then rejected by the ledger's rules: C-1 is cancelled by the time the write-off
        # is applied, so the write-off is a dead letter of class `rejected`.
        cancelled = envelope(
            "ar.invoice.cancelled.v1",
            t,
            "D3",
            "cancel-C-1",
            {"invoice_id": "C-1", "cancellation_date": "2026-01-05"},
        )
        written_off = envelope(
            "ar.writeoff.posted.v1",
            t,
            "D3",
            "wo-C-1",
            {"writeoff_id": "wo-C-1", "invoice_id": "C-1", "posting_date": "2026-01-06"},
        )
        async with httpx.AsyncClient(
            base_url=urls["ledger"], headers={"X-API-Key": stack.keys["erp"]}, timeout=30
        ) as erp:
            assert (await erp.post("/v1/events", json=events)).status_code == 202
            await stack.settled()
            assert (await erp.post("/v1/events", json=[cancelled, written_off])).status_code == 202
            await stack.settled()
            assert (await erp.get("/v1/debtors/D1/statement")).status_code == 200
            assert (await erp.get("/v1/debtors/D2/statement")).status_code == 200
        # 2026-01-07 is three days before the due date: one courtesy reminder per debtor, by e-mail.
        await stack.start_day(D(2026, 1, 7))
        assert len(stack.received.to(f"d1@{t}.example")) == 1
        assert len(stack.received.to(f"d2@{t}.example")) == 1

        _, ledger = await scrape(urls["ledger"])
        _, dunning = await scrape(urls["dunning"])
        _, notifier = await scrape(urls["notifier"])
        # Settled: no partition of any group is behind, once the gauges (refreshed every second)
        # have measured it.
        lags = await settled_lags(urls["notifier"])

    def grew(after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Ledger: 6 + 2 events accepted in two POSTs; 4 invoices, a cancellation and a write-off on the
    # journal, 2 registrations on debtors.
    assert grew(ledger, "arrears_ingested_events_total", status="accepted") == 8
    post = {"service": "ledger", "method": "POST", "route": "/v1/events", "status": "2xx"}
    assert grew(ledger, "arrears_http_request_seconds_count", **post) == 2
    statement = {"service": "ledger", "method": "GET", "route": "/v1/debtors/{debtor_id}/statement"}
    assert grew(ledger, "arrears_http_request_seconds_count", **statement, status="2xx") == 2
    assert not any("D1" in dict(labels).get("route", "") for _, labels in ledger), "no raw paths"
    produced = {"service": "ledger"}
    assert grew(ledger, "arrears_produced_records_total", **produced, topic=JOURNAL.name) == 6
    assert grew(ledger, "arrears_produced_records_total", **produced, topic=DEBTORS.name) == 2
    assert grew(ledger, "arrears_produced_records_total", **produced, topic=f"{JOURNAL.name}.dlq") == 1
    journal = {"group": "ledger", "topic": JOURNAL.name}
    assert grew(ledger, "arrears_consumer_records_total", **journal, outcome="applied") == 5
    assert grew(ledger, "arrears_consumer_records_total", **journal, outcome="dead_lettered") == 1
    assert (
        grew(ledger, "arrears_consumer_records_total", group="ledger", topic=DEBTORS.name, outcome="applied")
        == 2
    )
    assert grew(ledger, "arrears_dead_letters_total", **journal, reason="rejected") == 1
    assert grew(ledger, "arrears_dead_letters_total", **journal, reason="contract") == 0
    # Batches held the 6 journal records, the 2 registrations and the 2 business days.
    assert grew(ledger, "arrears_consumer_batch_records_sum", group="ledger") == 6 + 2 + 2

    # Dunning: two business days, each one batch holding the clock record; two reminders commanded.
    assert grew(dunning, "arrears_business_day_seconds_count", service="dunning") == 2
    assert grew(dunning, "arrears_produced_records_total", service="dunning", topic=COMMANDS.name) == 2

    # Notifier: two e-mails sent, nothing failed or suppressed.
    assert grew(notifier, "arrears_notifier_deliveries_total", channel="email", outcome="sent") == 2
    for outcome in ("failed", "retrying", "suppressed"):
        assert grew(notifier, "arrears_notifier_deliveries_total", channel="email", outcome=outcome) == 0
    assert (
        grew(
            notifier,
            "arrears_consumer_records_total",
            group="notifier",
            topic=COMMANDS.name,
            outcome="applied",
        )
        == 2
    )

    assert {dict(labels)["group"] for labels in lags} == STACK_GROUPS and not any(lags.values()), lags


async def settled_lags(url: str, attempts: int = 50) -> dict[frozenset[tuple[str, str]], float]:
    """The lag gauges of every group, as soon as they all read 0 (or as the last scrape had them)."""
    lags: dict[frozenset[tuple[str, str]], float] = {}
    for _ in range(attempts):
        _, samples = await scrape(url)
        # The process's registry holds the groups of every stack it ran: these are this stack's.
        lags = {
            labels: v
            for (name, labels), v in samples.items()
            if name == "arrears_consumer_lag_records" and dict(labels)["group"] in STACK_GROUPS
        }
        if lags and not any(lags.values()):
            break
        await asyncio.sleep(0.2)
    return lags


async def test_the_outbox_gauges_read_zero_once_everything_is_published(stack: CollectionsStack) -> None:
    await stack.publish_policy(D(2026, 1, 1))
    await stack.settled()
    async with served(stack) as urls:
        for service, url in urls.items():
            assert await outbox_reads_zero(url, service)


async def outbox_reads_zero(url: str, service: str) -> bool:
    """The outbox gauges of `service` read 0 within a few of the relay's measurements (one a second)."""
    for _ in range(100):
        _, samples = await scrape(url)
        if ("arrears_outbox_rows", frozenset({("service", service)})) in samples and (
            value(samples, "arrears_outbox_rows", service=service) == 0
        ):
            return value(samples, "arrears_outbox_oldest_age_seconds", service=service) == 0
        await asyncio.sleep(0.1)
    return False
