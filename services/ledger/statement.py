"""A debtor's statement as of a business date: open items, balances, unapplied cash and aging per
currency, the invoices paid, and those settled by credit notes.

Pure. Everything is as it stood on the date (invoices issued later are absent, cash valued later has
not come, what was settled later is still open):

- Open items, balances and aging come from the debtor's balance movements effective by the date
  (`MovementLine`), the rows the portfolio aging sums: the statement's aging is the debtor's share of
  the portfolio aging as of the same date, and with the movements recorded by a past moment it is
  the statement as reported then. Without recorded movements, the ledger's timelines stand in for
  them (each invoice under its current due date).
- Unapplied cash and what paid each settled invoice come from the debtor's ledger read as of the
  date (sources valued by then and not reversed by then; applications in effect on the date,
  including those undone later). These always use everything known now.

Payments and credit notes are kept apart: a credit note is not money received. An invoice settled
on the date is in `payment_history` when cash (a payment) settled any of it; its `paid_on` is the
date of the last cash applied to it, and days to pay and days late count to that date, so a credit
note issued for the rest later does not make the debtor look slow. An invoice settled by credit
notes alone is in `settled_by_credit`, with no days to pay. Invoices cancelled or written off (in
whole or in part) by the date are in neither list."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from contracts.journal import DebtorProfile
from services.ledger.aging import DEFAULT_POLICY, AgingPolicy, age, age_by_currency, days_past_due
from services.ledger.domain import CashSource, DebtorLedger, InvoiceStatus, SourceKind


@dataclass(frozen=True)
class MovementLine:
    """The net change of one invoice's outstanding under one due date, effective from one date."""

    invoice_id: str
    currency: str
    due_date: dt.date
    effective_date: dt.date
    delta: int


@dataclass(frozen=True)
class OpenItem:
    invoice_id: str
    currency: str
    issue_date: dt.date
    due_date: dt.date
    """The due date on the statement's date."""
    amount: int
    """The invoice's amount as it stands now (later adjustments included)."""
    outstanding: int
    days_past_due: int
    status: InvoiceStatus


@dataclass(frozen=True)
class CurrencyBalance:
    currency: str
    balance: int
    """Σ outstanding of the currency's invoices."""
    unapplied: int
    """Σ unapplied cash of the currency's payments and credit notes (earmarked cash included)."""
    aging: Mapping[str, int]
    """Outstanding per aging bucket label, every label present; sums to `balance`."""


@dataclass(frozen=True)
class PaidInvoice:
    """An invoice settled with cash (perhaps partly with credit notes)."""

    invoice_id: str
    currency: str
    amount: int
    issue_date: dt.date
    due_date: dt.date
    settled_on: dt.date
    """From when nothing was left outstanding."""
    paid_on: dt.date
    """When the last cash applied to it took effect: days to pay and days late count to this date."""
    paid: int
    """Cash applied to it."""
    credited: int
    """Credit notes applied to it."""
    discounted: int
    """Early-payment discounts that closed the rest (as of the statement's date)."""
    days_to_pay: int
    days_late: int


