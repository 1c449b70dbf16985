"""Expected credit loss by aging bucket: the simplified approach's provision matrix.

Roll rates are read from the history, per tenant and currency, between consecutive month ends of
the lookback window up to the business date: of the amount in a bucket at one month end, the share
that is in a worse bucket at the next (still unpaid and older, or written off). An invoice more than
90 days past due, or written off, is in default (the presumption of IFRS 9, 5.5.37). The loss rate
of a bucket is the product of the roll rates from it to default, times the loss given default; the
provision is the balance of each bucket as of the date times its loss rate.

Every snapshot is taken with what was known at its own date, and no date after the business date
is looked at: an invoice paid after it is still open in the matrix.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from services.ledger.kpi_calendar import month_ends as month_ends  # re-exported: callers import it from here
from services.scoring.features import DebtorHistory, InvoiceFact

BUCKETS: tuple[str, ...] = ("current", "1-30", "31-60", "61-90", "default")
DEFAULT = "default"
DEFAULT_AFTER_DAYS = 90


def bucket_at(inv: InvoiceFact, day: dt.date) -> str | None:
    """The invoice's bucket at the end of `day`, or None when it was not owed then."""
    if inv.issue_date > day or (inv.settled_date is not None and inv.settled_date <= day):
        return None
    if inv.written_off_date is not None and inv.written_off_date <= day:
        return DEFAULT
    past_due = (day - inv.due_date).days
    if past_due > DEFAULT_AFTER_DAYS:
        return DEFAULT
    if past_due <= 0:
        return "current"
    return BUCKETS[min(3, (past_due - 1) // 30 + 1)]


@dataclass(frozen=True)
class BucketProvision:
    bucket: str
    balance_minor: int
    roll_rate: float | None
    """Share of this bucket's amount that rolled to a worse one a month later; None: never seen."""
    loss_rate: float
    provision_minor: int


@dataclass(frozen=True)
class ProvisionMatrix:
    tenant_id: str
    currency: str
    as_of: dt.date
    window: tuple[dt.date, dt.date]
    buckets: tuple[BucketProvision, ...]

    @property
    def balance_minor(self) -> int:
        return sum(b.balance_minor for b in self.buckets)

    @property
    def provision_minor(self) -> int:
        return sum(b.provision_minor for b in self.buckets)


def roll_rates(invoices: Sequence[InvoiceFact], ends: Sequence[dt.date]) -> dict[str, float | None]:
    rolled: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    for start, end in itertools.pairwise(ends):
        for inv in invoices:
            before = bucket_at(inv, start)
            if before is None or before == DEFAULT:
                continue
            held[before] += inv.amount_minor
            after = bucket_at(inv, end)
            if after is not None and BUCKETS.index(after) > BUCKETS.index(before):
                rolled[before] += inv.amount_minor
    return {b: (rolled[b] / held[b] if held[b] else None) for b in BUCKETS[:-1]}


def provision_matrix(
    histories: Sequence[DebtorHistory],
    as_of: dt.date,
    *,
    lookback_months: int = 12,
    loss_given_default: float = 1.0,
) -> list[ProvisionMatrix]:
    """One matrix per (tenant, currency) among the histories."""
    groups: dict[tuple[str, str], list[InvoiceFact]] = defaultdict(list)
    for h in histories:
        groups[(h.tenant_id, h.currency)].extend(h.invoices)
    ends = month_ends(as_of, lookback_months)
    out = []
    for (tenant, currency), invoices in sorted(groups.items()):
        rolls = roll_rates(invoices, ends)
        balances: dict[str, int] = defaultdict(int)
        for inv in invoices:
            if (bucket := bucket_at(inv, as_of)) is not None:
                balances[bucket] += inv.outstanding()
        rows = []
        for i, bucket in enumerate(BUCKETS):
            chain = [rolls[b] or 0.0 for b in BUCKETS[i:-1]]
            loss = loss_given_default * math.prod(chain)
            rows.append(
                BucketProvision(
                    bucket=bucket,
                    balance_minor=balances[bucket],
                    roll_rate=rolls.get(bucket),
                    loss_rate=round(loss, 6),
                    provision_minor=round(balances[bucket] * loss),
                )
            )
        out.append(ProvisionMatrix(tenant, currency, as_of, (ends[0], ends[-1]), tuple(rows)))
    return out
