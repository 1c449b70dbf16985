"""Properties of the ledger over random event sequences: repeats, unknown references (parked until
they arrive), reversals, re-allocations, adjustments, cancellations, write-offs, several currencies,
dates in any order."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from contracts.journal import (
    Allocation,
    CreditNoteIssued,
    InvoiceAdjusted,
    InvoiceCancelled,
    InvoiceIssued,
    PaymentAllocated,
    PaymentReceived,
    PaymentReversed,
    WriteOffPosted,
)
from services.ledger.domain import (
    DebtorLedger,
    LedgerEvent,
    Movement,
    Transition,
    _earmarking_sources,
    _free_sources,
    _open_invoices,
    _referent,
    evolve,
    initial_state,
    replace,
)
from services.ledger.state_codec import encode_ledger
from services.ledger.statement import statement

from . import money, profile

START = dt.date(2024, 1, 1)
CURRENCIES = ("EUR", "USD")
INVOICE_IDS = ("I1", "I2", "I3", "I4", "I5")
PAYMENT_IDS = ("P1", "P2", "P3", "P4")
NOTE_IDS = ("C1", "C2")
WRITE_OFF_IDS = ("W1", "W2", "W3")

dates = st.integers(0, 120).map(lambda n: START + dt.timedelta(days=n))
amounts = st.integers(1, 400)
currencies = st.sampled_from(CURRENCIES)
invoice_ids = st.sampled_from(INVOICE_IDS)


@st.composite
def allocations(draw: st.DrawFn, currency: str, total: int | None) -> list[Allocation]:
    """Allocations to distinct invoices; when `total` is given they add up to at most it."""
    chosen = draw(st.lists(invoice_ids, unique=True, max_size=3))
    result, left = [], total
    for invoice_id in chosen:
        amount = draw(st.integers(1, left) if left is not None else amounts) if left != 0 else 0
        if amount:
            result.append(Allocation(invoice_id=invoice_id, amount=money(amount, currency)))
            left = None if left is None else left - amount
    return result


@st.composite
def invoice_issued(draw: st.DrawFn) -> InvoiceIssued:
    issue_date = draw(dates)
    return InvoiceIssued(
        invoice_id=draw(invoice_ids),
        issue_date=issue_date,
        due_date=issue_date + dt.timedelta(days=draw(st.integers(0, 45))),
        amount=money(draw(amounts), draw(currencies)),
    )


@st.composite
def invoice_adjusted(draw: st.DrawFn) -> InvoiceAdjusted:
    return InvoiceAdjusted(
        invoice_id=draw(invoice_ids),
        adjustment_date=draw(dates),
        new_amount=money(draw(amounts), draw(currencies)),
        due_date=draw(st.none() | dates),
    )


@st.composite
def payment_received(draw: st.DrawFn) -> PaymentReceived:
    currency, amount = draw(currencies), draw(amounts)
    return PaymentReceived(
        payment_id=draw(st.sampled_from(PAYMENT_IDS)),
        value_date=draw(dates),
        amount=money(amount, currency),
        allocations=draw(allocations(currency, amount)),
    )


@st.composite
def credit_note_issued(draw: st.DrawFn) -> CreditNoteIssued:
    return CreditNoteIssued(
        credit_note_id=draw(st.sampled_from(NOTE_IDS)),
        issue_date=draw(dates),
        amount=money(draw(amounts), draw(currencies)),
        invoice_id=draw(st.none() | invoice_ids),
    )


@st.composite
def payment_allocated(draw: st.DrawFn) -> PaymentAllocated:
    currency = draw(currencies)
    chosen = draw(allocations(currency, None).filter(bool))
    return PaymentAllocated(
        payment_id=draw(st.sampled_from(PAYMENT_IDS + NOTE_IDS)),
        allocation_date=draw(dates),
        allocations=chosen,
    )


@st.composite
def write_off_posted(draw: st.DrawFn) -> WriteOffPosted:
    return WriteOffPosted(
        writeoff_id=draw(st.sampled_from(WRITE_OFF_IDS)),
        invoice_id=draw(invoice_ids),
        posting_date=draw(dates),
        amount=draw(
            st.none() | st.builds(money, st.integers(1, 200), st.sampled_from(("EUR", "EUR", "USD")))
        ),
    )


events = st.one_of(
    invoice_issued(),
    invoice_issued(),
    invoice_adjusted(),
    st.builds(InvoiceCancelled, invoice_id=invoice_ids, cancellation_date=dates),
    payment_received(),
    payment_received(),
    credit_note_issued(),
    payment_allocated(),
    st.builds(PaymentReversed, payment_id=st.sampled_from(PAYMENT_IDS + NOTE_IDS), reversal_date=dates),
    write_off_posted(),
    st.builds(profile, st.sampled_from(("A", "B"))),
)


@st.composite
def histories(draw: st.DrawFn) -> list[LedgerEvent]:
    """Random events, some of them repeated later on."""
    history: list[LedgerEvent] = []
    for event in draw(st.lists(events, max_size=30)):
        history.append(event)
        if draw(st.integers(0, 5)) == 0:
            history.append(draw(st.sampled_from(history)))
    return history


# --- a record of what the ledger was told and did -------------------------------------------------


@dataclass
class Run:
    state: DebtorLedger = field(default_factory=lambda: initial_state("acme", "debtor-1"))
    transitions: list[Transition] = field(default_factory=list)
    movements: dict[str, list[Movement]] = field(default_factory=lambda: defaultdict(list))
    largest_amount: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def apply(self, event: LedgerEvent, event_id: str) -> Transition:
        waiting = {p.event_id: p.event for p in self.state.parked}
        transition = evolve(self.state, event, event_id)
        self.transitions.append(transition)
        for movement in transition.movements:
            self.movements[movement.invoice_id].append(movement)
        changed = transition.state is not self.state and not transition.parked
        self.state = transition.state
        # The amounts an invoice had during the transition (parked events it released may change it).
        applied = [event] if changed else []
        applied += [waiting[i] for i, reason in transition.resolved if reason is None and i in waiting]
        for e in applied:
            if isinstance(e, InvoiceIssued | InvoiceAdjusted):
                amount = (e.amount if isinstance(e, InvoiceIssued) else e.new_amount).amount_minor
                self.largest_amount[e.invoice_id] = max(self.largest_amount[e.invoice_id], amount)
        return transition


def run(history: Sequence[LedgerEvent], ids: Sequence[str] | None = None) -> Run:
    result = Run()
    for index, event in enumerate(history):
        before = result.state
        transition = result.apply(event, ids[index] if ids else f"e{index}")
        check_transition(before, transition)
        check_state(transition.state)
    return result


def check_transition(before: DebtorLedger, transition: Transition) -> None:
    if transition.rejection is not None:
        assert transition == Transition(before, rejection=transition.rejection)
        return
    after = transition.state
    ids = [c.invoice.invoice_id for c in transition.changes]
    assert len(ids) == len(set(ids)), "at most one balance change per invoice and event"
    assert {m.invoice_id for m in transition.movements} >= {i for i in ids if before.invoices.get(i) is None}
    for change in transition.changes:
        invoice = change.invoice
        old = before.invoices.get(invoice.invoice_id)
        assert invoice == after.invoices[invoice.invoice_id] and invoice != old
        assert change.change == invoice.outstanding - (old.outstanding if old else 0)
        assert (change.kind == "opened") == (old is None)
    changed = {i for i, invoice in after.invoices.items() if before.invoices.get(i) != invoice}
    assert changed == set(ids), "every invoice that changed has its balance change"


def check_state(state: DebtorLedger) -> None:
    invoices, sources = state.invoices, state.sources
    # The id sets the domain keeps beside a state, carried from state to state, are what they say.
    memos = {
        "_open": {i.invoice_id for i in invoices.values() if i.status == "open"},
        "_free": {s.source_id for s in sources.values() if s.undirected > 0},
        "_earmarking": {s.source_id for s in sources.values() if s.directed},
    }
    for memo, expected in memos.items():
        if memo in state.__dict__:
            assert state.__dict__[memo] == expected, memo
    for invoice in invoices.values():
        applications = [
            a for s in sources.values() for a in s.applications if a.invoice_id == invoice.invoice_id
        ]
        assert invoice.applied == sum(a.amount for a in applications)
        assert invoice.written_off == sum(
            w.amount for w in state.write_offs.values() if w.invoice_id == invoice.invoice_id
        )
        assert 0 <= invoice.outstanding <= invoice.amount
        assert (invoice.settled_on is not None) == (invoice.status in ("settled", "written_off"))
        if invoice.cancelled_on:
            assert invoice.applied == 0
    for source in sources.values():
        assert all(invoices[a.invoice_id].currency == source.currency for a in source.applications)
        assert all(a.amount > 0 for a in source.applications)
        # Earmarked for an invoice not known yet, or held: its invoice came in another currency.
        assert all(
            amount > 0 and (i not in invoices or invoices[i].currency != source.currency)
            for i, amount in source.directed.items()
        )
        assert 0 <= source.undirected <= source.unapplied <= source.amount
        if source.reversed_on:
            assert not source.applications and not source.directed
        if source.undirected > 0:
            open_here = [i for i in invoices.values() if i.currency == source.currency and i.status == "open"]
            assert not open_here, "free cash while an invoice of its currency is open"
    for currency in {i.currency for i in invoices.values()} | {s.currency for s in sources.values()}:
        assert ledger_identity(state, currency)
    for entry in state.parked:
        kind, referent = _referent(entry.event)
        assert referent not in (sources if kind == "source" else invoices), (
            "parked while its referent is known"
        )


def ledger_identity(state: DebtorLedger, currency: str) -> bool:
    """Σ outstanding - Σ unapplied == Σ invoiced (not cancelled) - Σ cash (not reversed) - Σ written off
    (on invoices not cancelled): every unit of cash is either applied to exactly one live invoice or
    unapplied, and an invoice's outstanding is its amount less what is applied and written off."""
    invoices = [i for i in state.invoices.values() if i.currency == currency]
    live = {i.invoice_id for i in invoices if not i.cancelled_on}
    cash = [s for s in state.sources.values() if s.currency == currency and not s.reversed_on]
    left = sum(i.outstanding for i in invoices) - sum(s.unapplied for s in cash)
    invoiced = sum(i.amount for i in invoices if i.invoice_id in live)
    written_off = sum(w.amount for w in state.write_offs.values() if w.invoice_id in live)
    return left == invoiced - sum(s.amount for s in cash) - written_off


