"""What the ledger API refuses before ingest: events the debtor's current state already says the
ledger would reject. Refused with a 422 naming the field, like a schema violation, and nothing of
the batch is accepted.

Checked against the stored state and against what earlier events of the same batch make known (an
invoice issued, a payment received): an allocation naming a known invoice in another currency; a
credit note naming one; a write-off or adjustment in another currency than its invoice or of a
cancelled invoice; a write-off larger than what the invoice has outstanding. An event whose payment
or invoice is not known yet passes (the ledger parks it until that arrives), and so does an event
the ledger takes as a repeat (a payment, credit note or write-off id it already has).

The stored state may lag what was accepted a moment ago and not applied yet. So the write-off check
subtracts the batch's earlier write-offs of the invoice, and is skipped for a debtor once the batch
has, before it, an event that can raise what an invoice owes (a reversal, a re-allocation, an
adjustment); an ERP that posts such an event and then the write-off in separate requests, faster than
the ledger applies the first, may have the write-off refused and should post it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope
from contracts.journal import (
    Allocation,
    CreditNoteIssued,
    DiscountGranted,
    InvoiceAdjusted,
    InvoiceIssued,
    PaymentAllocated,
    PaymentReceived,
    PaymentReversed,
    WriteOffPosted,
)
from services.ledger import store
from services.ledger.domain import DebtorLedger, initial_state
from services.runtime.http import ApiError

Problem = tuple[str, str]
"""(field, message) of one event."""


def needs_state(data: Any) -> bool:
    """Whether the event is one the current state can show to be wrong."""
    if isinstance(data, WriteOffPosted | InvoiceAdjusted | PaymentAllocated | DiscountGranted):
        return True
    if isinstance(data, PaymentReceived):
        return bool(data.allocations)
    return isinstance(data, CreditNoteIssued) and data.invoice_id is not None


def debtors_to_check(tenant_id: str, events: Sequence[Envelope[Any]]) -> set[store.DebtorKey]:
    return {(tenant_id, e.debtorid or "") for e in events if needs_state(e.data)}


@dataclass
class _View:
    """One debtor as the batch sees it: the stored state plus what the batch's earlier events made
    known (currencies of new invoices and sources, write-offs posted)."""

    state: DebtorLedger
    invoice_currencies: dict[str, str] = field(default_factory=dict)
    source_currencies: dict[str, str] = field(default_factory=dict)
    written_off: dict[str, int] = field(default_factory=dict)
    write_off_ids: set[str] = field(default_factory=set)
    may_raise: bool = False
    """An earlier event of the batch may raise what an invoice owes: no write-off amount check."""

    def invoice_currency(self, invoice_id: str) -> str | None:
        invoice = self.state.invoices.get(invoice_id)
        return invoice.currency if invoice is not None else self.invoice_currencies.get(invoice_id)

    def source_currency(self, source_id: str) -> str | None:
        source = self.state.sources.get(source_id)
        return source.currency if source is not None else self.source_currencies.get(source_id)

    def repeated(self, data: WriteOffPosted) -> bool:
        """A write-off id the ledger already has (or the batch had): a no-op."""
        return data.writeoff_id in self.state.write_offs or data.writeoff_id in self.write_off_ids

    def note(self, data: Any) -> None:
        """Take in an event after it was checked."""
        if isinstance(data, InvoiceIssued):
            self.invoice_currencies.setdefault(data.invoice_id, data.amount.currency)
        elif isinstance(data, PaymentReceived):
            self.source_currencies.setdefault(data.payment_id, data.amount.currency)
        elif isinstance(data, CreditNoteIssued):
            self.source_currencies.setdefault(data.credit_note_id, data.amount.currency)
        elif isinstance(data, WriteOffPosted) and not self.repeated(data):
            self.write_off_ids.add(data.writeoff_id)
            invoice = self.state.invoices.get(data.invoice_id)
            everything = invoice.outstanding if invoice is not None else 0
            amount = data.amount.amount_minor if data.amount is not None else everything
            self.written_off[data.invoice_id] = self.written_off.get(data.invoice_id, 0) + amount
        if isinstance(data, PaymentReversed | PaymentAllocated | InvoiceAdjusted):
            self.may_raise = True


def problems(
    tenant_id: str, states: Mapping[store.DebtorKey, DebtorLedger], events: Sequence[Envelope[Any]]
) -> list[dict[str, Any]]:
    """Every refusal of the batch, in the API's error shape: {event, id, field, message}."""
    views: dict[store.DebtorKey, _View] = {}
    found: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        key = (tenant_id, event.debtorid or "")
        view = views.get(key)
        if view is None:
            view = views[key] = _View(states.get(key) or initial_state(*key))
        if needs_state(event.data):
            found += [
                {"event": index, "id": event.id, "field": f"data.{where}", "message": message}
                for where, message in _check(view, event.data)
            ]
        view.note(event.data)
    return found


