"""The receivables ledger of one debtor, as pure functions: no I/O, no clock, no randomness.

`evolve(state, entry)` applies one journal or master-data event and returns the new state together
with what changed: the balance movements (for bitemporal aging) and the balance facts to publish.
Every balance change carries the business date it takes effect, derived only from the events:
max(the event's business date, the cash's value date, the invoice's issue date), and a release of
cash never takes effect before the application it undoes.

Events may arrive out of business-date order (a payment valued last week after today's reversal).
So that an invoice's outstanding as of every date stays within [0, its amount], the ledger keeps
each invoice's timeline (its net movements by effective date) and dates a reduction no earlier than
the first date from which the invoice has, as of that date and every later one, room for it;
amount and due-date adjustments take effect no earlier than the invoice's previous adjustment.

Nothing accepted is dropped for arriving early. An event that names a payment or an invoice not known
yet (a reversal or re-allocation before its payment; a write-off, adjustment or cancellation before
its invoice) is parked in the debtor's state and applied, in arrival order, right after the payment
or invoice arrives, exactly as if it had come then; applied then, it may still be rejected. Cash
earmarked for an invoice not known yet waits the same way (`CashSource.directed`).

Currencies never mix: an allocation naming a known invoice in another currency is refused, never
re-routed to other invoices (see `_claim_earmarks` for an invoice that turns out to be in another
currency only when it arrives).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, assert_never

from contracts.journal import (
    CreditNoteIssued,
    DebtorProfile,
    DiscountGranted,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    JournalEntry,
    PaymentAllocated,
    PaymentReceived,
    PaymentReversed,
    WriteOffPosted,
)

InvoiceStatus = Literal["open", "settled", "written_off", "cancelled"]
SourceKind = Literal["payment", "credit_note"]
ChangeKind = Literal["opened", "changed", "settled", "reopened", "written_off", "cancelled"]

Timeline = tuple[tuple[dt.date, int], ...]
"""An invoice's net outstanding change per effective date, sorted by date, without zero entries."""


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    currency: str
    issue_date: dt.date
    due_date: dt.date
    amount: int
    applied: int = 0
    written_off: int = 0
    discounted: int = 0
    """Closed by early-payment discounts: paid, as far as the debtor is concerned."""
    cancelled_on: dt.date | None = None
    settled_on: dt.date | None = None
    adjusted_on: dt.date | None = None
    """Effective date of the latest adjustment of the amount or due date."""

    @property
    def outstanding(self) -> int:
        return 0 if self.cancelled_on else self.amount - self.applied - self.written_off - self.discounted

    @property
    def status(self) -> InvoiceStatus:
        if self.cancelled_on:
            return "cancelled"
        if self.outstanding > 0:
            return "open"
        return "written_off" if self.written_off > 0 else "settled"


@dataclass(frozen=True)
class Application:
    """Part of a cash source applied to an invoice, from `effective_date` on."""

    invoice_id: str
    amount: int
    effective_date: dt.date


@dataclass(frozen=True)
class Released:
    """Part of a cash source that was applied to an invoice from `effective_date` until `released_on`
    (undone by a re-allocation, a reversal, or the invoice lowered or cancelled): kept so that what
    the source paid as of a past date can still be told."""

    invoice_id: str
    amount: int
    effective_date: dt.date
    released_on: dt.date


@dataclass(frozen=True)
class CashSource:
    """A payment or a credit note: money the debtor has, applied to invoices or held unapplied.

    `directed` holds amounts earmarked for invoices not known yet; they are applied when the
    invoice arrives and are never applied automatically elsewhere. An earmark whose invoice arrives
    in another currency stays here, under that invoice's id, until the source is re-allocated or
    reversed (see `_claim_earmarks`)."""

    source_id: str
    kind: SourceKind
    currency: str
    amount: int
    value_date: dt.date
    seq: int
    directed: Mapping[str, int] = field(default_factory=dict)
    applications: tuple[Application, ...] = ()
    reversed_on: dt.date | None = None
    released: tuple[Released, ...] = ()
    """Applications undone, in the order they were; only those that were in effect for a day or more."""

    # The sums below are computed once per instance (instances are immutable; a change makes a new
    # one) and kept in the instance's __dict__ under a leading underscore, which keeps them out of
    # the stored JSON (orjson skips such keys) and out of comparisons (only fields are compared).

    @property
    def applied(self) -> int:
        memo = self.__dict__
        value: int | None = memo.get("_applied")
        if value is None:
            value = memo["_applied"] = sum(a.amount for a in self.applications)
        return value

    @property
    def unapplied(self) -> int:
        return 0 if self.reversed_on else self.amount - self.applied

    @property
    def undirected(self) -> int:
        """Unapplied cash free for automatic application (not earmarked for an unknown invoice)."""
        memo = self.__dict__
        value: int | None = memo.get("_undirected")
        if value is None:
            value = self.unapplied - sum(self.directed.values()) if not self.reversed_on else 0
            memo["_undirected"] = value
        return value


@dataclass(frozen=True)
class WriteOff:
    writeoff_id: str
    invoice_id: str
    amount: int
    posting_date: dt.date


@dataclass(frozen=True)
class Discount:
    discount_id: str
    invoice_id: str
    amount: int
    posting_date: dt.date
    payment_id: str | None = None
    taken_back_on: dt.date | None = None
    """The payment that earned it was reversed on this date: the invoice owes the discount again."""