# --- the properties ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@for_all(histories())
def test_every_state_keeps_the_ledger_invariants(history: list[LedgerEvent]) -> None:
    run(history)


@settings(max_examples=300, deadline=None)
@for_all(histories())
def test_movements_add_up_to_the_outstanding_and_stay_within_the_amount_as_of_every_date(
    history: list[LedgerEvent],
) -> None:
    result = run(history)
    for invoice_id, movements in result.movements.items():
        invoice = result.state.invoices[invoice_id]
        assert sum(m.delta for m in movements) == invoice.outstanding
        assert all(m.currency == invoice.currency for m in movements)
        for as_of in sorted({m.effective_date for m in movements}):
            balance = sum(m.delta for m in movements if m.effective_date <= as_of)
            assert 0 <= balance <= result.largest_amount[invoice_id], (invoice_id, as_of, balance)
        by_date: dict[dt.date, int] = defaultdict(int)
        for m in movements:
            by_date[m.effective_date] += m.delta
        assert result.state.timelines[invoice_id] == tuple(sorted((d, v) for d, v in by_date.items() if v))


@settings(max_examples=300, deadline=None)
@for_all(histories())
def test_applying_each_event_twice_is_applying_it_once(history: list[LedgerEvent]) -> None:
    state = initial_state("acme", "debtor-1")
    for event in history:
        once = evolve(state, event)
        twice = evolve(once.state, event)
        assert twice.state == once.state
        assert not twice.movements and not twice.changes
        state = once.state


