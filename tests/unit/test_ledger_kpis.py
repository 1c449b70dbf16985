"""Receivables KPIs on figures small enough to follow by hand: each expected value is worked out in
the comment or expression beside it."""

from __future__ import annotations

import datetime as dt

import pytest

from services.ledger.aging import AgingPolicy
from services.ledger.domain import Invoice
from services.ledger.kpi_calendar import Period, closing_dates, month_ends, periods
from services.ledger.kpi_sales import sales_changes
from services.ledger.kpis import (
    aging_trend,
    agings_at,
    average_days_delinquent,
    best_possible_dso,
    collection_effectiveness,
    count_back_dso,
    receivables_kpis,
    roll_rates,
    simple_dso,
)

D = dt.date
POLICY = AgingPolicy((30, 60, 90))
LABELS = ("current", "1-30", "31-60", "61-90", "over 90")


def test_count_back_dso_of_the_textbook_example() -> None:
    # 212,000 - 100,000 (30 days) = 112,000; - 80,000 (30 days) = 32,000 < 70,000: + 32/70 x 30.
    days = count_back_dso(212_000, [(100_000, 30), (80_000, 30), (70_000, 30)])
    assert days == pytest.approx(30 + 30 + 32 / 70 * 30)
    assert round(days or 0, 2) == 73.71


def test_count_back_dso_stops_where_the_receivables_end() -> None:
    assert count_back_dso(50_000, [(100_000, 31)]) == pytest.approx(15.5)  # half of a 31-day month
    assert count_back_dso(180_000, [(100_000, 30), (80_000, 31)]) == 61  # exactly two months
    assert count_back_dso(0, [(100_000, 30)]) == 0
    assert count_back_dso(50_000, [(0, 30), (100_000, 31)]) == pytest.approx(45.5)  # 30 + 15.5
    assert count_back_dso(300_000, [(100_000, 30), (80_000, 30)]) is None  # older than the history


def test_simple_dso_best_possible_dso_and_days_delinquent() -> None:
    # Receivables 212,000 of which 150,000 not yet due, sales of a 30-day month 100,000:
    assert simple_dso(212_000, 100_000, 30) == pytest.approx(63.6)  # 2.12 x 30
    assert best_possible_dso(150_000, 100_000, 30) == pytest.approx(45.0)  # 1.5 x 30
    assert average_days_delinquent(212_000, 150_000, 100_000, 30) == pytest.approx(18.6)  # 63.6 - 45
    assert simple_dso(212_000, 0, 30) is None
    assert average_days_delinquent(212_000, 150_000, 0, 30) is None


def test_collection_effectiveness_index() -> None:
    # Opening 200,000 + sales 100,000 - closing 212,000 = 88,000 collected, of 300,000 - 150,000
    # current at the close = 150,000 collectible: 58.67 %.
    cei = collection_effectiveness(200_000, 100_000, 212_000, 150_000)
    assert cei == pytest.approx(88_000 / 150_000 * 100)
    assert round(cei or 0, 2) == 58.67
    assert collection_effectiveness(0, 0, 0, 0) is None


def test_roll_rates_from_bucket_to_next_bucket_month_over_month() -> None:
    before = {"current": 1_000, "1-30": 400, "31-60": 100, "61-90": 0, "over 90": 0}
    after = {"current": 900, "1-30": 300, "31-60": 100, "61-90": 50, "over 90": 0}
    assert roll_rates(before, after, LABELS) == {
        "current": 0.3,  # 300 / 1,000
        "1-30": 0.25,  # 100 / 400
        "31-60": 0.5,  # 50 / 100
        "61-90": None,  # nothing was 61-90 before
    }


def test_months_run_to_the_as_of_date() -> None:
    assert closing_dates(D(2013, 2, 15), 2) == [D(2012, 12, 31), D(2013, 1, 31), D(2013, 2, 15)]
    assert periods(D(2013, 2, 15), 2) == [
        Period(D(2013, 1, 1), D(2013, 1, 31)),
        Period(D(2013, 2, 1), D(2013, 2, 15)),
    ]
    assert [(p.month, p.days) for p in periods(D(2024, 3, 31), 2)] == [("2024-02", 29), ("2024-03", 31)]
    assert month_ends(D(2024, 3, 30), 1) == [D(2024, 1, 31), D(2024, 2, 29)]