@dataclass(frozen=True)
class CreditedInvoice:
    """An invoice settled by credit notes alone: nothing paid, so no payment behaviour to tell."""

    invoice_id: str
    currency: str
    amount: int
    issue_date: dt.date
    due_date: dt.date
    settled_on: dt.date
    credit_notes: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    tenant_id: str
    debtor_id: str
    as_of: dt.date
    known_at: dt.datetime | None
    profile: DebtorProfile | None
    open_items: tuple[OpenItem, ...]
    currencies: tuple[CurrencyBalance, ...]
    payment_history: tuple[PaidInvoice, ...]
    settled_by_credit: tuple[CreditedInvoice, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-compatible data: dates as ISO strings, the profile as its JSON form."""
        data: dict[str, Any] = _jsonable(asdict(self))
        data["profile"] = self.profile.model_dump(mode="json") if self.profile else None
        return data


def movement_lines(state: DebtorLedger) -> list[MovementLine]:
    """The ledger's timelines as movement lines, each invoice under its current due date, with a
    line on its issue date even when what was issued was settled the same day."""
    lines = []
    for invoice_id, invoice in state.invoices.items():
        timeline = dict(state.timelines.get(invoice_id, ()))
        timeline.setdefault(invoice.issue_date, 0)
        lines += [
            MovementLine(invoice_id, invoice.currency, invoice.due_date, day, delta)
            for day, delta in sorted(timeline.items())
        ]
    return lines


def statement(
    state: DebtorLedger,
    as_of: dt.date,
    policy: AgingPolicy = DEFAULT_POLICY,
    *,
    movements: Iterable[MovementLine] | None = None,
    known_at: dt.datetime | None = None,
) -> Statement:
    """The statement as of `as_of`, from the debtor's recorded `movements` (by default the ledger's
    timelines); `known_at` only says which moment the movements were chosen for."""
    lines = [
        m for m in (movement_lines(state) if movements is None else movements) if m.effective_date <= as_of
    ]
    balances = _invoice_balances(lines)
    open_items = sorted(
        (
            _open_item(state, invoice_id, balance, as_of)
            for invoice_id, balance in balances.items()
            if balance.outstanding > 0
        ),
        key=lambda i: (i.due_date, i.issue_date, i.invoice_id),
    )
    sources = [s for s in state.sources.values() if s.value_date <= as_of]
    aging = age_by_currency(((m.currency, m.due_date, m.delta) for m in lines), as_of, policy)
    currencies = sorted(aging.keys() | {s.currency for s in sources})
    paid, credited = _settlements(state, balances, as_of)
    return Statement(
        tenant_id=state.tenant_id,
        debtor_id=state.debtor_id,
        as_of=as_of,
        known_at=known_at,
        profile=state.profile,
        open_items=tuple(open_items),
        currencies=tuple(
            CurrencyBalance(
                currency=currency,
                balance=sum(i.outstanding for i in open_items if i.currency == currency),
                unapplied=sum(_unapplied_on(s, as_of) for s in sources if s.currency == currency),
                aging=aging.get(currency) or age((), as_of, policy),
            )
            for currency in currencies
        ),
        payment_history=tuple(sorted(paid, key=lambda p: (p.paid_on, p.invoice_id))),
        settled_by_credit=tuple(sorted(credited, key=lambda c: (c.settled_on, c.invoice_id))),
    )


# --- invoices as of the date, from their movements ------------------------------------------


@dataclass(frozen=True)
class _Balance:
    currency: str
    outstanding: int
    due_date: dt.date
    settled_on: dt.date | None
    """From when the outstanding has stayed at zero, if it is zero."""


def _invoice_balances(lines: Sequence[MovementLine]) -> dict[str, _Balance]:
    by_invoice: dict[str, list[MovementLine]] = {}
    for line in lines:
        by_invoice.setdefault(line.invoice_id, []).append(line)
    return {invoice_id: _balance(own) for invoice_id, own in by_invoice.items()}


def _balance(lines: list[MovementLine]) -> _Balance:
    per_due: dict[dt.date, int] = {}
    per_day: dict[dt.date, int] = {}
    for line in lines:
        per_due[line.due_date] = per_due.get(line.due_date, 0) + line.delta
        per_day[line.effective_date] = per_day.get(line.effective_date, 0) + line.delta
    # The due date of the latest movement; on a day that moved the due date, the one holding the balance.
    latest = max(line.effective_date for line in lines)
    due_date = max(
        (line.due_date for line in lines if line.effective_date == latest),
        key=lambda due: (per_due[due], due),
    )
    outstanding, since = 0, None
    for day in sorted(per_day):
        outstanding += per_day[day]
        since = (since or day) if outstanding == 0 else None
    return _Balance(lines[0].currency, outstanding, due_date, since)


def _open_item(state: DebtorLedger, invoice_id: str, balance: _Balance, as_of: dt.date) -> OpenItem:
    invoice = state.invoices[invoice_id]
    return OpenItem(
        invoice_id=invoice_id,
        currency=balance.currency,
        issue_date=invoice.issue_date,
        due_date=balance.due_date,
        amount=invoice.amount,
        outstanding=balance.outstanding,
        days_past_due=days_past_due(balance.due_date, as_of),
        status="open",
    )


# --- cash as of the date, from the ledger ------------------------------------------------------


@dataclass(frozen=True)
class _Applied:
    """Part of a source applied to an invoice on the date."""

    source_id: str
    kind: SourceKind
    invoice_id: str
    amount: int
    effective_date: dt.date


def _applied_on(source: CashSource, day: dt.date) -> list[_Applied]:
    """What of the source was applied on `day`: its applications in effect by then, and those
    undone later."""
    current = [
        (a.invoice_id, a.amount, a.effective_date) for a in source.applications if a.effective_date <= day
    ]
    undone = [
        (r.invoice_id, r.amount, r.effective_date)
        for r in source.released
        if r.effective_date <= day < r.released_on
    ]
    return [_Applied(source.source_id, source.kind, *a) for a in current + undone]


def _received_on(source: CashSource, day: dt.date) -> bool:
    return source.value_date <= day and not (source.reversed_on is not None and source.reversed_on <= day)


def _unapplied_on(source: CashSource, day: dt.date) -> int:
    if not _received_on(source, day):
        return 0
    return source.amount - sum(a.amount for a in _applied_on(source, day))


def _settlements(
    state: DebtorLedger, balances: Mapping[str, _Balance], as_of: dt.date
) -> tuple[list[PaidInvoice], list[CreditedInvoice]]:
    applied: dict[str, list[_Applied]] = {}
    for source in state.sources.values():
        if source.value_date <= as_of:
            for part in _applied_on(source, as_of):
                applied.setdefault(part.invoice_id, []).append(part)
    written_off = {w.invoice_id for w in state.write_offs.values() if w.posting_date <= as_of}
    discounted: dict[str, int] = {}
    for discount in state.discounts.values():
        if discount.posting_date <= as_of and (
            discount.taken_back_on is None or discount.taken_back_on > as_of
        ):
            discounted[discount.invoice_id] = discounted.get(discount.invoice_id, 0) + discount.amount
    paid: list[PaidInvoice] = []
    credited: list[CreditedInvoice] = []
    for invoice_id, balance in balances.items():
        invoice = state.invoices[invoice_id]
        cancelled = invoice.cancelled_on is not None and invoice.cancelled_on <= as_of
        if balance.outstanding or balance.settled_on is None or cancelled or invoice_id in written_off:
            continue
        parts = applied.get(invoice_id, [])
        cash = [p for p in parts if p.kind == "payment"]
        credit = [p for p in parts if p.kind == "credit_note"]
        if cash:
            paid_on = max(p.effective_date for p in cash)
            paid.append(
                PaidInvoice(
                    invoice_id=invoice_id,
                    currency=balance.currency,
                    amount=invoice.amount,
                    issue_date=invoice.issue_date,
                    due_date=balance.due_date,
                    settled_on=balance.settled_on,
                    paid_on=paid_on,
                    paid=sum(p.amount for p in cash),
                    credited=sum(p.amount for p in credit),
                    discounted=discounted.get(invoice_id, 0),
                    days_to_pay=(paid_on - invoice.issue_date).days,
                    days_late=max(0, (paid_on - balance.due_date).days),
                )
            )
        elif credit:
            credited.append(
                CreditedInvoice(
                    invoice_id=invoice_id,
                    currency=balance.currency,
                    amount=invoice.amount,
                    issue_date=invoice.issue_date,
                    due_date=balance.due_date,
                    settled_on=balance.settled_on,
                    credit_notes=tuple(sorted({p.source_id for p in credit})),
                )
            )
    return paid, credited


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