@settings(max_examples=300, deadline=None)
@for_all(histories())
def test_no_state_changes_once_made(history: list[LedgerEvent]) -> None:
    """`evolve` works on a private copy of what an event changes: every state it was given or
    returned reads the same after all later events (their items, and the open invoices and free
    cash it remembers for the next event) as when it was made."""
    state = initial_state("acme", "debtor-1")
    made: list[tuple[DebtorLedger, bytes, tuple[frozenset[str], ...]]] = []
    for event in history:
        made.append((state, encode_ledger(state), _memos(state)))
        state = evolve(state, event).state
    made.append((state, encode_ledger(state), _memos(state)))
    for earlier, encoded, memos in made:
        assert encode_ledger(earlier) == encoded
        assert _memos(earlier) == memos


def _memos(state: DebtorLedger) -> tuple[frozenset[str], ...]:
    return _open_invoices(state), _free_sources(state), _earmarking_sources(state)


@settings(max_examples=300, deadline=None)
@for_all(histories())
def test_replaying_the_accepted_history_onto_its_result_changes_nothing(history: list[LedgerEvent]) -> None:
    """Every applied event keyed by a business id (invoice, payment, credit note, write-off, the
    reversal of a payment) or closing something for good (cancellation) is a no-op the second time,
    wherever it comes. Not so for an event rejected or parked the first time (its invoice or payment
    was not known yet) nor for adjustments and re-allocations, which carry no business id and say
    "from now on it is so": replayed out of place they apply again. Their duplicates are caught by
    the envelope id; an immediate repeat of any event is a no-op (see above)."""
    result = run(history)
    replayed = result.state
    for event, transition in zip(history, result.transitions, strict=True):
        applied = transition.rejection is None and not transition.parked
        if applied and not isinstance(event, InvoiceAdjusted | PaymentAllocated):
            replayed = evolve(replayed, event).state
    assert replayed == result.state


