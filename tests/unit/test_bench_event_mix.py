"""The event-mix measure's claim: an event it counts as needing no item of the debtor's state does
the same on the state stripped of every other item."""

from __future__ import annotations

import datetime as dt

from hypothesis import given as for_all
from hypothesis import settings

from bench.event_mix import debtors_per_event, measure, needs_no_items, same_effect, stripped
from bench.portfolio import generate, spec_for
from contracts.journal import InvoiceIssued, PaymentReceived
from contracts.money import Money
from services.ledger.domain import LedgerEvent, evolve, initial_state

from .test_ledger_properties import histories

DAY = dt.date(2026, 3, 2)


def _invoice(invoice_id: str, amount: int) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=invoice_id,
        issue_date=DAY,
        due_date=DAY + dt.timedelta(days=30),
        amount=Money(amount_minor=amount, currency="EUR"),
    )


def test_the_tiny_portfolio_counts_events_needing_no_item_and_each_does_the_same_stripped() -> None:
    mix = measure(generate(spec_for("tiny")))
    assert mix.no_items > len(mix.items) / 2
    assert mix.differing == 0
    assert sum(mix.kinds.values()) == len(mix.items)
    assert 0 < mix.working_alone < mix.archived < len(mix.items)


@settings(max_examples=400, deadline=None)
@for_all(histories())
def test_over_random_histories_each_event_counted_does_the_same_on_the_stripped_state(
    history: list[LedgerEvent],
) -> None:
    """Histories with parked events, earmarks, free cash, several currencies and repeats."""
    state = initial_state("t", "d")
    for index, event in enumerate(history):
        transition = evolve(state, event, event_id=f"e{index}")
        if needs_no_items(state, event):
            assert same_effect(transition, evolve(stripped(state, event), event, event_id=f"e{index}"), state)
        state = transition.state


def test_an_invoice_that_free_cash_pays_needs_the_cash_source() -> None:
    state = evolve(initial_state("t", "d"), _invoice("A", 1_000)).state
    paid = PaymentReceived(payment_id="P", value_date=DAY, amount=Money(amount_minor=5_000, currency="EUR"))
    state = evolve(state, paid).state
    later = _invoice("B", 2_000)
    assert not needs_no_items(state, later)
    whole = evolve(state, later)
    assert whole.changes[0].invoice.outstanding == 0  # the free cash paid it
    assert not same_effect(whole, evolve(stripped(state, later), later), state)


def test_a_repeated_invoice_keeps_its_stored_copy_in_the_stripped_state() -> None:
    state = evolve(evolve(initial_state("t", "d"), _invoice("A", 1_000)).state, _invoice("B", 2_000)).state
    repeated = _invoice("A", 1_000)
    assert needs_no_items(state, repeated)
    assert list(stripped(state, repeated).invoices) == ["A"]
    assert same_effect(evolve(state, repeated), evolve(stripped(state, repeated), repeated), state)


def test_debtors_per_event_counts_each_debtor_once_per_window() -> None:
    keys = [b"a", b"b", b"a", b"b", b"c"]
    assert debtors_per_event(keys, 2) == 5 / 5  # {a, b}, {a, b}, {c}
    assert debtors_per_event(keys, 5) == 3 / 5
    assert debtors_per_event([], 10) == 0.0
