"""Receivables KPIs over HTTP on real Kafka and PostgreSQL: an ERP posts invoices, a cancellation and
a payment over three months while the clock starts the business days, and finance reads DSO, CEI and
the aging trend; every figure is worked out by hand below."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import select

from services.ledger import state_codec, store
from services.ledger.domain import Invoice, initial_state, replace
from services.runtime import clock
from services.runtime.auth import create_key
from services.runtime.database import make_engine
from services.runtime.kafka_log import KafkaLog
from services.runtime.migrations import _config, upgrade
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, settings_for
from tests.integration.events import envelope, invoice, payment

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    async with ledger_stack(settings_for(await new_database(), kafka), tenant) as running:
        yield running


def cancellation(tenant: str, debtor: str, number: str, day: str) -> dict[str, Any]:
    return envelope(
        "ar.invoice.cancelled.v1",
        tenant,
        debtor,
        f"cancel-{number}",
        {"invoice_id": number, "cancellation_date": day, "reason": "issued twice"},
    )


async def get(api: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_dso_cei_and_the_aging_trend_of_three_months(stack: LedgerStack, kafka_log: KafkaLog) -> None:
    t = stack.tenant
    days: list[tuple[str, list[dict[str, Any]]]] = [
        ("2012-12-10", [invoice(t, "D1", "X", "2012-12-10", "2013-01-09", 100_000)]),
        (
            "2013-01-05",
            [
                invoice(t, "D2", "Y", "2013-01-05", "2013-02-04", 310_000),
                invoice(t, "D2", "W", "2013-01-05", "2013-02-04", 50_000),
            ],
        ),
        ("2013-01-08", [cancellation(t, "D2", "W", "2013-01-08")]),
        ("2013-02-05", [payment(t, "D1", "P1", "2013-02-05", 60_000, allocate_to="X")]),
        ("2013-02-10", [invoice(t, "D3", "Z", "2013-02-10", "2013-03-12", 150_000)]),
        ("2013-02-15", []),
    ]
    async with stack.client() as api:
        for day, events in days:
            await clock.advance(kafka_log, t, dt.date.fromisoformat(day), dt.datetime.now(dt.UTC))
            if events:
                assert (await api.post("/v1/events", json=events)).json()["accepted"] == len(events)
            await stack.caught_up()

        kpis = await get(api, "/v1/kpis/receivables", months="3")
        trend = await get(api, "/v1/kpis/aging-trend", months="3")
        january_only = await get(api, "/v1/kpis/receivables", as_of="2013-01-31", months="1")
        refused = await api.get("/v1/kpis/receivables", params={"months": "61"})
    async with stack.resources.sessions() as session, session.begin():
        finance = await create_key(session, store.runtime, t, "finance", "operations")
        collector = await create_key(session, store.runtime, t, "alice", "collector")
    async with stack.client(finance) as api:
        assert (await get(api, "/v1/kpis/aging-trend", months="3")) == trend, "finance reads the same"
        assert (await api.get("/v1/kpis/receivables", headers={"X-API-Key": collector})).status_code == 403

    assert kpis["as_of"] == "2013-02-15", "the business date the clock started last"
    assert kpis["months"] == 3 and list(kpis["currencies"]) == ["EUR"]
    december, january, february = kpis["currencies"]["EUR"]

    # December: X 1,000.00 sold and owed, not yet due at 31 December; nothing owed before.
    assert (december["month"], december["days"], december["sales_minor"]) == ("2012-12", 31, 100_000)
    assert (december["receivables_minor"], december["current_minor"]) == (100_000, 100_000)
    assert december["dso_simple_days"] == 31.0  # 1,000 / 1,000 x 31
    assert december["dso_count_back_days"] == 31.0  # exactly December's sales
    assert december["average_days_delinquent"] == 0.0
    assert december["cei_percent"] is None, "0 + 1,000 - 1,000 current: nothing was collectible"

    # January: Y 3,100.00 sold (W 500.00 issued and cancelled the same month is no sale); X is
    # 22 days past due at 31 January.
    assert (january["period_start"], january["period_end"]) == ("2013-01-01", "2013-01-31")
    assert january["sales_minor"] == 310_000
    assert (january["receivables_minor"], january["current_minor"], january["overdue_minor"]) == (
        410_000,
        310_000,
        100_000,
    )
    assert january["dso_simple_days"] == 41.0  # 4,100 / 3,100 x 31
    assert january["best_possible_dso_days"] == 31.0  # 3,100 / 3,100 x 31
    assert january["average_days_delinquent"] == 10.0  # 41 - 31
    assert january["dso_count_back_days"] == 62.0  # January's 3,100 and December's 1,000
    assert january["cei_percent"] == 0.0  # (1,000 + 3,100 - 4,100) / (1,000 + 3,100 - 3,100)
    assert january_only["currencies"]["EUR"] == [january], "the same month asked for on its own"

    # February through the 15th: Z 1,500.00 sold; 600.00 of X paid; X 37 and Y 11 days past due.
    assert (february["period_end"], february["days"], february["sales_minor"]) == ("2013-02-15", 15, 150_000)
    assert (february["receivables_minor"], february["current_minor"]) == (500_000, 150_000)
    assert february["dso_simple_days"] == 50.0  # 5,000 / 1,500 x 15
    assert february["best_possible_dso_days"] == 15.0  # 1,500 / 1,500 x 15
    assert february["average_days_delinquent"] == 35.0
    # 5,000 - 1,500 (15 days) - 3,100 (31 days) = 400 < December's 1,000: 46 + 400 / 1,000 x 31
    assert february["dso_count_back_days"] == 58.4
    # (4,100 + 1,500 - 5,000) / (4,100 + 1,500 - 1,500) = 600 / 4,100
    assert february["cei_percent"] == 14.63

    assert trend["as_of"] == "2013-02-15"
    assert trend["buckets"] == ["current", "1-30", "31-60", "61-90", "91-180", "181-365", "over 365"]
    eur = trend["currencies"]["EUR"]
    assert [(p["month"], p["as_of"], p["total_minor"], p["share_current"]) for p in eur["points"]] == [
        ("2012-12", "2012-12-31", 100_000, 1.0),
        ("2013-01", "2013-01-31", 410_000, 0.7561),  # 3,100 / 4,100
        ("2013-02", "2013-02-15", 500_000, 0.3),  # 1,500 / 5,000
    ]
    assert {k: v for k, v in eur["points"][2]["buckets_minor"].items() if v} == {
        "current": 150_000,
        "1-30": 310_000,
        "31-60": 40_000,
    }
    rates = {r["month"]: {k: v for k, v in r["rates"].items() if v is not None} for r in eur["roll_rates"]}
    assert rates == {
        "2012-12": {},  # nothing owed at 30 November
        "2013-01": {"current": 1.0},  # X: 1,000 current -> 1,000 in 1-30
        "2013-02": {"current": 1.0, "1-30": 0.4},  # Y 3,100 -> 3,100 in 1-30; X 1,000 -> 400 in 31-60
    }
    assert refused.status_code == 422


async def test_the_migration_counts_the_invoices_projected_before_it_as_sales(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    engine = make_engine(await new_database())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(_config("ledger", c), "0003"))
        invoices = {
            "A": Invoice("A", "EUR", dt.date(2013, 1, 5), dt.date(2013, 2, 4), 310_000, applied=10_000),
            "B": Invoice("B", "EUR", dt.date(2013, 1, 5), dt.date(2013, 2, 4), 50_000),
            "C": Invoice(
                "C", "EUR", dt.date(2013, 1, 7), dt.date(2013, 2, 6), 9_000, cancelled_on=dt.date(2013, 1, 8)
            ),
            "D": Invoice("D", "USD", dt.date(2013, 1, 5), dt.date(2013, 2, 4), 7_000),
        }
        state = replace(initial_state("t1", "D1"), invoices=invoices)
        async with engine.begin() as connection:
            await connection.execute(
                store.debtor_ledgers.insert().values(
                    tenant_id="t1", debtor_id="D1", state=state_codec.encode_ledger(state)
                )
            )
        await upgrade(engine, "ledger")
        async with engine.connect() as connection:
            rows = (await connection.execute(select(store.credit_sales))).all()
    finally:
        await engine.dispose()
    assert sorted(tuple(r) for r in rows) == [
        ("t1", "EUR", dt.date(2013, 1, 5), 360_000),  # A and B at their amounts, paid or not; C cancelled
        ("t1", "USD", dt.date(2013, 1, 5), 7_000),
    ]
