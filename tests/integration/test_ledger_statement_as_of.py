"""A debtor's statement as of a past date, through the HTTP API on real Kafka and PostgreSQL: what
stood on that date, as it is known now and as it was known at a moment, the debtors' statements
adding up to the portfolio aging, and credit notes kept out of the payment history."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.registry import encode_event
from services.sample import ibm
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, settings_for
from tests.integration.events import envelope, invoice, money, payment

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"
ON = "2026-02-15"


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    async with ledger_stack(settings_for(await new_database(), kafka), tenant) as running:
        yield running


def credit_note(
    tenant: str, debtor: str, note_id: str, issued: str, minor: int, for_invoice: str
) -> dict[str, Any]:
    return envelope(
        "ar.creditnote.issued.v1",
        tenant,
        debtor,
        f"cn-{note_id}",
        {"credit_note_id": note_id, "issue_date": issued, "amount": money(minor), "invoice_id": for_invoice},
    )


async def statement(api: httpx.AsyncClient, debtor: str, **params: str) -> dict[str, Any]:
    response = await api.get(f"/v1/debtors/{debtor}/statement", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def portfolio(api: httpx.AsyncClient, **params: str) -> dict[str, dict[str, int]]:
    response = await api.get("/v1/aging", params=params)
    assert response.status_code == 200, response.text
    return {c: v["buckets_minor"] for c, v in response.json()["currencies"].items()}


def aging_sum(*statements: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The debtors' agings added up, per currency, without currencies that age to nothing."""
    total: dict[str, Counter[str]] = {}
    for report in statements:
        for line in report["currencies"]:
            total.setdefault(line["currency"], Counter()).update(line["aging"])
    return {c: dict(buckets) for c, buckets in total.items() if any(buckets.values())}


def open_items(report: dict[str, Any]) -> dict[str, int]:
    return {i["invoice_id"]: i["outstanding"] for i in report["open_items"]}


def balance(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {c["currency"]: (c["balance"], c["unapplied"]) for c in report["currencies"]}


async def test_a_statement_as_of_a_date_is_the_debtors_share_of_the_aging_on_it(stack: LedgerStack) -> None:
    t = stack.tenant
    async with stack.client() as api:
        first = [
            invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000),
            invoice(t, "D1", "B", "2026-01-05", "2026-02-04", 4_000),
            invoice(t, "D1", "F", "2026-01-02", "2026-02-01", 3_000),
            payment(t, "D1", "P0", "2026-01-25", 3_000, allocate_to="F"),
            credit_note(t, "D1", "C1", "2026-01-20", 4_000, for_invoice="B"),
            payment(t, "D1", "P1", "2026-02-20", 10_000, allocate_to="A"),  # valued after the date
            invoice(t, "D1", "E", "2026-02-18", "2026-03-20", 2_000),  # issued after the date
            invoice(t, "D2", "G", "2026-01-10", "2026-02-09", 5_000),
        ]
        assert (await api.post("/v1/events", json=first)).json()["accepted"] == len(first)
        await stack.caught_up()
        reported_at = dt.datetime.now(dt.UTC).isoformat()

        # Recorded later, effective before the date: D2 paid G on 1 February.
        later = [payment(t, "D2", "P2", "2026-02-01", 5_000, allocate_to="G")]
        assert (await api.post("/v1/events", json=later)).json()["accepted"] == 1
        await stack.caught_up()

        d1 = await statement(api, "D1", as_of=ON)
        d2 = await statement(api, "D2", as_of=ON)
        d1_then = await statement(api, "D1", as_of=ON, known_at=reported_at)
        d2_then = await statement(api, "D2", as_of=ON, known_at=reported_at)
        aging_now = await portfolio(api, as_of=ON)
        aging_then = await portfolio(api, as_of=ON, known_at=reported_at)
        naive = await api.get(
            "/v1/debtors/D1/statement", params={"as_of": ON, "known_at": "2026-02-15T12:00:00"}
        )

    assert open_items(d1) == {"A": 10_000}, "P1 is valued after the date, E issued after it"
    assert d1["as_of"] == ON and d1["known_at"] is None
    assert balance(d1) == {"EUR": (10_000, 0)}
    assert d1["open_items"][0]["days_past_due"] == 15
    assert [p["invoice_id"] for p in d1["payment_history"]] == ["F"], (
        "P1 not yet, the credit note is no payment"
    )
    assert d1["payment_history"][0]["days_to_pay"] == 23
    assert [(c["invoice_id"], c["credit_notes"]) for c in d1["settled_by_credit"]] == [("B", ["C1"])]

    assert open_items(d2) == {} and [p["invoice_id"] for p in d2["payment_history"]] == ["G"]
    assert aging_sum(d1, d2) == aging_now == {"EUR": aging_now["EUR"]}
    assert aging_now["EUR"]["1-30"] == 10_000

    assert open_items(d2_then) == {"G": 5_000}, "as reported then, G was still owed"
    assert aging_sum(d1_then, d2_then) == aging_then
    assert aging_then["EUR"]["1-30"] == 15_000
    assert d1_then["known_at"] is not None
    assert naive.status_code == 422


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the shared sample data is not beside the repository")
async def test_the_sample_customer_owed_on_30_june_2013_what_it_paid_in_july_and_august(
    stack: LedgerStack,
) -> None:
    """Customer 0688-XNJRO of the IBM sample: on 30 June 2013 it owed 94.15 (three invoices of June
    settled in July and August), though it owes nothing today."""
    rows = [r for r in ibm.load(SAMPLE) if r.customer_id == "0688-XNJRO"]
    events = [e for day_events in ibm.events_by_day(rows, stack.tenant).values() for e in day_events]
    body = b"[" + b",".join(encode_event(e) for e in events) + b"]"
    async with stack.client() as api:
        posted = await api.post("/v1/events", content=body, headers={"content-type": "application/json"})
        assert posted.json()["accepted"] == len(events)
        await stack.caught_up()
        report = await statement(api, "0688-XNJRO", as_of="2013-06-30")
        aging = await portfolio(api, as_of="2013-06-30")
        today = await statement(api, "0688-XNJRO", as_of="2013-12-31")

    assert open_items(report) == {"7403439811": 4_156, "1858692476": 4_307, "3800378393": 952}
    assert balance(report) == {"USD": (9_415, 0)}
    assert aging_sum(report) == aging == {"USD": {**dict.fromkeys(aging["USD"], 0), "current": 9_415}}
    history = {p["invoice_id"]: p for p in report["payment_history"]}
    assert len(history) == 21 and not history.keys() & open_items(report).keys()
    assert max(p["settled_on"] for p in history.values()) == "2013-06-16"
    assert history["5277730076"]["days_late"] == 15  # the sample's DaysLate

    assert balance(today) == {"USD": (0, 0)} and len(today["payment_history"]) == 24
