"""What an ERP posts to the ledger: debtor master data and the receivables journal."""

from __future__ import annotations

from functools import cache
from typing import Annotated, ClassVar, Self
from zoneinfo import available_timezones

from pydantic import Field, field_validator, model_validator

from contracts.channels import Channel
from contracts.envelope import EventData, Fragment, Identifier
from contracts.money import Money, positive
from contracts.scalars import BusinessDate, Language, Line, Text
from contracts.topics import DEBTORS, JOURNAL


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"


class DebtorProfile(EventData):
    """A debtor's master data, complete as of this event (`updated` replaces the whole profile)."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.debtor.registered.v1", "ar.debtor.updated.v1")
    TOPIC: ClassVar[str] = DEBTORS.name

    name: Line = Field(min_length=1, max_length=300)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    language: Language = "en"
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone of the debtor")
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")
    postal_address: list[Annotated[Line, Field(max_length=200)]] = Field(default_factory=list, max_length=8)
    tax_id: Line | None = Field(default=None, max_length=64)
    consented_channels: list[Channel] | None = Field(
        default=None,
        max_length=16,
        description="Channels the debtor agreed to be contacted on; unset: the policy's default",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in _time_zones():
            raise ValueError(f"{value!r} is not an IANA time zone")
        return value


class InvoiceIssued(EventData):
    TYPES: ClassVar[tuple[str, ...]] = ("ar.invoice.issued.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    invoice_id: Identifier
    issue_date: BusinessDate
    due_date: BusinessDate
    amount: Money
    description: Text | None = Field(default=None, max_length=500)

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")

    @model_validator(mode="after")
    def _due_after_issue(self) -> Self:
        if self.due_date < self.issue_date:
            raise ValueError("due_date is before issue_date")
        return self


class InvoiceAdjusted(EventData):
    """The invoice's total becomes `new_amount` (and its due date `due_date`, when given)."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.invoice.adjusted.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    invoice_id: Identifier
    adjustment_date: BusinessDate
    new_amount: Money
    due_date: BusinessDate | None = None
    reason: Text | None = Field(default=None, max_length=500)

    @field_validator("new_amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "new_amount")


class InvoiceCancelled(EventData):
    TYPES: ClassVar[tuple[str, ...]] = ("ar.invoice.cancelled.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    invoice_id: Identifier
    cancellation_date: BusinessDate
    reason: Text | None = Field(default=None, max_length=500)


class CreditNoteIssued(EventData):
    """Reduces the invoice it names; without one (or beyond it) it is unapplied credit."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.creditnote.issued.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    credit_note_id: Identifier
    issue_date: BusinessDate
    amount: Money
    invoice_id: Identifier | None = None
    reason: Text | None = Field(default=None, max_length=500)

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class Allocation(Fragment):
    invoice_id: Identifier
    amount: Money

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


def _check_allocations(total: Money, allocations: list[Allocation]) -> None:
    if any(a.amount.currency != total.currency for a in allocations):
        raise ValueError("allocations must be in the payment's currency")
    if sum(a.amount.amount_minor for a in allocations) > total.amount_minor:
        raise ValueError("allocations exceed the payment amount")
    if len({a.invoice_id for a in allocations}) != len(allocations):
        raise ValueError("an invoice is named twice in allocations")


class PaymentReceived(EventData):
    """Cash received. `allocations` say which invoices it pays; the rest goes oldest due date first."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.payment.received.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    payment_id: Identifier
    value_date: BusinessDate
    amount: Money
    allocations: list[Allocation] = Field(default_factory=list, max_length=1000)
    reference: Line | None = Field(default=None, max_length=200)

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")

    @model_validator(mode="after")
    def _allocations_fit(self) -> Self:
        _check_allocations(self.amount, self.allocations)
        return self


class PaymentAllocated(EventData):
    """The ERP's (re-)allocation of a payment: replaces how that payment was applied."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.payment.allocated.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    payment_id: Identifier
    allocation_date: BusinessDate
    allocations: list[Allocation] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        currencies = {a.amount.currency for a in self.allocations}
        if len(currencies) != 1:
            raise ValueError("allocations must all be in one currency")
        if len({a.invoice_id for a in self.allocations}) != len(self.allocations):
            raise ValueError("an invoice is named twice in allocations")
        return self


class PaymentReversed(EventData):
    """A payment bounced or was charged back: whatever it paid is open again."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.payment.reversed.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    payment_id: Identifier
    reversal_date: BusinessDate
    reason: Text | None = Field(default=None, max_length=500)


class WriteOffPosted(EventData):
    """Closes `amount` of an invoice as bad debt; without `amount`, all that is outstanding."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.writeoff.posted.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    writeoff_id: Identifier
    invoice_id: Identifier
    posting_date: BusinessDate
    amount: Money | None = None
    reason: Text | None = Field(default=None, max_length=500)

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money | None) -> Money | None:
        return None if value is None else positive(value, "amount")


class DiscountGranted(EventData):
    """An early-payment discount taken on an invoice: closes `amount` of it as paid (never as bad debt).
    Dunning posts one when a payment inside the policy's discount window leaves no more than the
    discount open; an ERP may post its own. With `payment_id`, reversing that payment takes the
    discount back."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.discount.granted.v1",)
    TOPIC: ClassVar[str] = JOURNAL.name

    discount_id: Identifier
    invoice_id: Identifier
    posting_date: BusinessDate
    amount: Money = Field(description="The most the discount closes; less when less is outstanding")
    payment_id: Identifier | None = Field(default=None, description="The payment that earned the discount")
    reason: Text | None = Field(default=None, max_length=500)

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


JournalEntry = (
    InvoiceIssued
    | InvoiceAdjusted
    | InvoiceCancelled
    | CreditNoteIssued
    | PaymentReceived
    | PaymentAllocated
    | PaymentReversed
    | WriteOffPosted
    | DiscountGranted
)
