"""Late-payment penalties and early-payment discounts, in integer minor units."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from contracts.policy import DiscountTier, Penalty
from services.dunning.penalties import discount, interest, outstanding_on, penalty

from . import day

DUE = day("2024-03-01")
PER_ANNUM = Penalty(rate="0.08", rate_per="annum", day_count=365)


def test_interest_runs_from_the_day_after_the_due_date() -> None:
    changes = [(day("2024-01-31"), 500_000)]
    assert interest(changes, DUE, DUE, PER_ANNUM) == 0
    assert interest(changes, DUE, day("2024-03-02"), PER_ANNUM) == 110  # 5,000.00 x 8 % / 365 = 1.0959
    assert interest(changes, DUE, day("2024-03-31"), PER_ANNUM) == 3_288  # 30 days: 32.876...


def test_grace_days_delay_the_start_of_interest() -> None:
    terms = Penalty(rate="0.08", grace_days=5)
    changes = [(day("2024-01-31"), 500_000)]
    assert interest(changes, DUE, day("2024-03-06"), terms) == 0
    assert interest(changes, DUE, day("2024-03-07"), terms) == 110


def test_interest_follows_each_days_outstanding_amount() -> None:
    changes = [(day("2024-01-31"), 500_000), (day("2024-03-11"), -400_000)]
    # 2-10 March on 5,000.00 and 11-31 March on 1,000.00 at 0.1 % a day: 9 x 5.00 + 21 x 1.00
    assert interest(changes, DUE, day("2024-03-31"), Penalty(rate="0.001", rate_per="day")) == 6_600


def test_a_360_day_year_charges_more() -> None:
    changes = [(day("2024-01-31"), 360_000)]
    assert interest(changes, DUE, day("2024-03-11"), Penalty(rate="0.10", day_count=360)) == 1_000


def test_the_fixed_fee_is_charged_once_per_late_item_in_its_currency() -> None:
    terms = Penalty(fixed_fee={"EUR": 4_000})
    changes = [(day("2024-01-31"), 500_000)]
    assert penalty(changes, DUE, 500_000, "EUR", DUE, terms) == 0
    assert penalty(changes, DUE, 500_000, "EUR", day("2024-03-02"), terms) == 4_000
    assert penalty(changes, DUE, 500_000, "EUR", day("2024-06-02"), terms) == 4_000
    assert penalty(changes, DUE, 500_000, "USD", day("2024-06-02"), terms) == 0
    assert penalty(changes, DUE, 0, "EUR", day("2024-06-02"), terms) == 0


def test_interest_rounds_half_up_once_per_item() -> None:
    changes = [(day("2024-01-31"), 5)]
    assert interest(changes, DUE, day("2024-03-02"), Penalty(rate="0.1", rate_per="day")) == 1  # 0.5
    assert interest(changes, DUE, day("2024-03-02"), Penalty(rate="0.09", rate_per="day")) == 0  # 0.45


@pytest.mark.parametrize(
    ("paid_on", "expected"),
    [
        ("2024-01-31", 15_000),
        ("2024-02-07", 15_000),
        ("2024-02-08", 10_000),
        ("2024-02-14", 10_000),
        ("2024-02-15", 0),
    ],
)
def test_early_payment_discount_tiers(paid_on: str, expected: int) -> None:
    tiers = [DiscountTier(within_days=7, rate="0.03"), DiscountTier(within_days=14, rate="0.02")]
    assert discount(500_000, day("2024-01-31"), day(paid_on), tiers) == expected


def test_a_discount_rounds_down() -> None:
    assert discount(99, day("2024-01-31"), day("2024-01-31"), [DiscountTier(within_days=7, rate="0.03")]) == 2


@for_all(
    changes=st.lists(st.tuples(st.integers(0, 120), st.integers(-50_000, 200_000)), min_size=1, max_size=6),
    as_of=st.integers(0, 150),
    grace=st.integers(0, 10),
    rate=st.sampled_from(("0.08", "0.001", "0.5", "0")),
    per=st.sampled_from(("annum", "day")),
)
def test_interest_is_the_rounded_sum_of_every_days_interest(
    changes: list[tuple[int, int]], as_of: int, grace: int, rate: str, per: str
) -> None:
    start = day("2024-01-01")
    dated = [(start + dt.timedelta(days=d), v) for d, v in changes]
    terms = Penalty(rate=rate, rate_per=per, grace_days=grace)
    due, last = start + dt.timedelta(days=30), start + dt.timedelta(days=as_of)
    exact = Decimal(0)
    moment = due + dt.timedelta(days=grace + 1)
    while moment <= last:
        daily = Decimal(outstanding_on(dated, moment)) * Decimal(rate)
        exact += daily / 365 if per == "annum" else daily
        moment += dt.timedelta(days=1)
    assert interest(dated, due, last, terms) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