@settings(max_examples=300, deadline=None)
@for_all(histories())
def test_an_event_parked_for_its_payment_or_invoice_is_applied_as_if_it_came_right_after_it(
    history: list[LedgerEvent],
) -> None:
    ids = [f"e{n}" for n in range(len(history))]
    parked_run = run(history, ids)
    held: dict[str, LedgerEvent] = {}
    reordered: list[tuple[str, LedgerEvent]] = []
    for event_id, event, transition in zip(ids, history, parked_run.transitions, strict=True):
        if transition.parked:
            held[event_id] = event
            continue
        reordered.append((event_id, event))
        reordered.extend((i, held.pop(i)) for i, _ in transition.resolved if i in held)
    in_order = run([e for _, e in reordered], [i for i, _ in reordered])

    assert [p.event_id for p in parked_run.state.parked] == list(held), "still waiting: never arrived"
    assert not any(t.parked for t in in_order.transitions)
    assert replace(parked_run.state, parked=()) == in_order.state
    for invoice_id, movements in in_order.movements.items():
        assert sum(m.delta for m in parked_run.movements[invoice_id]) == sum(m.delta for m in movements)


@settings(max_examples=200, deadline=None)
@for_all(histories(), dates)
def test_aging_buckets_add_up_to_the_balance(history: list[LedgerEvent], as_of: dt.date) -> None:
    state = run(history).state
    report = statement(state, as_of)
    for summary in report.currencies:
        assert sum(summary.aging.values()) == summary.balance
        assert summary.balance == sum(
            i.outstanding for i in report.open_items if i.currency == summary.currency
        )
