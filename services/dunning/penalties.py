"""Late-payment penalties and early-payment discounts of one invoice, in integer minor units.

Rounding: a penalty is computed exactly (decimal arithmetic on the day-by-day outstanding amount)
and rounded once per invoice, half up, to the minor unit; a discount is rounded down per invoice,
so a debtor is never granted more than the terms say. Totals are sums of the rounded amounts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from contracts.policy import DiscountTier, Penalty, rate_value

Changes = Sequence[tuple[dt.date, int]]
"""An invoice's signed changes of its outstanding amount, by the business date they take effect."""


def outstanding_on(changes: Changes, day: dt.date) -> int:
    """The outstanding amount the changes give at the end of `day` (never below zero)."""
    return max(0, sum(delta for effective, delta in changes if effective <= day))


def accrual_start(due_date: dt.date, terms: Penalty) -> dt.date:
    """The first day interest runs: the day after the due date plus the grace days."""
    return due_date + dt.timedelta(days=terms.grace_days + 1)


def overdue_days_amount(changes: Changes, first: dt.date, last: dt.date) -> int:
    """The sum over the days `first`..`last` (inclusive) of each day's outstanding amount."""
    if last < first:
        return 0
    total = 0
    points = sorted({first, *(d for d, _ in changes if first < d <= last)})
    for start, end in zip(points, [*points[1:], last + dt.timedelta(days=1)], strict=True):
        total += outstanding_on(changes, start) * (end - start).days
    return total


def interest(changes: Changes, due_date: dt.date, as_of: dt.date, terms: Penalty) -> int:
    """Simple interest accrued up to and including `as_of`, rounded half up to the minor unit."""
    if terms.rate is None:
        return 0
    amount_days = overdue_days_amount(changes, accrual_start(due_date, terms), as_of)
    rate = rate_value(terms.rate)
    exact = Decimal(amount_days) * rate
    if terms.rate_per == "annum":
        exact /= terms.day_count
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def penalty(
    changes: Changes, due_date: dt.date, outstanding: int, currency: str, as_of: dt.date, terms: Penalty
) -> int:
    """The penalty on one open invoice as of `as_of`: interest plus the fixed fee once it is late."""
    if outstanding <= 0 or as_of < accrual_start(due_date, terms):
        return 0
    return interest(changes, due_date, as_of, terms) + terms.fixed_fee.get(currency, 0)


def discount_rate(issue_date: dt.date, as_of: dt.date, tiers: Sequence[DiscountTier]) -> Decimal:
    """The discount rate for paying on `as_of`: the first tier whose period since issue still runs."""
    for tier in tiers:
        if as_of <= issue_date + dt.timedelta(days=tier.within_days):
            return rate_value(tier.rate)
    return Decimal(0)


def discount(outstanding: int, issue_date: dt.date, as_of: dt.date, tiers: Sequence[DiscountTier]) -> int:
    """The early-payment discount on one invoice paid in full on `as_of`, rounded down."""
    exact = Decimal(max(0, outstanding)) * discount_rate(issue_date, as_of, tiers)
    return int(exact.quantize(Decimal(1), rounding=ROUND_DOWN))
