"""HTTP for the collections KPIs: promises kept, cures, days to cure, the case funnel, agency
performance and disputes, per tenant and currency, as of any business date."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from contracts.policy import DunningPolicy, policy_in_force, rate_value
from services.dunning import kpi_store, store
from services.dunning.kpis import MonthCounts, agency_figures, first_day, month_figures, months_to
from services.runtime.auth import Principal
from services.runtime.database import driver_connection
from services.runtime.http import Authorize, ReadSession, api_responses
from services.runtime.params import IsoDate

Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]
DEFAULT_DISPUTE_LIMIT: int = DunningPolicy.model_fields["dispute_limit_days"].default
AsOf = Annotated[IsoDate, Query(description="The business date the figures are as of")]

COLLECTIONS = """Per currency, for each of the `months` calendar months up to the month of `as_of`
(only what happened on or before `as_of` counts), and the case funnel.

- `promises_made`: promises to pay recorded in the month.
- `promises_due`: promises whose promised date falls in the month (on or before `as_of`), leaving out
  those withdrawn on or before that date (replaced by a newer promise or a payment plan, or the case
  closed without them being paid).
- `promises_kept`: of those, the ones kept on or before `as_of` (the debtor's payments since the
  promise reached its amount, within the policy's grace days).
- `promise_kept_rate` = promises_kept / promises_due.
- `cases_closed`: cases closed in the month (nothing left outstanding); a case that opens again is a
  new case.
- `cured`: of those, the ones a payment closed and that were never placed with an agency while open.
- `cure_rate` = cured / cases_closed.
- `days_to_cure_by_step`: for the cured cases that reached a ladder step, the average number of days
  from the business date of the command of the last ladder step reached after the due date (courtesy
  reminders, recalls and tasks outside the ladder do not count) to the effective date of the payment
  that closed the case, grouped by that step.

Rates and averages are null when their denominator is zero.

`funnel`: the open cases (held or not) as they stand now, whatever `as_of`, by currency and current
ladder step (`none`: no step reached yet): how many and their overdue amount in minor units."""

AGENCIES = """Per agency, risk segment and currency, for placements made on or before `as_of`:

- `placed_cases`, `placed_minor`: placements and the overdue amount placed.
- `recovered_minor`: what the ledger shows paid, while placed, on the invoices overdue at placement
  (payments less their reversals), on or before `as_of`.
- `reported_minor`: the recoveries the agency reported, on or before `as_of`.
- `difference_minor` = reported_minor - recovered_minor (positive: the agency reports more than the
  ledger saw).
- `recovery_rate` = recovered_minor / placed_minor.
- `average_days_to_recover`: over placements whose placed amount the ledger shows recovered in full,
  the average days from placement to the payment that completed the recovery.
- `fees_minor` = recovered_minor x the agency's `fee_rate` in the policy in force on `as_of`, rounded
  half up to a minor unit; null when the policy gives none.

Rates and averages are null when their denominator is zero."""

DISPUTES = """Per currency, as of `as_of`:

- `opened`, `resolved`: disputes opened, and resolved, from the first of the month of `as_of` to
  `as_of`.
- `open`: disputes open on `as_of`; `open_minor`: the disputed invoices' outstanding amounts when the
  disputes were opened.
- `age_days`: median and maximum of `as_of` minus the opening date over the open disputes (the median
  of an even count is the mean of the two middle ages); null when none is open.
- `by_reason`: open disputes by the reason recorded (`unspecified`: none).
- `over_limit`: the open disputes older than the policy's `dispute_limit_days` (in the version in
  force on `as_of`; 30 days without one), oldest first, at most 1000."""


def kpi_router() -> APIRouter:
    api = APIRouter(responses=api_responses())

    @api.get(
        "/kpis/collections",
        tags=["kpis"],
        summary="Promises, cures and the case funnel",
        description=COLLECTIONS,
    )
    async def collections(
        principal: Reader,
        session: ReadSession,
        as_of: AsOf,
        months: Annotated[int, Query(ge=1, le=120)] = 12,
    ) -> dict[str, Any]:
        listed = months_to(as_of, months)
        connection = await driver_connection(session)
        counts = await kpi_store.collections(connection, principal.tenant_id, first_day(listed[0]), as_of)
        return {
            "tenant_id": principal.tenant_id,
            "as_of": as_of.isoformat(),
            "currencies": {
                currency: {"months": [month_figures(m, by_month.get(m, MonthCounts())) for m in listed]}
                for currency, by_month in sorted(counts.items())
            },
            "funnel": await kpi_store.funnel(connection, principal.tenant_id),
        }

    @api.get("/kpis/agencies", tags=["kpis"], summary="Agency performance", description=AGENCIES)
    async def agencies(principal: Reader, session: ReadSession, as_of: AsOf) -> dict[str, Any]:
        policy = await _policy(session, principal.tenant_id, as_of)
        rates: dict[str, Decimal] = {}
        if policy is not None and policy.agency is not None:
            rates = {a.agency_id: rate_value(a.fee_rate) for a in policy.agency.agencies if a.fee_rate}
        connection = await driver_connection(session)
        counts = await kpi_store.agencies(connection, principal.tenant_id, as_of)
        return {
            "tenant_id": principal.tenant_id,
            "as_of": as_of.isoformat(),
            "agencies": [agency_figures(c, rates.get(c.agency_id)) for c in counts],
        }

    @api.get("/kpis/disputes", tags=["kpis"], summary="Disputes", description=DISPUTES)
    async def disputes(principal: Reader, session: ReadSession, as_of: AsOf) -> dict[str, Any]:
        policy = await _policy(session, principal.tenant_id, as_of)
        limit = policy.dispute_limit_days if policy is not None else DEFAULT_DISPUTE_LIMIT
        connection = await driver_connection(session)
        found = await kpi_store.disputes(connection, principal.tenant_id, as_of.replace(day=1), as_of, limit)
        return {"tenant_id": principal.tenant_id, "as_of": as_of.isoformat(), "currencies": found}

    return api


async def _policy(session: ReadSession, tenant: str, as_of: dt.date) -> DunningPolicy | None:
    versions = (await store.load_policies(session, [tenant])).get(tenant, [])
    in_force = policy_in_force(versions, as_of)
    return in_force.document if in_force is not None else None
