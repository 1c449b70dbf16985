"""The ledger's receivables KPIs over HTTP: DSO, CEI and ADD per month, the aging trend and roll rates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.ledger import kpi_store
from services.ledger.api import AsOf, Reader, _as_of, _policy
from services.ledger.kpi_calendar import Period, closing_dates, periods
from services.ledger.kpis import Aging, aging_trend, agings_at, receivables_kpis
from services.runtime.http import ReadSession, api_responses, error_responses

Months = Annotated[int, Query(ge=1, le=60, description="How many months, the one holding the date last")]

RECEIVABLES_DESCRIPTION = """\
Per currency, one row per month, oldest first; the last month runs from its first day through the
as-of date. Amounts in minor units. Sales are credit sales: invoices on their issue date, amount
adjustments on their effective date, cancellations taken back on their date (payments, credit notes
and write-offs are no sales). Receivables are the outstanding at the period's end, current the part
not yet past due then, overdue the rest; opening receivables are those at the previous month end.
Days are rounded to 2 places; a ratio with a zero denominator is null.

- `dso_simple_days` = receivables / sales of the period x days of the period
- `dso_count_back_days`: from the receivables, subtract each month's sales walking back from this
  one, counting its days, until the rest is smaller than a month's sales; then add rest / that
  month's sales x its days (null when the sales history runs out first)
- `best_possible_dso_days` = current receivables / sales of the period x days of the period
- `average_days_delinquent` = `dso_simple_days` - `best_possible_dso_days` (overdue / sales x days)
- `cei_percent` = (opening + sales - closing receivables) / (opening + sales - closing current
  receivables) x 100
"""

AGING_TREND_DESCRIPTION = """\
Per currency, the aging at each month end, oldest first, the last at the as-of date, with
`share_current` = current / total. `roll_rates` per month: for each bucket k but the last, the
balance in bucket k+1 at this month end / the balance in bucket k at the previous month end (the
as-of date for the last month). An aggregate flow rate over the portfolio's totals, not a tracing
of invoices: it can exceed 1 when bucket k+1 also gains from elsewhere (a due date moved, an amount
raised). Shares and rates are rounded to 4 places; null when the denominator is zero.
"""


@dataclass(frozen=True)
class _Months:
    """The months asked for, with the aging per currency at the month end before them and at each
    one's end."""

    tenant_id: str
    as_of: dt.date
    periods: list[Period]
    agings: dict[str, list[Aging]]
    labels: tuple[str, ...]


async def _months(session: ReadSession, tenant_id: str, as_of: dt.date | None, months: int) -> _Months:
    day = await _as_of(session, tenant_id, as_of)
    policy = await _policy(session, tenant_id)
    closings = closing_dates(day, months)
    rows = await kpi_store.outstanding_by_closing(session, tenant_id, closings)
    return _Months(tenant_id, day, periods(day, months), agings_at(rows, closings, policy), policy.labels)


def router() -> APIRouter:
    api = APIRouter(prefix="/v1/kpis", tags=["ledger"], responses=api_responses())

    @api.get(
        "/receivables",
        summary="DSO (count-back and simple), best possible DSO, ADD and CEI per currency and month",
        description=RECEIVABLES_DESCRIPTION,
        responses=error_responses(409),
    )
    async def receivables(
        principal: Reader, session: ReadSession, as_of: AsOf = None, months: Months = 12
    ) -> dict[str, Any]:
        m = await _months(session, principal.tenant_id, as_of, months)
        sales = await kpi_store.monthly_sales(session, m.tenant_id, m.as_of)
        nothing_owed = [dict.fromkeys(m.labels, 0)] * (months + 1)
        currencies = {
            currency: receivables_kpis(
                m.periods, m.agings.get(currency, nothing_owed), sales.get(currency, {})
            )
            for currency in sorted(m.agings.keys() | _sold_in(sales, m.periods))
        }
        return {"tenant_id": m.tenant_id, "as_of": m.as_of, "months": months, "currencies": currencies}

    @api.get(
        "/aging-trend",
        summary="The aging per currency at each month end, the share current and the roll rates",
        description=AGING_TREND_DESCRIPTION,
        responses=error_responses(409),
    )
    async def trend(
        principal: Reader, session: ReadSession, as_of: AsOf = None, months: Months = 12
    ) -> dict[str, Any]:
        m = await _months(session, principal.tenant_id, as_of, months)
        trends = {currency: aging_trend(m.periods, series, m.labels) for currency, series in m.agings.items()}
        return {"tenant_id": m.tenant_id, "as_of": m.as_of, "buckets": list(m.labels), "currencies": trends}

    return api


def _sold_in(sales: dict[str, dict[dt.date, int]], spans: list[Period]) -> set[str]:
    """The currencies with sales in one of the periods."""
    starts = {span.start for span in spans}
    return {currency for currency, months in sales.items() if any(months.get(s) for s in starts)}