ParkableEvent = (
    PaymentReversed | PaymentAllocated | WriteOffPosted | InvoiceAdjusted | InvoiceCancelled | DiscountGranted
)


@dataclass(frozen=True)
class Parked:
    """An event naming a payment or invoice not known yet, with its envelope id when the caller gave
    one; applied when that payment or invoice arrives."""

    event_id: str | None
    event: ParkableEvent


@dataclass(frozen=True)
class DebtorLedger:
    tenant_id: str
    debtor_id: str
    profile: DebtorProfile | None = None
    invoices: Mapping[str, Invoice] = field(default_factory=dict)
    sources: Mapping[str, CashSource] = field(default_factory=dict)
    write_offs: Mapping[str, WriteOff] = field(default_factory=dict)
    discounts: Mapping[str, Discount] = field(default_factory=dict)
    next_seq: int = 0
    timelines: Mapping[str, Timeline] = field(default_factory=dict)
    """Per invoice id: the sum of its movements per effective date (what its movements add up to)."""
    parked: tuple[Parked, ...] = ()
    """Events waiting for the payment or invoice they name, in arrival order."""
    earmarked_by: Mapping[str, str] = field(default_factory=dict)
    """Per source with earmarks (`CashSource.directed`): the envelope id of the event that made them,
    when known, so that an earmark refused later can be reported against it."""


@dataclass(frozen=True)
class Movement:
    """A signed change of one invoice's outstanding amount, effective from a business date."""

    invoice_id: str
    currency: str
    due_date: dt.date
    delta: int
    effective_date: dt.date


@dataclass(frozen=True)
class BalanceChange:
    """One invoice's balance after an event, for `ar.receivables.v1`; at most one per invoice and event."""

    kind: ChangeKind
    invoice: Invoice
    change: int
    effective_date: dt.date


@dataclass(frozen=True)
class Transition:
    """What one event did. `rejection`: why the event itself was refused (the state is unchanged).
    `parked`: the event waits in the state for the payment or invoice it names. `resolved`: the
    waiting things this event decided, as (envelope id, rejection reason or None when applied):
    parked events it released (their movements and changes are part of this transition), and
    earmarks refused because the invoice arrived in another currency (the id is the event that made
    the earmark; its cash stays unapplied, see `_claim_earmarks`). Entries parked without an id are
    applied all the same but not reported."""

    state: DebtorLedger
    movements: tuple[Movement, ...] = ()
    changes: tuple[BalanceChange, ...] = ()
    rejection: str | None = None
    parked: bool = False
    resolved: tuple[tuple[str, str | None], ...] = ()


LedgerEvent = JournalEntry | DebtorProfile

_T = TypeVar("_T")
_MEMOS: dict[type, tuple[tuple[str, frozenset[str]], ...]] = {
    CashSource: (
        ("_applied", frozenset({"applications"})),
        ("_undirected", frozenset({"amount", "applications", "directed", "reversed_on"})),
    ),
    DebtorLedger: (
        ("_free", frozenset({"sources"})),
        ("_earmarking", frozenset({"sources"})),
        ("_open", frozenset({"invoices"})),
    ),
}
"""Values derived from an instance's fields and kept in its __dict__ (see CashSource.applied and
`_free_sources`), per type, with the fields they derive from; the leading underscore keeps them out
of the stored JSON."""


