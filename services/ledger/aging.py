"""Aging of receivables into buckets of days past due. Pure: no I/O, no clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

CURRENT = "current"


@dataclass(frozen=True)
class AgingPolicy:
    """Bucket upper bounds in days past due; past the last bound is "over <last>".

    The default gives current, 1-30, 31-60, 61-90, 91-180, 181-365, over 365."""

    bounds: tuple[int, ...] = (30, 60, 90, 180, 365)

    def __post_init__(self) -> None:
        if not self.bounds:
            raise ValueError("an aging policy needs at least one bucket bound")
        if self.bounds[0] <= 0:
            raise ValueError(f"aging bucket bounds must be positive, got {self.bounds}")
        if any(upper <= lower for lower, upper in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"aging bucket bounds must be strictly increasing, got {self.bounds}")

    @property
    def labels(self) -> tuple[str, ...]:
        lowers = (1, *(bound + 1 for bound in self.bounds[:-1]))
        ranges = (f"{lower}-{upper}" for lower, upper in zip(lowers, self.bounds, strict=True))
        return (CURRENT, *ranges, f"over {self.bounds[-1]}")

    def bucket_of(self, days_past_due: int) -> str:
        """The label of the bucket for this many days past due ("current" when not past due)."""
        if days_past_due <= 0:
            return CURRENT
        labels = self.labels
        for index, bound in enumerate(self.bounds):
            if days_past_due <= bound:
                return labels[index + 1]
        return labels[-1]


DEFAULT_POLICY = AgingPolicy()


def bucket_of(days_past_due: int, policy: AgingPolicy = DEFAULT_POLICY) -> str:
    return policy.bucket_of(days_past_due)


def days_past_due(due_date: dt.date, as_of: dt.date) -> int:
    return (as_of - due_date).days


def age(
    items: Iterable[tuple[dt.date, int]], as_of: dt.date, policy: AgingPolicy = DEFAULT_POLICY
) -> dict[str, int]:
    """Sum `(due_date, amount)` items into the policy's buckets as of a date; every label is present."""
    buckets = dict.fromkeys(policy.labels, 0)
    for due_date, amount in items:
        buckets[policy.bucket_of(days_past_due(due_date, as_of))] += amount
    return buckets


def age_by_currency(
    items: Iterable[tuple[str, dt.date, int]], as_of: dt.date, policy: AgingPolicy = DEFAULT_POLICY
) -> dict[str, dict[str, int]]:
    """`age` of `(currency, due_date, amount)` items, per currency present, in currency order.

    The portfolio aging and a debtor's statement both age the balance movements effective by the
    date this way, so a debtor's aging is its share of the portfolio's."""
    by_currency: dict[str, list[tuple[dt.date, int]]] = {}
    for currency, due_date, amount in items:
        by_currency.setdefault(currency, []).append((due_date, amount))
    return {currency: age(by_currency[currency], as_of, policy) for currency in sorted(by_currency)}