def test_credit_sales_of_an_invoice_issued_adjusted_and_cancelled() -> None:
    issued = Invoice("A", "EUR", D(2013, 1, 5), D(2013, 2, 4), 3_100)
    assert sales_changes(None, issued) == [(D(2013, 1, 5), 3_100)]
    lowered = Invoice("A", "EUR", D(2013, 1, 5), D(2013, 2, 4), 2_900, adjusted_on=D(2013, 1, 20))
    assert sales_changes(issued, lowered) == [(D(2013, 1, 20), -200)]
    paid = Invoice("A", "EUR", D(2013, 1, 5), D(2013, 2, 4), 2_900, applied=2_900)
    assert sales_changes(lowered, paid) == []
    cancelled = Invoice("A", "EUR", D(2013, 1, 5), D(2013, 2, 4), 2_900, cancelled_on=D(2013, 2, 1))
    assert sales_changes(lowered, cancelled) == [(D(2013, 2, 1), -2_900)]


# A portfolio as of 15 February 2013, two months (January, and February through the 15th):
#   X 1,000 issued 10 Dec, due 9 Jan; 600 of it paid 5 Feb
#   Y 3,100 issued  5 Jan, due 4 Feb
#   Z 1,500 issued 10 Feb, due 12 Mar
# The aging totals by closing slot (0: by 31 Dec, 1: by 31 Jan, 2: by 15 Feb):
ROWS = [
    ("EUR", D(2013, 1, 9), 0, 1_000),
    ("EUR", D(2013, 2, 4), 1, 3_100),
    ("EUR", D(2013, 1, 9), 2, -600),
    ("EUR", D(2013, 3, 12), 2, 1_500),
]
SALES = {D(2012, 12, 1): 1_000, D(2013, 1, 1): 3_100, D(2013, 2, 1): 1_500}
AS_OF = D(2013, 2, 15)


def test_agings_at_the_month_ends_add_up_the_slots() -> None:
    agings = agings_at(ROWS, closing_dates(AS_OF, 2), POLICY)
    assert agings == {
        "EUR": [
            {"current": 1_000, "1-30": 0, "31-60": 0, "61-90": 0, "over 90": 0},  # X not due yet
            {"current": 3_100, "1-30": 1_000, "31-60": 0, "61-90": 0, "over 90": 0},  # X 22 days
            {"current": 1_500, "1-30": 3_100, "31-60": 400, "61-90": 0, "over 90": 0},  # X 37, Y 11
        ]
    }


def test_receivables_kpis_per_month() -> None:
    agings = agings_at(ROWS, closing_dates(AS_OF, 2), POLICY)["EUR"]
    january, february = receivables_kpis(periods(AS_OF, 2), agings, SALES)

    assert january["days"] == 31 and january["sales_minor"] == 3_100
    assert (january["receivables_minor"], january["current_minor"], january["overdue_minor"]) == (
        4_100,
        3_100,
        1_000,
    )
    assert january["dso_simple_days"] == 41.0  # 4,100 / 3,100 x 31
    assert january["best_possible_dso_days"] == 31.0  # 3,100 / 3,100 x 31
    assert january["average_days_delinquent"] == 10.0  # 41 - 31
    assert january["dso_count_back_days"] == 62.0  # 4,100 = January's 3,100 + December's 1,000
    assert january["cei_percent"] == 0.0  # (1,000 + 3,100 - 4,100) / (1,000 + 3,100 - 3,100)

    assert february["period_end"] == AS_OF and february["days"] == 15
    assert february["receivables_minor"] == 5_000 and february["current_minor"] == 1_500
    assert february["dso_simple_days"] == 50.0  # 5,000 / 1,500 x 15
    assert february["best_possible_dso_days"] == 15.0
    assert february["average_days_delinquent"] == 35.0
    # 5,000 - 1,500 (15 days) - 3,100 (31 days) = 400 < December's 1,000: 46 + 0.4 x 31 = 58.4.
    assert february["dso_count_back_days"] == 58.4
    # (4,100 + 1,500 - 5,000) / (4,100 + 1,500 - 1,500) = 600 / 4,100 = 14.63 %
    assert february["cei_percent"] == 14.63


def test_aging_trend_with_share_current_and_roll_rates() -> None:
    agings = agings_at(ROWS, closing_dates(AS_OF, 2), POLICY)["EUR"]
    trend = aging_trend(periods(AS_OF, 2), agings, LABELS)
    january, february = trend["points"]
    assert (january["as_of"], january["total_minor"], january["share_current"]) == (
        D(2013, 1, 31),
        4_100,
        0.7561,
    )
    assert (february["as_of"], february["total_minor"], february["share_current"]) == (AS_OF, 5_000, 0.3)
    assert trend["roll_rates"] == [
        {"month": "2013-01", "rates": {"current": 1.0, "1-30": None, "31-60": None, "61-90": None}},
        # current 3,100 at 31 Jan -> 3,100 1-30 at 15 Feb; 1-30 1,000 -> 400 31-60
        {"month": "2013-02", "rates": {"current": 1.0, "1-30": 0.4, "31-60": None, "61-90": None}},
    ]