def replace(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace` for this module's frozen dataclasses (none has an `__init__` of its own
    or a `__post_init__`), without its per-field introspection: a copy of the instance's fields with
    `changes` applied, and those memoized values of the old instance that the changes affect dropped."""
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    for memo, inputs in _MEMOS.get(type(obj), ()):
        if memo in fields and not inputs.isdisjoint(changes):
            del fields[memo]
    fields.update(changes)
    return new


def _memoized_ids(
    state: DebtorLedger, memo: str, items: Mapping[str, _T], keep: Callable[[_T], bool]
) -> frozenset[str]:
    """The ids of the `items` to `keep`, computed once per state and kept in its __dict__ under
    `memo` (listed in `_MEMOS`, and carried from state to state by `_put_invoice` / `_put_source`)."""
    found: frozenset[str] | None = state.__dict__.get(memo)
    if found is None:
        found = state.__dict__[memo] = frozenset(key for key, item in items.items() if keep(item))
    return found


def _free_sources(state: DebtorLedger) -> frozenset[str]:
    """Ids of the sources with undirected cash."""
    return _memoized_ids(state, "_free", state.sources, lambda s: s.undirected > 0)


def _earmarking_sources(state: DebtorLedger) -> frozenset[str]:
    """Ids of the sources with cash earmarked for an invoice."""
    return _memoized_ids(state, "_earmarking", state.sources, lambda s: bool(s.directed))


def _open_invoices(state: DebtorLedger) -> frozenset[str]:
    """Ids of the open invoices: most of a debtor's invoices are settled history."""
    return _memoized_ids(state, "_open", state.invoices, lambda i: i.status == "open")


def _carried(memo: frozenset[str] | None, item_id: str, member: bool) -> frozenset[str] | None:
    """A memoized id set after one item changed (None: not computed for the state before)."""
    if memo is None or (item_id in memo) == member:
        return memo
    return memo | {item_id} if member else memo - {item_id}


def initial_state(tenant_id: str, debtor_id: str) -> DebtorLedger:
    return DebtorLedger(tenant_id=tenant_id, debtor_id=debtor_id)


def evolve(state: DebtorLedger, event: LedgerEvent, event_id: str | None = None) -> Transition:
    """Apply one event (`event_id`: its envelope id, kept with it if it is parked and reported in
    `Transition.resolved` when it is decided later). An event naming a payment or invoice not known
    yet is parked; one that makes a payment or invoice known applies what waited for it. Other
    unknown references and currency mismatches are rejected with a reason and leave the state
    unchanged; an event already applied (same business id) changes nothing."""
    if isinstance(event, _PARKABLE) and _waits(state, event):
        return _park(state, Parked(event_id, event))
    transition = _step(state, event, event_id)
    arrived = _arrival(event)
    if arrived is None or transition.state is state or not transition.state.parked:
        return transition
    return _release_parked(state, transition, arrived)


def _step(state: DebtorLedger, event: LedgerEvent, event_id: str | None) -> Transition:
    transition = _dispatch(state, event)
    if transition.rejection is not None or transition.state is state:
        return transition
    earmarked_by = _earmarks_by(transition.state, _earmarking_source(event), event_id)
    if earmarked_by is transition.state.earmarked_by:
        return transition
    return replace(transition, state=replace(transition.state, earmarked_by=earmarked_by))


def _dispatch(state: DebtorLedger, event: LedgerEvent) -> Transition:
    match event:
        case DebtorProfile():
            return Transition(state if state.profile == event else replace(state, profile=event))
        case InvoiceIssued():
            return _issue_invoice(state, event)
        case InvoiceAdjusted():
            return _adjust_invoice(state, event)
        case InvoiceCancelled():
            return _cancel_invoice(state, event)
        case CreditNoteIssued():
            directions = {event.invoice_id: event.amount.amount_minor} if event.invoice_id else {}
            return _receive(state, event.credit_note_id, "credit_note", event, event.issue_date, directions)
        case PaymentReceived():
            directions = {a.invoice_id: a.amount.amount_minor for a in event.allocations}
            return _receive(state, event.payment_id, "payment", event, event.value_date, directions)
        case PaymentAllocated():
            return _allocate_payment(state, event)
        case PaymentReversed():
            return _reverse_payment(state, event)
        case WriteOffPosted():
            return _post_write_off(state, event)
        case DiscountGranted():
            return _grant_discount(state, event)
        case _:
            assert_never(event)


# --- events that wait for their payment or invoice ----------------------------------------------

Referent = tuple[Literal["source", "invoice"], str]
"""A payment (or credit note) or an invoice, by id: what a parked event waits for."""


def _referent(event: ParkableEvent) -> Referent:
    if isinstance(event, PaymentReversed | PaymentAllocated):
        return ("source", event.payment_id)
    return ("invoice", event.invoice_id)


_PARKABLE = (
    PaymentReversed,
    PaymentAllocated,
    WriteOffPosted,
    InvoiceAdjusted,
    InvoiceCancelled,
    DiscountGranted,
)


def _waits(state: DebtorLedger, event: ParkableEvent) -> bool:
    """Whether the event names a payment or invoice not known yet."""
    if isinstance(event, WriteOffPosted) and event.writeoff_id in state.write_offs:
        return False  # already applied: a no-op
    if isinstance(event, DiscountGranted) and event.discount_id in state.discounts:
        return False
    kind, referent_id = _referent(event)
    return referent_id not in (state.sources if kind == "source" else state.invoices)


def _arrival(event: LedgerEvent) -> Referent | None:
    """What the event makes known, if it is a payment, credit note or invoice."""
    if isinstance(event, PaymentReceived):
        return ("source", event.payment_id)
    if isinstance(event, CreditNoteIssued):
        return ("source", event.credit_note_id)
    if isinstance(event, InvoiceIssued):
        return ("invoice", event.invoice_id)
    return None


def _park(state: DebtorLedger, entry: Parked) -> Transition:
    if entry in state.parked:  # the same event delivered again
        return Transition(state, parked=True)
    return Transition(replace(state, parked=(*state.parked, entry)), parked=True)


def _release_parked(before: DebtorLedger, arrival: Transition, arrived: Referent) -> Transition:
    """Apply, in arrival order, the parked events that waited for what `arrival` made known, as if
    each had come right after it; one merged transition."""
    waiting = [p for p in arrival.state.parked if _referent(p.event) == arrived]
    if not waiting:
        return arrival
    state = replace(arrival.state, parked=tuple(p for p in arrival.state.parked if p not in waiting))
    steps, resolved = [arrival], list(arrival.resolved)
    for entry in waiting:
        step = _step(state, entry.event, entry.event_id)
        if entry.event_id is not None:
            resolved.append((entry.event_id, step.rejection))
        if step.rejection is None:
            steps.append(step)
            state = step.state
    return _merged(before, state, steps, tuple(resolved))


def _merged(
    before: DebtorLedger,
    after: DebtorLedger,
    steps: list[Transition],
    resolved: tuple[tuple[str, str | None], ...],
) -> Transition:
    """The steps as one transition: their movements, and at most one balance change per invoice,
    from the invoice before the first step to the invoice after the last."""
    parts: dict[str, list[BalanceChange]] = {}
    for step in steps:
        for change in step.changes:
            parts.setdefault(change.invoice.invoice_id, []).append(change)
    changes = []
    for invoice_id in sorted(parts):
        old, new = before.invoices.get(invoice_id), after.invoices[invoice_id]
        if old == new:
            continue
        written_off = invoice_id if any(c.kind == "written_off" for c in parts[invoice_id]) else None
        effective = max(c.effective_date for c in parts[invoice_id])
        delta = new.outstanding - (old.outstanding if old else 0)
        changes.append(BalanceChange(_change_kind(old, new, written_off), new, delta, effective))
    movements = tuple(m for step in steps for m in step.movements)
    return Transition(after, movements, tuple(changes), resolved=resolved)


def _earmarking_source(event: LedgerEvent) -> str | None:
    """The source whose earmarks the event sets, if any."""
    if isinstance(event, PaymentReceived | PaymentAllocated):
        return event.payment_id
    if isinstance(event, CreditNoteIssued):
        return event.credit_note_id
    return None


def _earmarks_by(state: DebtorLedger, source_id: str | None, event_id: str | None) -> Mapping[str, str]:
    """`state.earmarked_by` after an event that set the earmarks of `source_id` (if given), without
    the sources left with no earmark; the same object when nothing changes."""
    current = state.earmarked_by
    if source_id is None and not current:
        return current
    updated = {s: e for s, e in current.items() if state.sources[s].directed}
    if source_id is not None:
        updated.pop(source_id, None)
        if event_id is not None and state.sources[source_id].directed:
            updated[source_id] = event_id
    return current if updated == current else updated


# --- event handlers -----------------------------------------------------------------------------


def _issue_invoice(state: DebtorLedger, event: InvoiceIssued) -> Transition:
    if event.invoice_id in state.invoices:
        return Transition(state)
    invoice = Invoice(
        invoice_id=event.invoice_id,
        currency=event.amount.currency,
        issue_date=event.issue_date,
        due_date=event.due_date,
        amount=event.amount.amount_minor,
    )
    work = _record(_Work(state, event.issue_date), invoice, invoice.amount, event.issue_date)
    transition = _finish(state, _claim_earmarks(work, event.invoice_id))
    if not state.earmarked_by:
        return transition
    refused = tuple(
        (event_id, _refused_earmark(source, invoice))
        for source, event_id in sorted(
            ((state.sources[s], e) for s, e in state.earmarked_by.items()), key=lambda p: p[0].seq
        )
        if event.invoice_id in source.directed and source.currency != invoice.currency
    )
    return replace(transition, resolved=refused) if refused else transition


def _adjust_invoice(state: DebtorLedger, event: InvoiceAdjusted) -> Transition:
    invoice = _target(state, event.invoice_id, "adjust")
    if isinstance(invoice, str):
        return Transition(state, rejection=invoice)
    new_amount = event.new_amount.amount_minor
    if event.new_amount.currency != invoice.currency:
        return _currency_rejection(state, "adjust", invoice, event.new_amount.currency)
    closed = invoice.written_off + invoice.discounted
    if new_amount < closed:
        reason = (
            f"cannot adjust invoice {invoice.invoice_id!r} to {new_amount}: "
            f"{closed} of it is written off or discounted"
        )
        return Transition(state, rejection=reason)
    if event.due_date is not None and event.due_date < invoice.issue_date:
        reason = f"cannot move the due date of invoice {invoice.invoice_id!r} before its issue date"
        return Transition(state, rejection=reason)
    work = _release_invoice(_Work(state, event.adjustment_date), invoice.invoice_id, new_amount - closed)
    work = _change_amount(work, invoice.invoice_id, new_amount)
    if event.due_date is not None:
        work = _change_due_date(work, invoice.invoice_id, event.due_date)
    return _finish(state, work)


def _cancel_invoice(state: DebtorLedger, event: InvoiceCancelled) -> Transition:
    if isinstance(target := _target(state, event.invoice_id, "cancel"), str):
        return Transition(state, rejection=target)
    work = _release_invoice(_Work(state, event.cancellation_date), event.invoice_id, 0)
    invoice = work.state.invoices[event.invoice_id]
    remaining = invoice.outstanding
    cancelled = replace(invoice, cancelled_on=event.cancellation_date, settled_on=None)
    if remaining:
        day = _room_date(work, invoice, remaining)
        return _finish(state, _record(work, cancelled, -remaining, day))
    return _finish(state, _put_invoice(work, cancelled))


def _receive(
    state: DebtorLedger,
    source_id: str,
    kind: SourceKind,
    event: CreditNoteIssued | PaymentReceived,
    value_date: dt.date,
    directions: Mapping[str, int],
) -> Transition:
    if source_id in state.sources:
        return Transition(state)
    what = "payment" if kind == "payment" else "credit note"
    if (reason := _currency_conflict(state, what, source_id, event.amount.currency, directions)) is not None:
        return Transition(state, rejection=reason)
    source = CashSource(
        source_id=source_id,
        kind=kind,
        currency=event.amount.currency,
        amount=event.amount.amount_minor,
        value_date=value_date,
        seq=state.next_seq,
    )
    work = _Work(replace(state, next_seq=state.next_seq + 1), value_date)
    return _finish(state, _direct(_put_source(work, source), source_id, directions.items()))


def _allocate_payment(state: DebtorLedger, event: PaymentAllocated) -> Transition:
    source = state.sources.get(event.payment_id)
    total = sum(a.amount.amount_minor for a in event.allocations)
    currency = event.allocations[0].amount.currency
    if source is None:
        return Transition(state, rejection=f"cannot allocate unknown payment {event.payment_id!r}")
    if source.reversed_on:
        return Transition(state, rejection=f"cannot allocate payment {event.payment_id!r}: it was reversed")
    if currency != source.currency:
        reason = (
            f"cannot allocate payment {source.source_id!r} in {source.currency} "
            f"with allocations in {currency}"
        )
        return Transition(state, rejection=reason)
    if total > source.amount:
        reason = f"allocations of {total} exceed the amount {source.amount} of payment {source.source_id!r}"
        return Transition(state, rejection=reason)
    directions = [(a.invoice_id, a.amount.amount_minor) for a in event.allocations]
    conflict = _currency_conflict(state, "payment", source.source_id, currency, dict(directions))
    if conflict is not None:
        return Transition(state, rejection=conflict)
    work = _release_source(_Work(state, event.allocation_date), source.source_id)
    work = _put_source(work, replace(work.state.sources[source.source_id], directed={}))
    return _finish(state, _direct(work, source.source_id, directions))


def _reverse_payment(state: DebtorLedger, event: PaymentReversed) -> Transition:
    source = state.sources.get(event.payment_id)
    if source is None or source.kind != "payment":
        return Transition(state, rejection=f"cannot reverse unknown payment {event.payment_id!r}")
    if source.reversed_on:
        return Transition(state)
    work = _release_source(_Work(state, event.reversal_date), source.source_id)
    reversed_source = replace(
        work.state.sources[source.source_id], directed={}, reversed_on=event.reversal_date
    )
    work = _take_back_discounts(_put_source(work, reversed_source), source.source_id)
    return _finish(state, work)


def _post_write_off(state: DebtorLedger, event: WriteOffPosted) -> Transition:
    if event.writeoff_id in state.write_offs:
        return Transition(state)
    invoice = _target(state, event.invoice_id, "write off")
    if isinstance(invoice, str):
        return Transition(state, rejection=invoice)
    if event.amount is not None and event.amount.currency != invoice.currency:
        return _currency_rejection(state, "write off", invoice, event.amount.currency)
    amount = invoice.outstanding if event.amount is None else event.amount.amount_minor
    if not 0 < amount <= invoice.outstanding:
        reason = (
            f"write-off {event.writeoff_id!r} of {amount} does not fit the outstanding "
            f"{invoice.outstanding} of invoice {invoice.invoice_id!r}"
        )
        return Transition(state, rejection=reason)
    work = _Work(state, event.posting_date)
    write_off = WriteOff(event.writeoff_id, invoice.invoice_id, amount, event.posting_date)
    work.put("write_offs", write_off.writeoff_id, write_off)
    day = _room_date(work, invoice, amount)
    work = _record(work, replace(invoice, written_off=invoice.written_off + amount), -amount, day)
    return _finish(state, work, written_off=invoice.invoice_id)


def _grant_discount(state: DebtorLedger, event: DiscountGranted) -> Transition:
    """Close up to the discount's amount of the invoice as paid; less when less is outstanding (a
    payment may have come in since it was granted), nothing when nothing is."""
    if event.discount_id in state.discounts:
        return Transition(state)
    invoice = _target(state, event.invoice_id, "discount")
    if isinstance(invoice, str):
        return Transition(state, rejection=invoice)
    if event.amount.currency != invoice.currency:
        return _currency_rejection(state, "discount", invoice, event.amount.currency)
    payment_id = event.payment_id or _latest_payment(state, invoice.invoice_id)
    payment = state.sources.get(payment_id) if payment_id else None
    if payment is not None and payment.reversed_on is not None:
        reason = f"discount {event.discount_id!r}: payment {payment_id!r} was reversed"
        return Transition(state, rejection=reason)
    amount = min(event.amount.amount_minor, invoice.outstanding)
    if amount <= 0:
        return Transition(state)
    discount = Discount(event.discount_id, invoice.invoice_id, amount, event.posting_date, payment_id)
    work = _Work(state, event.posting_date)
    work.put("discounts", discount.discount_id, discount)
    day = _room_date(work, invoice, amount)
    work = _record(work, replace(invoice, discounted=invoice.discounted + amount), -amount, day)
    return _finish(state, work)


def _latest_payment(state: DebtorLedger, invoice_id: str) -> str | None:
    """The payment applied to the invoice last (by effective date): the one a discount posted without
    naming its payment was earned by."""
    applied = [
        (application.effective_date, source.seq, source.source_id)
        for source in state.sources.values()
        if source.kind == "payment"
        for application in source.applications
        if application.invoice_id == invoice_id
    ]
    return max(applied)[2] if applied else None


def _take_back_discounts(work: _Work, payment_id: str) -> _Work:
    """A reversed payment did not earn its discounts: the invoices owe them again."""
    earned = [
        d for d in work.state.discounts.values() if d.payment_id == payment_id and d.taken_back_on is None
    ]
    for discount in sorted(earned, key=lambda d: d.discount_id):
        work.put("discounts", discount.discount_id, replace(discount, taken_back_on=work.date))
        invoice = work.state.invoices[discount.invoice_id]
        reopened = replace(invoice, discounted=invoice.discounted - discount.amount)
        work = _record(work, reopened, discount.amount, max(work.date, discount.posting_date))
    return work


def _target(state: DebtorLedger, invoice_id: str, action: str) -> Invoice | str:
    """The invoice an event acts on, or why it cannot."""
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        return f"cannot {action} unknown invoice {invoice_id!r}"
    if invoice.cancelled_on:
        return f"cannot {action} invoice {invoice_id!r}: it was cancelled on {invoice.cancelled_on}"
    return invoice


def _currency_conflict(
    state: DebtorLedger, what: str, source_id: str, currency: str, directions: Mapping[str, int]
) -> str | None:
    """Why cash in `currency` cannot pay the known invoices it names, if one is in another currency."""
    for invoice_id in directions:
        invoice = state.invoices.get(invoice_id)
        if invoice is not None and invoice.currency != currency:
            return (
                f"{what} {source_id!r} in {currency} cannot pay invoice {invoice_id!r} "
                f"in {invoice.currency}: an allocation must name an invoice in the cash's currency"
            )
    return None


def _currency_rejection(state: DebtorLedger, action: str, invoice: Invoice, currency: str) -> Transition:
    reason = (
        f"cannot {action} invoice {invoice.invoice_id!r} in {invoice.currency} with an amount in {currency}"
    )
    return Transition(state, rejection=reason)


# --- one event's work in progress ---------------------------------------------------------------


class _Work:
    """One event's work in progress: the state so far, the event's business date, the movements
    made and the ids of the invoices stored (the only ones that can differ from the state before).

    Private to the event that makes it, and so changed in place: the state is copied on the event's
    first change and each of its mappings on the first change to it (`own`), not once per item
    stored. The state given is never changed, and the state `evolve` returns is never changed after."""

    __slots__ = ("_owned", "date", "movements", "state", "touched")

    def __init__(self, state: DebtorLedger, date: dt.date) -> None:
        self.state = state
        self.date = date
        self.movements: list[Movement] = []
        self.touched: list[str] = []
        self._owned: set[str] | None = None
        """The mappings of `state` this work made its own (None: `state` is the one given)."""

    def own(self, name: str) -> dict[str, Any]:
        """The state's mapping `name`, this work's own copy, to change in place. The memoized id sets
        (`_MEMOS`) stay valid: the copy holds what the original did, and the callers carry them."""
        owned = self._owned
        if owned is None:
            self.state = replace(self.state)
            owned = self._owned = set()
        fields = self.state.__dict__
        if name not in owned:
            fields[name] = dict(fields[name])
            owned.add(name)
        mapping: dict[str, Any] = fields[name]
        return mapping

    def put(self, name: str, key: str, value: Any) -> None:
        """Store `value` under `key` in the state's mapping `name` (one whose items no memo derives
        from: `write_offs`, `discounts`)."""
        self.own(name)[key] = value


def _put_invoice(
    work: _Work, invoice: Invoice, timeline: Timeline | None = None, movement: Movement | None = None
) -> _Work:
    """Store `invoice`, and with it its `timeline` and the `movement` made when given."""
    invoice_id = invoice.invoice_id
    work.own("invoices")[invoice_id] = invoice
    if timeline is not None:
        work.own("timelines")[invoice_id] = timeline
    memo = work.state.__dict__
    opened = _carried(memo.get("_open"), invoice_id, invoice.status == "open")
    if opened is not None:
        memo["_open"] = opened
    if movement is not None:
        work.movements.append(movement)
    work.touched.append(invoice_id)
    return work


def _put_source(work: _Work, source: CashSource) -> _Work:
    source_id = source.source_id
    work.own("sources")[source_id] = source
    memo = work.state.__dict__
    free = _carried(memo.get("_free"), source_id, source.undirected > 0)
    earmarking = _carried(memo.get("_earmarking"), source_id, bool(source.directed))
    if free is not None:
        memo["_free"] = free
    if earmarking is not None:
        memo["_earmarking"] = earmarking
    return work


def _record(
    work: _Work, invoice: Invoice, delta: int, day: dt.date, due_date: dt.date | None = None
) -> _Work:
    """Store `invoice` (which already reflects the change) and the movement of `delta` from `day`."""
    timeline = _timeline_add(work.state.timelines.get(invoice.invoice_id, ()), day, delta)
    if (settled_on := _settled_on(invoice, timeline, day)) != invoice.settled_on:
        invoice = replace(invoice, settled_on=settled_on)
    movement = Movement(invoice.invoice_id, invoice.currency, due_date or invoice.due_date, delta, day)
    return _put_invoice(work, invoice, timeline, movement)


def _settled_on(invoice: Invoice, timeline: Timeline, day: dt.date) -> dt.date | None:
    """Settled from the movement that brought the outstanding to zero, but not before the date from
    which the timeline stays at zero (a payment valued early does not settle what later cash paid)."""
    if invoice.cancelled_on or invoice.outstanding > 0:
        return None
    return max(day, _zero_since(timeline) or day)


def _room_date(work: _Work, invoice: Invoice, amount: int, earliest: dt.date | None = None) -> dt.date:
    """When a reduction of `amount` takes effect: max(event date, `earliest`, issue date), or later
    if the invoice, as of that date or a later one, has less than `amount` outstanding."""
    start = max(work.date, earliest or invoice.issue_date, invoice.issue_date)
    return _room_from(work.state.timelines.get(invoice.invoice_id, ()), start, amount)


# --- applying and releasing cash ----------------------------------------------------------------


def _apply(work: _Work, source_id: str, invoice_id: str, amount: int) -> _Work:
    source = work.state.sources[source_id]
    invoice = work.state.invoices[invoice_id]
    day = _room_date(work, invoice, amount, source.value_date)
    work = _put_source(
        work, replace(source, applications=(*source.applications, Application(invoice_id, amount, day)))
    )
    return _record(work, replace(invoice, applied=invoice.applied + amount), -amount, day)


def _release(work: _Work, source_id: str, index: int, amount: int) -> _Work:
    """Release `amount` of the source's application at `index`, from max(event date, its date)."""
    source = work.state.sources[source_id]
    application = source.applications[index]
    rest = application.amount - amount
    kept = (replace(application, amount=rest),) if rest else ()
    applications = (*source.applications[:index], *kept, *source.applications[index + 1 :])
    day = max(work.date, application.effective_date)
    released = source.released
    if day > application.effective_date:
        released = (*released, Released(application.invoice_id, amount, application.effective_date, day))
    work = _put_source(work, replace(source, applications=applications, released=released))
    invoice = work.state.invoices[application.invoice_id]
    return _record(work, replace(invoice, applied=invoice.applied - amount), amount, day)


def _release_source(work: _Work, source_id: str) -> _Work:
    """Release all of a source's applications, newest first."""
    while applications := work.state.sources[source_id].applications:
        work = _release(work, source_id, len(applications) - 1, applications[-1].amount)
    return work


def _release_invoice(work: _Work, invoice_id: str, keep: int) -> _Work:
    """Release cash applied to the invoice, newest application first, until at most `keep` is applied."""
    while (excess := work.state.invoices[invoice_id].applied - keep) > 0:
        source, index = _newest_application(work.state, invoice_id)
        work = _release(work, source.source_id, index, min(excess, source.applications[index].amount))
    return work


def _newest_application(state: DebtorLedger, invoice_id: str) -> tuple[CashSource, int]:
    candidates = [
        (application.effective_date, source.seq, index, source)
        for source in state.sources.values()
        for index, application in enumerate(source.applications)
        if application.invoice_id == invoice_id
    ]
    _, _, index, source = max(candidates, key=lambda c: (c[0], c[1], c[2]))
    return source, index


def _direct(work: _Work, source_id: str, directions: Iterable[tuple[str, int]]) -> _Work:
    """Apply directed amounts to known open invoices of the source's currency (up to what they owe;
    the rest is undirected) and earmark those naming invoices not known yet."""
    for invoice_id, amount in directions:
        source = work.state.sources[source_id]
        invoice = work.state.invoices.get(invoice_id)
        if invoice is None:
            directed = {**source.directed, invoice_id: source.directed.get(invoice_id, 0) + amount}
            work = _put_source(work, replace(source, directed=directed))
        elif invoice.currency == source.currency and (fit := min(amount, invoice.outstanding)) > 0:
            work = _apply(work, source_id, invoice_id, fit)
    return work


def _claim_earmarks(work: _Work, invoice_id: str) -> _Work:
    """Apply the cash earmarked for a newly known invoice, in arrival order; any excess is undirected.

    Cash earmarked for an invoice that arrives in another currency is neither applied to it nor
    released to pay other invoices: the ERP said what the money pays, and that cannot be, so a
    person has to say where it goes. It stays unapplied (on the statement too) and earmarked under
    that invoice's id until the ERP re-allocates (`ar.payment.allocated.v1`) or reverses the payment;
    the invoice's transition reports the refusal against the event that made the earmark."""
    sources = work.state.sources
    earmarking = sorted(
        (s for i in _earmarking_sources(work.state) if invoice_id in (s := sources[i]).directed),
        key=lambda s: s.seq,
    )
    currency = work.state.invoices[invoice_id].currency
    for source in earmarking:
        if source.currency != currency:
            continue
        amount = source.directed[invoice_id]
        directed = {k: v for k, v in source.directed.items() if k != invoice_id}
        work = _put_source(work, replace(source, directed=directed))
        invoice = work.state.invoices[invoice_id]
        if (fit := min(amount, invoice.outstanding)) > 0:
            work = _apply(work, source.source_id, invoice_id, fit)
    return work


def _refused_earmark(source: CashSource, invoice: Invoice) -> str:
    what, until = (
        ("payment", "re-allocated or reversed")
        if source.kind == "payment"
        else ("credit note", "re-allocated")
    )
    return (
        f"{what} {source.source_id!r} in {source.currency} cannot pay invoice {invoice.invoice_id!r} "
        f"in {invoice.currency}: the {source.directed[invoice.invoice_id]} allocated to it stays unapplied "
        f"and is not applied elsewhere until the {what} is {until}"
    )


def _auto_apply(work: _Work) -> _Work:
    """Apply undirected unapplied cash, oldest value date first, to the open invoices of its
    currency, oldest due date first, until either runs out."""
    free = _free_sources(work.state)
    if not free:
        return work
    # Each application only lowers one source's free cash and one invoice's outstanding, and no
    # invoice opens meanwhile: so the candidates are found once, in order, and re-checked as used.
    sources = work.state.sources
    currencies = {sources[i].currency for i in free}
    open_invoices: dict[str, list[Invoice]] = {}
    invoices = work.state.invoices
    for invoice_id in _open_invoices(work.state):
        if (invoice := invoices[invoice_id]).currency in currencies:
            open_invoices.setdefault(invoice.currency, []).append(invoice)
    if not open_invoices:
        return work
    for candidates in open_invoices.values():
        candidates.sort(key=_due_order, reverse=True)  # the oldest last, to pop
    available = sorted(
        (source for i in free if (source := sources[i]).currency in open_invoices), key=_value_order
    )
    source_ids = [s.source_id for s in available]
    while (pair := _next_pair(work.state, source_ids, open_invoices)) is not None:
        source, invoice = pair
        work = _apply(work, source.source_id, invoice.invoice_id, min(source.undirected, invoice.outstanding))
    return work


def _next_pair(
    state: DebtorLedger, source_ids: list[str], open_invoices: dict[str, list[Invoice]]
) -> tuple[CashSource, Invoice] | None:
    """The oldest source with free cash whose currency has an open invoice, and the oldest such
    invoice, as of the current state."""
    for source_id in source_ids:
        source = state.sources[source_id]
        if source.undirected <= 0:
            continue
        candidates = open_invoices.get(source.currency)
        while candidates:
            invoice = state.invoices[candidates[-1].invoice_id]
            if invoice.status == "open":
                return source, invoice
            candidates.pop()
    return None


def _value_order(source: CashSource) -> tuple[dt.date, int]:
    return (source.value_date, source.seq)


def _due_order(invoice: Invoice) -> tuple[dt.date, dt.date, str]:
    return (invoice.due_date, invoice.issue_date, invoice.invoice_id)


# --- adjustments --------------------------------------------------------------------------------


def _change_amount(work: _Work, invoice_id: str, new_amount: int) -> _Work:
    invoice = work.state.invoices[invoice_id]
    delta = new_amount - invoice.amount
    if not delta:
        return work
    day = max(work.date, invoice.issue_date, invoice.adjusted_on or invoice.issue_date)
    if delta < 0:
        day = _room_date(work, invoice, -delta, day)
    return _record(work, replace(invoice, amount=new_amount, adjusted_on=day), delta, day)


def _change_due_date(work: _Work, invoice_id: str, due_date: dt.date) -> _Work:
    """Move the outstanding from the old due date to the new one, from the adjustment date on."""
    invoice = work.state.invoices[invoice_id]
    if due_date == invoice.due_date:
        return work
    day = max(work.date, invoice.issue_date, invoice.adjusted_on or invoice.issue_date)
    moved = replace(invoice, due_date=due_date, adjusted_on=day)
    if not invoice.outstanding:
        return _put_invoice(work, moved)
    work = _record(work, moved, -invoice.outstanding, day, due_date=invoice.due_date)
    return _record(work, moved, invoice.outstanding, day)


# --- timelines ----------------------------------------------------------------------------------


def _timeline_add(timeline: Timeline, day: dt.date, delta: int) -> Timeline:
    merged = dict(timeline)
    merged[day] = merged.get(day, 0) + delta
    return tuple(sorted((d, v) for d, v in merged.items() if v))


def balance_as_of(timeline: Timeline, day: dt.date) -> int:
    """The outstanding amount a timeline gives as of `day`."""
    return sum(delta for d, delta in timeline if d <= day)


def _room_from(timeline: Timeline, start: dt.date, amount: int) -> dt.date:
    """The first date from `start` on such that the balance as of it and of every later date is at
    least `amount` (`start` itself if the timeline cannot provide that)."""
    points = [(start, balance_as_of(timeline, start))]
    for day, _ in timeline:
        if day > start:
            points.append((day, balance_as_of(timeline, day)))
    for index in range(len(points) - 1, -1, -1):
        if points[index][1] < amount:
            return points[index + 1][0] if index + 1 < len(points) else start
    return start


def _zero_since(timeline: Timeline) -> dt.date | None:
    """The date from which the balance has been zero for good, if it ends at zero."""
    balance, since = 0, None
    for day, delta in timeline:
        balance += delta
        since = day if balance == 0 else None
    return since


# --- what changed -------------------------------------------------------------------------------


def _finish(before: DebtorLedger, work: _Work, written_off: str | None = None) -> Transition:
    """Auto-apply free cash, then describe the event's effect; an event that changes nothing emits nothing."""
    work = _auto_apply(work)
    after = work.state
    if after == before:
        return Transition(before)
    # Only invoices the event stored can differ; those stored unchanged are the same objects or equal.
    touched = sorted(
        i
        for i in set(work.touched)
        if (previous := before.invoices.get(i)) is not (invoice := after.invoices[i]) and previous != invoice
    )
    changes = tuple(
        _balance_change(before.invoices.get(i), after.invoices[i], work, written_off) for i in touched
    )
    return Transition(after, tuple(work.movements), changes)


def _balance_change(
    before: Invoice | None, after: Invoice, work: _Work, written_off: str | None
) -> BalanceChange:
    dates = [m.effective_date for m in work.movements if m.invoice_id == after.invoice_id]
    effective = max(dates, default=max(work.date, after.issue_date))
    change = after.outstanding - (before.outstanding if before else 0)
    return BalanceChange(_change_kind(before, after, written_off), after, change, effective)


def _change_kind(before: Invoice | None, after: Invoice, written_off: str | None) -> ChangeKind:
    if before is None:
        return "opened"
    if after.invoice_id == written_off:
        return "written_off"
    if after.status == "cancelled":
        return "cancelled"
    if before.status in ("settled", "written_off") and after.status == "open":
        return "reopened"
    if before.status == "open" and after.status in ("settled", "written_off"):
        return "settled"
    return "changed"
