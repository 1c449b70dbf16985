"""Credit sales: what a change of one invoice adds to or takes from the amount invoiced, by date. Pure.

An invoice is a sale of its amount on its issue date; an adjustment of the amount changes the sales
of the date it takes effect by the difference; a cancellation takes the amount back on the
cancellation date. Payments, credit notes and write-offs settle receivables and are no sales."""

from __future__ import annotations

import datetime as dt

from services.ledger.domain import Invoice


def sales_changes(before: Invoice | None, after: Invoice) -> list[tuple[dt.date, int]]:
    """(date, signed amount) of sales an event made by turning `before` into `after` (None: new)."""
    if before is None:
        return [] if after.cancelled_on else [(after.issue_date, after.amount)]
    if before.cancelled_on:
        return []
    if after.cancelled_on:
        return [(after.cancelled_on, -before.amount)]
    if after.amount != before.amount:
        return [(after.adjusted_on or after.issue_date, after.amount - before.amount)]
    return []