def _check(view: _View, data: Any) -> Iterator[Problem]:
    if isinstance(data, WriteOffPosted):
        yield from _write_off(view, data)
    elif isinstance(data, InvoiceAdjusted):
        yield from _adjustment(view, data)
    elif isinstance(data, PaymentReceived):
        if view.source_currency(data.payment_id) is None:  # else a repeat, which changes nothing
            yield from _allocations(view, "payment", data.amount.currency, data.allocations)
    elif isinstance(data, PaymentAllocated):
        yield from _re_allocation(view, data)
    elif isinstance(data, DiscountGranted):
        currency = view.invoice_currency(data.invoice_id)
        if currency not in (None, data.amount.currency):
            yield (
                "amount.currency",
                _other_currency(data.invoice_id, currency, "discount", data.amount.currency),
            )
    elif isinstance(data, CreditNoteIssued) and data.invoice_id is not None:
        currency = view.invoice_currency(data.invoice_id)
        if view.source_currency(data.credit_note_id) is None and currency not in (None, data.amount.currency):
            yield (
                "invoice_id",
                _other_currency(data.invoice_id, currency, "credit note", data.amount.currency),
            )


def _write_off(view: _View, data: WriteOffPosted) -> Iterator[Problem]:
    if view.repeated(data):
        return  # changes nothing
    currency = view.invoice_currency(data.invoice_id)
    if currency is None:
        return  # not known yet: parked until it arrives
    if data.amount is not None and data.amount.currency != currency:
        yield "amount.currency", _other_currency(data.invoice_id, currency, "write-off", data.amount.currency)
        return
    invoice = view.state.invoices.get(data.invoice_id)
    if invoice is not None and invoice.cancelled_on:
        yield "invoice_id", f"invoice {data.invoice_id!r} was cancelled on {invoice.cancelled_on}"
        return
    if invoice is None or view.may_raise:
        return
    outstanding = invoice.outstanding - view.written_off.get(data.invoice_id, 0)
    if data.amount is None and outstanding <= 0:
        yield "invoice_id", f"invoice {data.invoice_id!r} has nothing outstanding to write off"
    elif data.amount is not None and data.amount.amount_minor > outstanding:
        yield (
            "amount.amount_minor",
            f"the write-off of {data.amount.amount_minor} is larger than the {max(outstanding, 0)} "
            f"outstanding on invoice {data.invoice_id!r}",
        )


def _adjustment(view: _View, data: InvoiceAdjusted) -> Iterator[Problem]:
    currency = view.invoice_currency(data.invoice_id)
    if currency is not None and data.new_amount.currency != currency:
        yield (
            "new_amount.currency",
            _other_currency(data.invoice_id, currency, "adjustment", data.new_amount.currency),
        )
    invoice = view.state.invoices.get(data.invoice_id)
    if invoice is not None and invoice.cancelled_on:
        yield "invoice_id", f"invoice {data.invoice_id!r} was cancelled on {invoice.cancelled_on}"


def _re_allocation(view: _View, data: PaymentAllocated) -> Iterator[Problem]:
    currency = data.allocations[0].amount.currency  # one currency: the contract says so
    paid_in = view.source_currency(data.payment_id)
    if paid_in is not None and paid_in != currency:
        yield (
            "allocations.0.amount.currency",
            f"payment {data.payment_id!r} is in {paid_in}; the allocations are in {currency}",
        )
        return
    yield from _allocations(view, "payment", currency, data.allocations)


def _allocations(
    view: _View, what: str, currency: str, allocations: Sequence[Allocation]
) -> Iterator[Problem]:
    for index, allocation in enumerate(allocations):
        invoice_currency = view.invoice_currency(allocation.invoice_id)
        if invoice_currency is not None and invoice_currency != currency:
            yield (
                f"allocations.{index}.invoice_id",
                _other_currency(allocation.invoice_id, invoice_currency, what, currency),
            )


def _other_currency(invoice_id: str, invoice_currency: str, what: str, currency: str) -> str:
    return (
        f"invoice {invoice_id!r} is in {invoice_currency}, the {what} in {currency}: "
        "an invoice is paid, credited, adjusted, discounted and written off in its own currency only"
    )


async def check(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, events: Sequence[Envelope[Any]]
) -> None:
    """Raise a 422 listing every event the current state shows the ledger would reject. One query
    loads the debtors concerned; none when no event of the batch is of a kind to check."""
    keys = debtors_to_check(tenant_id, events)
    if not keys:
        return
    async with sessions() as session:
        states = await store.load_ledgers(session, keys)
    found = problems(tenant_id, states, events)
    if found:
        raise ApiError(422, found)
