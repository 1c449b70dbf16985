"""A credit limit to recommend for each debtor, by a rule anyone can check:

    recommended limit = usual monthly billing * terms factor * (1 - probability of paying late)

- usual monthly billing: what the debtor was invoiced in the 365 days up to the business date,
  divided by the months of that window it was a customer (its first invoice on or before the date
  starts its relationship; at least one month, at most twelve, a month being 365 / 12 days);
- terms factor: 1 + the debtor's average payment terms in days / 30, i.e. the months of billing
  a debtor paying on its terms owes at the most (a month being invoiced plus the terms running);
- the probability of paying late is the debtor's score as a probability;
- the result is rounded down to two significant figures, in steps of at least 100 currency units.

No invoice in the window: no recommendation.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from statistics import fmean

from services.scoring.features import DebtorHistory
from services.scoring.units import minor_per_major

WINDOW_DAYS = 365
MONTH_DAYS = WINDOW_DAYS / 12
MIN_STEP_MAJOR = 100


@dataclass(frozen=True)
class CreditLimit:
    usual_monthly_billing_minor: int
    terms_factor: float
    recommended_minor: int


def usual_monthly_billing(history: DebtorHistory, as_of: dt.date) -> int | None:
    """Minor units invoiced per month over the last year (or the months since the first invoice)."""
    start = as_of - dt.timedelta(days=WINDOW_DAYS)
    known = [i for i in history.invoices if i.issue_date <= as_of]
    billed = [i.amount_minor for i in known if i.issue_date > start]
    if not billed:
        return None
    first = min(i.issue_date for i in known)
    months = min(12.0, max(1.0, math.ceil((as_of - first).days / MONTH_DAYS)))
    return round(sum(billed) / months)


def terms_factor(history: DebtorHistory, as_of: dt.date) -> float:
    known = [i for i in history.invoices if i.issue_date <= as_of]
    days = fmean((i.due_date - i.issue_date).days for i in known) if known else 30.0
    return round(1 + max(0.0, days) / 30, 2)


def round_down(amount_minor: float, currency: str) -> int:
    """Down to two significant figures, in steps of at least `MIN_STEP_MAJOR` currency units."""
    if amount_minor <= 0:
        return 0
    minimum = MIN_STEP_MAJOR * minor_per_major(currency)
    step = max(minimum, 10 ** (len(str(int(amount_minor))) - 2))
    return int(amount_minor // step * step)


def recommend(history: DebtorHistory, as_of: dt.date, p_late: float) -> CreditLimit | None:
    monthly = usual_monthly_billing(history, as_of)
    if monthly is None:
        return None
    factor = terms_factor(history, as_of)
    limit = round_down(monthly * factor * (1 - p_late), history.currency)
    return CreditLimit(monthly, factor, limit)
