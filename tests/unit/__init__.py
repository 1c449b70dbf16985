"""Unit tests of the pure cores, and the builders they share to read as given / when / then."""

from __future__ import annotations

import datetime as dt

from contracts.journal import (
    Allocation,
    CreditNoteIssued,
    DebtorProfile,
    DiscountGranted,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    PaymentAllocated,
    PaymentReceived,
    PaymentReversed,
    WriteOffPosted,
)
from contracts.money import Money
from services.ledger.domain import DebtorLedger, LedgerEvent, Transition, evolve, initial_state

Day = dt.date | str


def day(value: Day) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def money(amount: int, currency: str = "EUR") -> Money:
    return Money(amount_minor=amount, currency=currency)


def given(*events: LedgerEvent) -> DebtorLedger:
    """The ledger after these events, each of which must be accepted."""
    state = initial_state("acme", "debtor-1")
    for event in events:
        transition = evolve(state, event)
        assert transition.rejection is None, transition.rejection
        state = transition.state
    return state


def when(state: DebtorLedger, event: LedgerEvent) -> Transition:
    return evolve(state, event)


def invoice(
    invoice_id: str, amount: int, issued: Day = "2024-01-01", due: Day | None = None, currency: str = "EUR"
) -> InvoiceIssued:
    issue_date = day(issued)
    return InvoiceIssued(
        invoice_id=invoice_id,
        issue_date=issue_date,
        due_date=day(due) if due else issue_date + dt.timedelta(days=30),
        amount=money(amount, currency),
    )


def payment(
    payment_id: str,
    amount: int,
    on: Day = "2024-01-15",
    to: dict[str, int] | None = None,
    currency: str = "EUR",
) -> PaymentReceived:
    return PaymentReceived(
        payment_id=payment_id,
        value_date=day(on),
        amount=money(amount, currency),
        allocations=[Allocation(invoice_id=i, amount=money(a, currency)) for i, a in (to or {}).items()],
    )


def credit_note(
    note_id: str, amount: int, on: Day = "2024-01-10", for_invoice: str | None = None, currency: str = "EUR"
) -> CreditNoteIssued:
    return CreditNoteIssued(
        credit_note_id=note_id, issue_date=day(on), amount=money(amount, currency), invoice_id=for_invoice
    )


def adjusted(
    invoice_id: str, new_amount: int, on: Day = "2024-01-20", due: Day | None = None, currency: str = "EUR"
) -> InvoiceAdjusted:
    return InvoiceAdjusted(
        invoice_id=invoice_id,
        adjustment_date=day(on),
        new_amount=money(new_amount, currency),
        due_date=day(due) if due else None,
    )


def cancelled(invoice_id: str, on: Day = "2024-01-20") -> InvoiceCancelled:
    return InvoiceCancelled(invoice_id=invoice_id, cancellation_date=day(on))


def allocated(
    payment_id: str, to: dict[str, int], on: Day = "2024-01-20", currency: str = "EUR"
) -> PaymentAllocated:
    return PaymentAllocated(
        payment_id=payment_id,
        allocation_date=day(on),
        allocations=[Allocation(invoice_id=i, amount=money(a, currency)) for i, a in to.items()],
    )


def reversed_(payment_id: str, on: Day = "2024-01-25") -> PaymentReversed:
    return PaymentReversed(payment_id=payment_id, reversal_date=day(on))


def written_off(
    writeoff_id: str,
    invoice_id: str,
    amount: int | None = None,
    on: Day = "2024-03-01",
    currency: str = "EUR",
) -> WriteOffPosted:
    return WriteOffPosted(
        writeoff_id=writeoff_id,
        invoice_id=invoice_id,
        posting_date=day(on),
        amount=money(amount, currency) if amount is not None else None,
    )


def profile(name: str = "Müller GmbH", **fields: str) -> DebtorProfile:
    return DebtorProfile.model_validate({"name": name, **fields})


def discounted(
    discount_id: str,
    invoice_id: str,
    amount: int,
    on: Day = "2024-01-10",
    payment_id: str | None = None,
    currency: str = "EUR",
) -> DiscountGranted:
    return DiscountGranted(
        discount_id=discount_id,
        invoice_id=invoice_id,
        posting_date=day(on),
        amount=money(amount, currency),
        payment_id=payment_id,
    )
