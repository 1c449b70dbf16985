"""The queries behind the receivables KPIs: aggregates only (the credit sales per day, written with
the balance movements, and the aging totals), never the items, whatever the size of the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.ledger.store import SCHEMA
from services.runtime.database import driver_connection


async def monthly_sales(
    session: AsyncSession, tenant_id: str, through: dt.date
) -> dict[str, dict[dt.date, int]]:
    """Credit sales per currency and month (keyed by its first day), of every month up to `through`
    (the month holding it only through that date)."""
    connection = await driver_connection(session)
    rows = await connection.fetch(
        "SELECT currency, date_trunc('month', sale_date)::date AS month, sum(amount) AS amount"
        f" FROM {SCHEMA}.credit_sales WHERE tenant_id = $1 AND sale_date <= $2 GROUP BY 1, 2",
        tenant_id,
        through,
    )
    sales: dict[str, dict[dt.date, int]] = {}
    for r in rows:
        sales.setdefault(r["currency"], {})[r["month"]] = int(r["amount"])
    return sales


async def outstanding_by_closing(
    session: AsyncSession, tenant_id: str, closings: Sequence[dt.date]
) -> list[tuple[str, dt.date, int, int]]:
    """(currency, due date, slot, amount) from the aging totals effective by the last closing date:
    slot i holds what took effect after closing i - 1 and by closing i (slot 0: by the first). One
    pass over the tenant's totals whatever the number of closings; `kpis.agings_at` adds them up."""
    connection = await driver_connection(session)
    rows = await connection.fetch(
        "SELECT currency, due_date, width_bucket(effective_date, $2::date[]) AS slot, sum(amount) AS amount"
        f" FROM {SCHEMA}.aging_totals WHERE tenant_id = $1 AND effective_date <= $3"
        " GROUP BY 1, 2, 3",
        tenant_id,
        [closing + dt.timedelta(days=1) for closing in closings[:-1]],
        closings[-1],
    )
    return [(r["currency"], r["due_date"], r["slot"], int(r["amount"])) for r in rows if r["amount"]]
