"""Receivables KPIs per currency and month: DSO, best possible DSO, ADD, CEI, the aging trend and
roll rates between buckets. Pure: the balances and sales come in, aggregated by the store.

A month's figures are measured over a `Period` (its days; the month holding the as-of date runs
through that date): its credit sales (`kpi_sales`), the receivables at its closing date and the part
of them not yet past due (current), and the receivables at the previous month end (opening).
A ratio whose denominator is zero is None."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.ledger.aging import CURRENT, AgingPolicy, age
from services.ledger.kpi_calendar import Period

Aging = dict[str, int]
"""Outstanding per aging bucket at one date."""


def count_back_dso(receivables: int, periods: Sequence[tuple[int, int]]) -> float | None:
    """Days of the latest sales that the receivables amount to, by the count-back method.

    `periods` are (sales, days), latest first. Walking back from the latest, each period whose sales
    the rest of the receivables covers is subtracted and its days counted; the first one it does not
    cover adds rest / sales x its days. None when the history runs out first."""
    if receivables <= 0:
        return 0.0
    rest, days = receivables, 0.0
    for sales, period_days in periods:
        if rest < sales:
            return days + rest / sales * period_days
        rest -= max(sales, 0)  # a month whose cancellations exceed its sales sold nothing
        days += period_days
        if rest == 0:
            return days
    return None


def simple_dso(receivables: int, sales: int, days: int) -> float | None:
    """Ending receivables / credit sales of the period x days in the period."""
    return receivables / sales * days if sales > 0 else None


def best_possible_dso(current: int, sales: int, days: int) -> float | None:
    """Current (not past due) receivables / credit sales of the period x days in the period."""
    return simple_dso(current, sales, days)


def average_days_delinquent(receivables: int, current: int, sales: int, days: int) -> float | None:
    """Simple DSO - best possible DSO, both over the same period: overdue / sales x days."""
    dso, best = simple_dso(receivables, sales, days), best_possible_dso(current, sales, days)
    return None if dso is None or best is None else dso - best


def collection_effectiveness(opening: int, sales: int, closing: int, closing_current: int) -> float | None:
    """CEI = (opening + sales - closing) / (opening + sales - closing current) x 100."""
    collectible = opening + sales - closing_current
    return (opening + sales - closing) / collectible * 100 if collectible else None


def _rounded(value: float | None, places: int = 2) -> float | None:
    return None if value is None else round(value, places)


def agings_at(
    rows: Iterable[tuple[str, dt.date, int, int]], closings: Sequence[dt.date], policy: AgingPolicy
) -> dict[str, list[Aging]]:
    """The aging at each closing date, per currency, from (currency, due date, slot, amount) rows:
    amounts effective after closing `slot - 1` and by closing `slot`, so a row counts at its slot's
    closing and every later one."""
    by_slot: dict[str, list[dict[dt.date, int]]] = {}
    for currency, due_date, slot, amount in rows:
        slots = by_slot.setdefault(currency, [{} for _ in closings])
        slots[slot][due_date] = slots[slot].get(due_date, 0) + amount
    agings: dict[str, list[Aging]] = {}
    for currency in sorted(by_slot):
        outstanding: dict[dt.date, int] = {}
        agings[currency] = []
        for closing, added in zip(closings, by_slot[currency], strict=True):
            for due_date, amount in added.items():
                outstanding[due_date] = outstanding.get(due_date, 0) + amount
            agings[currency].append(age(outstanding.items(), closing, policy))
    return agings


def _sales_back_from(period: Period, monthly_sales: Mapping[dt.date, int]) -> list[tuple[int, int]]:
    """(sales, days) of the period, then of each earlier month back to the first with sales."""
    first = min(monthly_sales, default=period.start)
    walk = [(monthly_sales.get(period.start, 0), period.days)]
    month = period.start
    while month > first:
        end = month - dt.timedelta(days=1)
        month = end.replace(day=1)
        walk.append((monthly_sales.get(month, 0), end.day))
    return walk


def receivables_kpis(
    periods: Sequence[Period], agings: Sequence[Aging], monthly_sales: Mapping[dt.date, int]
) -> list[dict[str, Any]]:
    """One row per period, oldest first. `agings` holds the aging at the month end before the first
    period, then at each period's end; `monthly_sales` the credit sales by first day of the month
    (the month holding the as-of date through that date)."""
    rows = []
    for period, (opening, closing) in zip(periods, itertools.pairwise(agings), strict=True):
        sales = monthly_sales.get(period.start, 0)
        receivables, current = sum(closing.values()), closing[CURRENT]
        rows.append(
            {
                "month": period.month,
                "period_start": period.start,
                "period_end": period.end,
                "days": period.days,
                "sales_minor": sales,
                "receivables_minor": receivables,
                "current_minor": current,
                "overdue_minor": receivables - current,
                "dso_count_back_days": _rounded(
                    count_back_dso(receivables, _sales_back_from(period, monthly_sales))
                ),
                "dso_simple_days": _rounded(simple_dso(receivables, sales, period.days)),
                "best_possible_dso_days": _rounded(best_possible_dso(current, sales, period.days)),
                "average_days_delinquent": _rounded(
                    average_days_delinquent(receivables, current, sales, period.days)
                ),
                "cei_percent": _rounded(
                    collection_effectiveness(sum(opening.values()), sales, receivables, current)
                ),
            }
        )
    return rows


def roll_rates(before: Aging, after: Aging, labels: Sequence[str]) -> dict[str, float | None]:
    """For each bucket but the last: the balance in the next bucket at `after` over the balance in
    this bucket at `before`. An aggregate flow rate, not a tracing of invoices: it may exceed 1 when
    the next bucket also gains from elsewhere (a due date moved, an amount raised)."""
    return {
        label: (after[following] / before[label] if before[label] else None)
        for label, following in itertools.pairwise(labels)
    }


def aging_trend(
    periods: Sequence[Period], agings: Sequence[Aging], labels: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The aging at each period's end with the share current, and the roll rates into it from the
    previous month end; oldest first. `agings` as for `receivables_kpis`."""
    points, rates = [], []
    for period, (before, after) in zip(periods, itertools.pairwise(agings), strict=True):
        total = sum(after.values())
        points.append(
            {
                "month": period.month,
                "as_of": period.end,
                "total_minor": total,
                "buckets_minor": after,
                "share_current": _rounded(after[CURRENT] / total if total else None, 4),
            }
        )
        rolls = roll_rates(before, after, labels)
        rates.append({"month": period.month, "rates": {k: _rounded(v, 4) for k, v in rolls.items()}})
    return {"points": points, "roll_rates": rates}
