"""A debtor's statement: open items, balances, unapplied cash and aging per currency, payment history.

Pure: built from a `DebtorLedger` as it stands, aged as of a given business date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from contracts.journal import DebtorProfile
from services.ledger.aging import DEFAULT_POLICY, AgingPolicy, age, days_past_due
from services.ledger.domain import DebtorLedger, Invoice, InvoiceStatus


@dataclass(frozen=True)
class OpenItem:
    invoice_id: str
    currency: str
    issue_date: dt.date
    due_date: dt.date
    amount: int
    outstanding: int
    days_past_due: int
    status: InvoiceStatus


@dataclass(frozen=True)
class CurrencyBalance:
    currency: str
    balance: int
    """Σ outstanding of the currency's invoices."""
    unapplied: int
    """Σ unapplied cash of the currency's sources that are not reversed (earmarked cash included)."""
    aging: Mapping[str, int]
    """Outstanding per aging bucket label, every label present; sums to `balance`."""


@dataclass(frozen=True)
class PaidInvoice:
    invoice_id: str
    currency: str
    amount: int
    issue_date: dt.date
    due_date: dt.date
    settled_on: dt.date
    days_to_pay: int
    days_late: int


@dataclass(frozen=True)
class Statement:
    tenant_id: str
    debtor_id: str
    as_of: dt.date
    profile: DebtorProfile | None
    open_items: tuple[OpenItem, ...]
    currencies: tuple[CurrencyBalance, ...]
    payment_history: tuple[PaidInvoice, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-compatible data: dates as ISO strings, the profile as its JSON form."""
        data: dict[str, Any] = _jsonable(asdict(self))
        data["profile"] = self.profile.model_dump(mode="json") if self.profile else None
        return data


def statement(state: DebtorLedger, as_of: dt.date, policy: AgingPolicy = DEFAULT_POLICY) -> Statement:
    invoices = state.invoices.values()
    open_invoices = sorted(
        (i for i in invoices if i.status == "open"), key=lambda i: (i.due_date, i.issue_date, i.invoice_id)
    )
    currencies = sorted({i.currency for i in invoices} | {s.currency for s in state.sources.values()})
    return Statement(
        tenant_id=state.tenant_id,
        debtor_id=state.debtor_id,
        as_of=as_of,
        profile=state.profile,
        open_items=tuple(_open_item(i, as_of) for i in open_invoices),
        currencies=tuple(_currency_balance(state, c, as_of, policy) for c in currencies),
        payment_history=_payment_history(invoices),
    )


def _open_item(invoice: Invoice, as_of: dt.date) -> OpenItem:
    return OpenItem(
        invoice_id=invoice.invoice_id,
        currency=invoice.currency,
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
        amount=invoice.amount,
        outstanding=invoice.outstanding,
        days_past_due=days_past_due(invoice.due_date, as_of),
        status=invoice.status,
    )


def _currency_balance(
    state: DebtorLedger, currency: str, as_of: dt.date, policy: AgingPolicy
) -> CurrencyBalance:
    invoices = [i for i in state.invoices.values() if i.currency == currency]
    sources = [s for s in state.sources.values() if s.currency == currency and not s.reversed_on]
    return CurrencyBalance(
        currency=currency,
        balance=sum(i.outstanding for i in invoices),
        unapplied=sum(s.unapplied for s in sources),
        aging=age(((i.due_date, i.outstanding) for i in invoices if i.outstanding), as_of, policy),
    )


def _payment_history(invoices: Iterable[Invoice]) -> tuple[PaidInvoice, ...]:
    paid = [
        PaidInvoice(
            invoice_id=i.invoice_id,
            currency=i.currency,
            amount=i.amount,
            issue_date=i.issue_date,
            due_date=i.due_date,
            settled_on=i.settled_on,
            days_to_pay=(i.settled_on - i.issue_date).days,
            days_late=max(0, (i.settled_on - i.due_date).days),
        )
        for i in invoices
        if i.status == "settled" and i.settled_on is not None
    ]
    return tuple(sorted(paid, key=lambda p: (p.settled_on, p.invoice_id)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
