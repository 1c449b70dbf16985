"""Which debts to propose for write-off, and why.

A debtor's overdue debt in a currency is proposed when

    expected recovery = probability of payment * overdue amount  <  cost of the next action

(the action and its cost follow the bucket of its oldest overdue invoice, as in the worklist), or
when its oldest overdue invoice is more than `max_days_past_due` days past due. Each overdue invoice
is judged the same way on its own: its outstanding amount at the debtor's probability of payment
against the cost of the action its own bucket calls for, and its own days past due. The probability
of payment is the debtor's (1 - its probability of paying late): an overdue invoice's own
probability of paying late is 1 by definition and says nothing about recovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contracts.money import format_major
from services.scoring.batch import ScoredColumns
from services.scoring.model import DebtorScore
from services.scoring.worklist import ACTIONS, ActionCosts, bucket_of_days, bucket_places

MAX_DAYS_PAST_DUE = 365


@dataclass(frozen=True)
class WriteOffRule:
    max_days_past_due: int = MAX_DAYS_PAST_DUE
    costs: ActionCosts = field(default_factory=ActionCosts)


@dataclass(frozen=True)
class InvoiceProposal:
    invoice_id: str
    outstanding_minor: int
    days_past_due: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class WriteOffProposal:
    proposed: bool
    """The debtor's whole overdue debt in the currency."""
    reasons: tuple[str, ...]
    expected_recovery_minor: int
    cost_minor: int
    invoices: tuple[InvoiceProposal, ...]
    """The overdue invoices proposed on their own."""


def _money(amount_minor: int, currency: str) -> str:
    return f"{currency} {format_major(amount_minor, currency)}"


def _reasons(
    amount: int, p_pay: float, days: int, currency: str, rule: WriteOffRule
) -> tuple[int, int, list[str]]:
    action = ACTIONS[bucket_of_days(days)]
    cost = rule.costs.of(action)
    recovery = round(p_pay * amount)
    out = []
    if recovery < cost:
        out.append(
            f"expected recovery {_money(recovery, currency)} ({p_pay:.0%} of {_money(amount, currency)})"
            f" is below the cost of the next action ({action.replace('_', ' ')}, {_money(cost, currency)})"
        )
    if days > rule.max_days_past_due:
        out.append(f"{days} days past due, more than the maximum of {rule.max_days_past_due}")
    return recovery, cost, out


def propose(score: DebtorScore, rule: WriteOffRule = WriteOffRule()) -> WriteOffProposal | None:
    """The write-off proposal for a debtor's score; None when nothing is overdue."""
    if score.overdue_minor <= 0 or score.oldest_days_past_due <= 0:
        return None
    p_pay = round(1.0 - score.p_late, 4)
    recovery, cost, why = _reasons(
        score.overdue_minor, p_pay, score.oldest_days_past_due, score.currency, rule
    )
    invoices = []
    for inv in score.invoices:
        days = (score.as_of - inv.due_date).days
        if days <= 0 or inv.outstanding_minor <= 0:
            continue
        _, _, own = _reasons(inv.outstanding_minor, p_pay, days, score.currency, rule)
        if own:
            invoices.append(InvoiceProposal(inv.invoice_id, inv.outstanding_minor, days, tuple(own)))
    return WriteOffProposal(bool(why), tuple(why), recovery, cost, tuple(invoices))


def propose_each(scored: ScoredColumns, rule: WriteOffRule = WriteOffRule()) -> list[WriteOffProposal | None]:
    """`propose` for each debtor of a chunk scored as columns, for the debtors it has something to
    say of (a reason to propose the debt or one of its invoices; None for the others), without an
    object per score: only the debts and invoices with a reason are judged one by one."""
    p_pay = [round(1.0 - p, 4) for p in scored.p_late]
    pay = np.array(p_pay, dtype=float)
    owner = np.repeat(np.arange(scored.n), np.diff(scored.invoice_starts))
    days = scored.as_of.toordinal() - np.array(scored.invoice_due, dtype=np.int64)
    amount = np.array(scored.invoice_outstanding, dtype=np.int64)
    judged = (days > 0) & (amount > 0) & _has_reasons(pay[owner], amount, days, rule)
    own: dict[int, list[InvoiceProposal]] = {}
    for k, i in zip(np.flatnonzero(judged).tolist(), owner[judged].tolist(), strict=True):
        d, a = int(days[k]), int(amount[k])
        _, _, why = _reasons(a, p_pay[i], d, scored.currencies[i], rule)
        if why:
            own.setdefault(i, []).append(InvoiceProposal(scored.invoice_ids[k], a, d, tuple(why)))
    # Amounts as floats: a debtor's overdue sum may pass 2**63; `_reasons` multiplies it as a float too.
    overdue = np.array(scored.overdue_minor, dtype=float)
    oldest = np.array(scored.oldest_days_past_due, dtype=np.int64)
    debt = (overdue > 0) & (oldest > 0) & _has_reasons(pay, overdue, np.maximum(oldest, 1), rule)
    out: list[WriteOffProposal | None] = [None] * scored.n
    # A debtor with an overdue invoice proposed has an overdue debt: its own judgement is then made too.
    for i in sorted({*np.flatnonzero(debt).tolist(), *own}):
        overdue_minor, days_past_due = scored.overdue_minor[i], scored.oldest_days_past_due[i]
        recovery, cost, why = _reasons(overdue_minor, p_pay[i], days_past_due, scored.currencies[i], rule)
        out[i] = WriteOffProposal(bool(why), tuple(why), recovery, cost, tuple(own.get(i, ())))
    return out


def _has_reasons(p_pay: np.ndarray, amount: np.ndarray, days: np.ndarray, rule: WriteOffRule) -> np.ndarray:
    """Where `_reasons` would give a reason, for many amounts at once (days past due at least 1)."""
    cost = np.array([rule.costs.of(action) for action in ACTIONS.values()])[bucket_places(days)]
    # rint rounds half to even, as Python's round does.
    said: np.ndarray = (np.rint(p_pay * amount) < cost) | (days > rule.max_days_past_due)
    return said
