"""Point-in-time payment-behaviour features of a debtor and of one of its invoices.

A feature "as of business date D" sees only what was known at the end of D: invoices issued on or
before D, payments with a value date on or before D, disputes raised on or before D. An invoice
settled after D is open at D and its lateness is unknown at D. Nothing here reads the clock.

Amounts stay integers of minor units in the facts; features are floats in major units (the model
needs numbers, and a ratio of two amounts is the same in any unit).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import astuple, dataclass, fields, replace
from statistics import fmean, median

from services.scoring.units import minor_per_major

RECENT = 3
"""How many of the latest settled invoices the trend of days late compares with all of them."""


@dataclass(frozen=True)
class InvoiceFact:
    """What became of one invoice, with the business date of each change (None: not yet)."""

    invoice_id: str
    issue_date: dt.date
    due_date: dt.date
    amount_minor: int
    settled_date: dt.date | None = None
    disputed_date: dt.date | None = None
    written_off_date: dt.date | None = None
    outstanding_minor: int | None = None
    """What is still owed now, if part was paid; None: the whole amount while it is open."""

    def outstanding(self) -> int:
        return self.amount_minor if self.outstanding_minor is None else self.outstanding_minor


@dataclass(frozen=True)
class DebtorHistory:
    tenant_id: str
    debtor_id: str
    currency: str
    invoices: tuple[InvoiceFact, ...]
    paperless: bool | None = None
    """Billed electronically (True) or on paper (False); None: not known."""
    credit_limit_minor: int | None = None


@dataclass(frozen=True)
class Features:
    """The model's inputs. None means "not known at D" (no settled invoice yet, no credit limit)."""

    invoice_count: float
    settled_count: float
    late_share: float | None
    mean_days_late: float | None
    days_late_trend: float | None
    mean_days_to_settle: float | None
    days_since_last_payment: float | None
    open_count: float
    overdue_count: float
    overdue_amount: float
    overdue_share_of_limit: float | None
    dispute_share: float | None
    paperless: float | None
    amount_ratio: float | None
    log_amount: float
    terms_days: float

    def row(self) -> list[float]:
        return [math.nan if v is None else float(v) for v in astuple(self)]

    def get(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Features))


def _major(amount_minor: int, currency: str) -> float:
    return float(amount_minor / minor_per_major(currency))


def _settled_by(inv: InvoiceFact, day: dt.date) -> dt.date | None:
    """The date the invoice stopped being owed (paid or written off), if that was on or before day."""
    ends = [d for d in (inv.settled_date, inv.written_off_date) if d is not None and d <= day]
    return min(ends) if ends else None


def days_late(inv: InvoiceFact, closed: dt.date) -> int:
    return max(0, (closed - inv.due_date).days)


def features_at(history: DebtorHistory, as_of: dt.date, invoice: InvoiceFact | None = None) -> Features:
    """The features of `invoice` (or, with None, of a typical next invoice issued on `as_of`) as known
    at the end of `as_of`. The invoice itself is never part of its own history."""
    known = [
        inv
        for inv in history.invoices
        if inv.issue_date <= as_of and (invoice is None or inv.invoice_id != invoice.invoice_id)
    ]
    closed = [(inv, d) for inv in known if (d := _settled_by(inv, as_of)) is not None]
    closed.sort(key=lambda pair: (pair[1], pair[0].invoice_id))
    open_ = [inv for inv in known if _settled_by(inv, as_of) is None]
    overdue = [inv for inv in open_ if inv.due_date < as_of]
    lateness = [days_late(inv, d) for inv, d in closed]
    to_settle = [(d - inv.issue_date).days for inv, d in closed if inv.written_off_date != d]
    payments = [inv.settled_date for inv, _ in closed if inv.settled_date and inv.settled_date <= as_of]
    currency = history.currency
    overdue_amount = _major(sum(inv.amount_minor for inv in overdue), currency)
    limit = history.credit_limit_minor
    amounts = [inv.amount_minor for inv in known]
    if invoice is not None:
        amount, terms = invoice.amount_minor, (invoice.due_date - invoice.issue_date).days
    else:
        amount = int(median(amounts)) if amounts else 0
        terms = round(fmean([(i.due_date - i.issue_date).days for i in known])) if known else 30
    return Features(
        invoice_count=float(len(known)),
        settled_count=float(len(closed)),
        late_share=fmean(d > 0 for d in lateness) if lateness else None,
        mean_days_late=fmean(lateness) if lateness else None,
        days_late_trend=(fmean(lateness[-RECENT:]) - fmean(lateness) if len(lateness) > RECENT else None),
        mean_days_to_settle=fmean(to_settle) if to_settle else None,
        days_since_last_payment=float((as_of - max(payments)).days) if payments else None,
        open_count=float(len(open_)),
        overdue_count=float(len(overdue)),
        overdue_amount=overdue_amount,
        overdue_share_of_limit=(overdue_amount / _major(limit, currency) if limit else None),
        dispute_share=(
            fmean(inv.disputed_date is not None and inv.disputed_date <= as_of for inv in known)
            if known
            else None
        ),
        paperless=None if history.paperless is None else float(history.paperless),
        amount_ratio=amount / median(amounts) if amounts and median(amounts) > 0 else None,
        log_amount=math.log1p(max(0.0, _major(amount, currency))),
        terms_days=float(terms),
    )


def known_on(history: DebtorHistory, day: dt.date) -> DebtorHistory:
    """The history as it stood at the end of `day`: later invoices dropped, later changes undone."""

    def by(d: dt.date | None) -> dt.date | None:
        return d if d is not None and d <= day else None

    return replace(
        history,
        invoices=tuple(
            replace(
                inv,
                settled_date=by(inv.settled_date),
                disputed_date=by(inv.disputed_date),
                written_off_date=by(inv.written_off_date),
                outstanding_minor=None,
            )
            for inv in history.invoices
            if inv.issue_date <= day
        ),
    )


@dataclass(frozen=True)
class Example:
    """One training example: an invoice's features as of its issue date and what became of it."""

    debtor_id: str
    invoice_id: str
    issue_date: dt.date
    features: Features
    late: bool
    days_to_settle: int


def is_late(inv: InvoiceFact) -> bool:
    return inv.settled_date is None or inv.settled_date > inv.due_date


def examples_known_before(histories: list[DebtorHistory], before: dt.date) -> list[Example]:
    """Every invoice whose outcome was known before `before` (it was paid before then), with its
    features as of its issue date: what a model trained on the day `before` could learn from."""
    out = []
    for history in histories:
        for inv in history.invoices:
            if inv.settled_date is None or inv.settled_date >= before:
                continue
            out.append(
                Example(
                    debtor_id=history.debtor_id,
                    invoice_id=inv.invoice_id,
                    issue_date=inv.issue_date,
                    features=features_at(history, inv.issue_date, inv),
                    late=is_late(inv),
                    days_to_settle=(inv.settled_date - inv.issue_date).days,
                )
            )
    out.sort(key=lambda e: (e.issue_date, e.debtor_id, e.invoice_id))
    return out
