"""The ledger's rules, one given / when / then at a time."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from pydantic import TypeAdapter

from contracts.journal import JournalEntry
from services.ledger import state_codec
from services.ledger.domain import (
    Application,
    DebtorLedger,
    Movement,
    Parked,
    Transition,
    WriteOff,
    evolve,
    replace,
)

from . import (
    adjusted,
    allocated,
    cancelled,
    credit_note,
    day,
    given,
    invoice,
    payment,
    profile,
    reversed_,
    when,
    written_off,
)


def outstanding(state: DebtorLedger) -> dict[str, int]:
    return {i: inv.outstanding for i, inv in sorted(state.invoices.items())}


def unapplied(state: DebtorLedger) -> dict[str, int]:
    return {s: src.unapplied for s, src in sorted(state.sources.items())}


def kinds(transition: Transition) -> dict[str, str]:
    return {c.invoice.invoice_id: c.kind for c in transition.changes}


def deltas(transition: Transition) -> list[tuple[str, int, str]]:
    return [(m.invoice_id, m.delta, m.effective_date.isoformat()) for m in transition.movements]


def assert_no_op(before: DebtorLedger, transition: Transition) -> None:
    assert transition == Transition(before)


def posted(state: DebtorLedger, event_id: str, event: JournalEntry) -> Transition:
    """`when`, with the event's envelope id (kept with a parked event, reported when it is decided)."""
    return evolve(state, event, event_id=event_id)


# --- invoices issued -----------------------------------------------------------------------------


def test_an_issued_invoice_opens_with_one_movement_of_its_amount() -> None:
    state = given()
    then = when(state, invoice("I1", 100, issued="2024-01-01", due="2024-01-31"))
    assert outstanding(then.state) == {"I1": 100}
    assert then.movements == (Movement("I1", "EUR", day("2024-01-31"), 100, day("2024-01-01")),)
    assert [(c.kind, c.change, c.effective_date) for c in then.changes] == [
        ("opened", 100, day("2024-01-01"))
    ]


def test_an_invoice_id_seen_before_is_a_no_op() -> None:
    state = given(invoice("I1", 100))
    assert_no_op(state, when(state, invoice("I1", 999, currency="USD")))


# --- payments ------------------------------------------------------------------------------------


def test_a_payment_pays_the_oldest_due_date_first() -> None:
    state = given(invoice("I1", 100, due="2024-02-15"), invoice("I2", 100, due="2024-02-01"))
    then = when(state, payment("P1", 150))
    assert outstanding(then.state) == {"I1": 50, "I2": 0}
    assert kinds(then) == {"I1": "changed", "I2": "settled"}


def test_equal_due_dates_are_paid_by_issue_date_then_invoice_id() -> None:
    state = given(
        invoice("I3", 100, issued="2024-01-01", due="2024-02-01"),
        invoice("I2", 100, issued="2024-01-02", due="2024-02-01"),
        invoice("I1", 100, issued="2024-01-02", due="2024-02-01"),
    )
    then = when(state, payment("P1", 150))
    assert outstanding(then.state) == {"I1": 50, "I2": 100, "I3": 0}


def test_a_payment_pays_the_invoices_it_names_first_and_the_rest_oldest_first() -> None:
    state = given(invoice("I1", 100, due="2024-02-01"), invoice("I2", 100, due="2024-03-01"))
    then = when(state, payment("P1", 130, to={"I2": 100}))
    assert outstanding(then.state) == {"I1": 70, "I2": 0}


def test_a_named_amount_beyond_what_the_invoice_owes_goes_to_the_oldest_open_invoice() -> None:
    state = given(invoice("I1", 100, due="2024-02-01"), invoice("I2", 50, due="2024-03-01"))
    then = when(state, payment("P1", 80, to={"I2": 80}))
    assert outstanding(then.state) == {"I1": 70, "I2": 0}


def test_a_payment_that_arrives_before_its_invoice_is_applied_when_the_invoice_arrives() -> None:
    state = given(payment("P1", 100, on="2024-01-05"))
    then = when(state, invoice("I1", 100, issued="2024-01-10"))
    assert outstanding(then.state) == {"I1": 0}
    assert unapplied(then.state) == {"P1": 0}
    assert [(c.kind, c.change) for c in then.changes] == [("opened", 0)]
    assert deltas(then) == [("I1", 100, "2024-01-10"), ("I1", -100, "2024-01-10")]
    assert then.state.invoices["I1"].settled_on == day("2024-01-10")


def test_an_over_payment_stays_unapplied_and_pays_the_next_invoice() -> None:
    state = given(invoice("I1", 100), payment("P1", 150, on="2024-01-15"))
    assert unapplied(state) == {"P1": 50}
    then = when(state, invoice("I2", 80, issued="2024-02-01"))
    assert outstanding(then.state) == {"I1": 0, "I2": 30}
    assert deltas(then) == [("I2", 80, "2024-02-01"), ("I2", -50, "2024-02-01")]


def test_unapplied_cash_pays_a_new_invoice_oldest_value_date_first() -> None:
    state = given(payment("P-late", 100, on="2024-01-20"), payment("P-early", 100, on="2024-01-05"))
    then = when(state, invoice("I1", 150, issued="2024-01-01"))
    assert unapplied(then.state) == {"P-early": 0, "P-late": 50}
    assert deltas(then)[1:] == [("I1", -100, "2024-01-05"), ("I1", -50, "2024-01-20")]


def test_a_payment_naming_an_unknown_invoice_is_earmarked_until_that_invoice_arrives() -> None:
    state = given(invoice("I1", 100))
    earmarked = when(state, payment("P1", 100, to={"I9": 60}))
    assert outstanding(earmarked.state) == {"I1": 60}
    assert earmarked.state.sources["P1"].directed == {"I9": 60}
    then = when(earmarked.state, invoice("I9", 50, issued="2024-02-01"))
    assert outstanding(then.state) == {"I1": 50, "I9": 0}
    assert then.state.sources["P1"].directed == {}
    assert kinds(then) == {"I1": "changed", "I9": "opened"}


def test_earmarks_are_claimed_in_arrival_order() -> None:
    state = given(
        payment("P2", 70, on="2024-01-02", to={"I1": 70}), payment("P1", 70, on="2024-01-01", to={"I1": 70})
    )
    then = when(state, invoice("I1", 100))
    assert unapplied(then.state) == {"P1": 40, "P2": 0}


def test_a_payment_id_seen_before_is_a_no_op() -> None:
    state = given(invoice("I1", 100), payment("P1", 40))
    assert_no_op(state, when(state, payment("P1", 40)))


def test_currencies_never_mix() -> None:
    state = given(invoice("I-EUR", 100), invoice("I-USD", 100, currency="USD"))
    then = when(state, payment("P1", 250, currency="USD"))
    assert outstanding(then.state) == {"I-EUR": 100, "I-USD": 0}
    assert unapplied(then.state) == {"P1": 150}
    assert when(then.state, invoice("I-JPY", 100, currency="JPY")).state.sources["P1"].unapplied == 150


def test_a_payment_naming_an_invoice_in_another_currency_is_rejected_not_applied_elsewhere() -> None:
    state = given(invoice("I-EUR", 100), invoice("I-JPY", 100, currency="JPY"))
    then = when(state, payment("P1", 30, currency="JPY", to={"I-EUR": 30}))
    assert then.state == state and not then.movements and not then.changes
    assert then.rejection == (
        "payment 'P1' in JPY cannot pay invoice 'I-EUR' in EUR: "
        "an allocation must name an invoice in the cash's currency"
    )


def test_a_credit_note_naming_an_invoice_in_another_currency_is_rejected() -> None:
    state = given(invoice("I-EUR", 100), invoice("I-USD", 100, currency="USD"))
    then = when(state, credit_note("C1", 30, currency="USD", for_invoice="I-EUR"))
    assert then.state == state and then.rejection is not None
    assert "credit note 'C1' in USD cannot pay invoice 'I-EUR' in EUR" in then.rejection


def test_cash_earmarked_for_an_invoice_that_arrives_in_another_currency_stays_unapplied() -> None:
    """The ERP said the yen pay I-EUR; they cannot, and nobody said what else they pay: they are
    held, visible as unapplied, not applied to the open yen invoice, until the ERP re-allocates."""
    state = given(invoice("I-JPY", 500, currency="JPY"))
    earmarked = posted(state, "pay-P1", payment("P1", 300, currency="JPY", to={"I-EUR": 300}))
    then = posted(earmarked.state, "inv-I-EUR", invoice("I-EUR", 300))
    assert then.rejection is None and not then.parked
    assert outstanding(then.state) == {"I-EUR": 300, "I-JPY": 500}
    assert unapplied(then.state) == {"P1": 300}
    assert then.resolved == (
        (
            "pay-P1",
            "payment 'P1' in JPY cannot pay invoice 'I-EUR' in EUR: the 300 allocated to it stays "
            "unapplied and is not applied elsewhere until the payment is re-allocated or reversed",
        ),
    )
    later = when(then.state, invoice("I-JPY-2", 100, currency="JPY"))
    assert unapplied(later.state) == {"P1": 300}, "held, not paid to the next invoice either"
    re_allocated = when(later.state, allocated("P1", {"I-JPY": 300}, currency="JPY"))
    assert outstanding(re_allocated.state) == {"I-EUR": 300, "I-JPY": 200, "I-JPY-2": 100}
    assert unapplied(re_allocated.state) == {"P1": 0}
    assert re_allocated.state.earmarked_by == {}


# --- credit notes --------------------------------------------------------------------------------


def test_a_credit_note_naming_an_invoice_reduces_it() -> None:
    state = given(invoice("I1", 100, due="2024-01-20"), invoice("I2", 100, due="2024-02-20"))
    then = when(state, credit_note("C1", 30, on="2024-01-10", for_invoice="I2"))
    assert outstanding(then.state) == {"I1": 100, "I2": 70}
    assert then.state.sources["C1"].kind == "credit_note"
    assert deltas(then) == [("I2", -30, "2024-01-10")]


def test_a_credit_note_beyond_its_invoice_is_unapplied_credit_for_the_next_invoice() -> None:
    state = given(invoice("I1", 100))
    then = when(state, credit_note("C1", 130, for_invoice="I1"))
    assert outstanding(then.state) == {"I1": 0}
    assert unapplied(then.state) == {"C1": 30}
    assert outstanding(when(then.state, invoice("I2", 50)).state) == {"I1": 0, "I2": 20}


def test_a_credit_note_without_an_invoice_pays_the_oldest_open_invoice() -> None:
    state = given(invoice("I1", 100, due="2024-03-01"), invoice("I2", 100, due="2024-02-01"))
    then = when(state, credit_note("C1", 40))
    assert outstanding(then.state) == {"I1": 100, "I2": 60}


# --- re-allocation -------------------------------------------------------------------------------


def test_a_re_allocation_moves_the_payment_to_the_invoices_it_names() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        invoice("I2", 100, due="2024-03-01"),
        payment("P1", 100, on="2024-01-15"),
    )
    then = when(state, allocated("P1", {"I2": 100}, on="2024-01-20"))
    assert outstanding(then.state) == {"I1": 100, "I2": 0}
    assert kinds(then) == {"I1": "reopened", "I2": "settled"}
    assert deltas(then) == [("I1", 100, "2024-01-20"), ("I2", -100, "2024-01-20")]
    assert then.state.sources["P1"].applications == (Application("I2", 100, day("2024-01-20")),)


def test_a_re_allocation_applies_the_rest_of_the_payment_oldest_first() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        invoice("I2", 100, due="2024-03-01"),
        payment("P1", 150, on="2024-01-15"),
    )
    then = when(state, allocated("P1", {"I2": 100}))
    assert outstanding(then.state) == {"I1": 50, "I2": 0}
    assert [(c.invoice.invoice_id, c.kind, c.change) for c in then.changes] == [
        ("I1", "reopened", 50),
        ("I2", "settled", -50),
    ]


def test_a_re_allocation_to_an_invoice_paid_by_other_cash_leaves_that_cash_in_place() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        payment("P1", 100, on="2024-01-10"),
        payment("P2", 100, on="2024-01-12"),
        invoice("I2", 100, due="2024-03-01"),
    )
    then = when(state, allocated("P2", {"I1": 100}))
    assert outstanding(then.state) == {"I1": 0, "I2": 0}
    assert {s: [a.invoice_id for a in src.applications] for s, src in then.state.sources.items()} == {
        "P1": ["I1"],
        "P2": ["I2"],
    }


def test_a_re_allocation_to_an_invoice_not_known_yet_earmarks_the_payment() -> None:
    state = given(invoice("I1", 100), payment("P1", 100))
    then = when(state, allocated("P1", {"I9": 100}))
    assert outstanding(then.state) == {"I1": 100}
    assert then.state.sources["P1"].directed == {"I9": 100}


def test_the_same_re_allocation_twice_changes_nothing_the_second_time() -> None:
    state = given(invoice("I1", 100), invoice("I2", 100), payment("P1", 150))
    once = when(state, allocated("P1", {"I2": 100}))
    assert_no_op(once.state, when(once.state, allocated("P1", {"I2": 100})))


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (allocated("P1", {"I1": 60, "I2": 60}), "exceed"),
        (allocated("P1", {"I1": 10}, currency="USD"), "in USD"),
        (allocated("P1", {"I-USD": 10}), "cannot pay invoice 'I-USD' in USD"),
    ],
)
def test_a_re_allocation_that_cannot_be_done_is_rejected(event: object, reason: str) -> None:
    state = given(
        invoice("I1", 100), invoice("I2", 100), invoice("I-USD", 5, currency="USD"), payment("P1", 100)
    )
    then = when(state, event)  # type: ignore[arg-type]
    assert then.state == state and not then.movements and not then.changes
    assert then.rejection is not None and reason in then.rejection


def test_a_reversed_payment_cannot_be_re_allocated() -> None:
    state = given(invoice("I1", 100), payment("P1", 100), reversed_("P1"))
    then = when(state, allocated("P1", {"I1": 100}))
    assert then.rejection is not None and "'P1'" in then.rejection


# --- reversals -----------------------------------------------------------------------------------


def test_a_reversal_reopens_exactly_what_the_payment_paid() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        invoice("I2", 100, due="2024-03-01"),
        payment("P0", 30, on="2024-01-05", to={"I2": 30}),
        payment("P1", 150, on="2024-01-15"),
    )
    assert outstanding(state) == {"I1": 0, "I2": 20}
    then = when(state, reversed_("P1", on="2024-01-25"))
    assert outstanding(then.state) == {"I1": 100, "I2": 70}
    assert kinds(then) == {"I1": "reopened", "I2": "changed"}
    assert sorted(deltas(then)) == [("I1", 100, "2024-01-25"), ("I2", 50, "2024-01-25")]
    assert then.state.sources["P1"].reversed_on == day("2024-01-25")
    assert then.state.invoices["I1"].settled_on is None


def test_the_unapplied_part_of_a_reversed_payment_vanishes() -> None:
    state = given(invoice("I1", 100), payment("P1", 150))
    then = when(state, reversed_("P1"))
    assert unapplied(then.state) == {"P1": 0}
    assert outstanding(when(then.state, invoice("I2", 50)).state) == {"I1": 100, "I2": 50}


def test_a_reversed_payment_stays_reversed_the_second_time() -> None:
    state = given(invoice("I1", 100), payment("P1", 100), reversed_("P1"))
    assert_no_op(state, when(state, reversed_("P1", on="2024-02-01")))


def test_an_invoice_reopened_by_a_reversal_is_paid_by_unapplied_cash_if_there_is_some() -> None:
    state = given(invoice("I1", 100), payment("P1", 100, on="2024-01-15"), payment("P2", 60, on="2024-01-20"))
    then = when(state, reversed_("P1", on="2024-01-25"))
    assert outstanding(then.state) == {"I1": 40}
    assert unapplied(then.state) == {"P1": 0, "P2": 0}
    assert deltas(then) == [("I1", 100, "2024-01-25"), ("I1", -60, "2024-01-25")]


def test_a_backdated_reversal_never_releases_cash_before_it_was_applied() -> None:
    state = given(invoice("I1", 100), payment("P1", 100, on="2024-01-15"))
    then = when(state, reversed_("P1", on="2024-01-10"))
    assert deltas(then) == [("I1", 100, "2024-01-15")]


def test_reversing_a_credit_note_is_rejected() -> None:
    state = given(invoice("I1", 100), credit_note("C1", 10))
    then = when(state, reversed_("C1"))
    assert then.state == state and then.rejection is not None and "'C1'" in then.rejection


# --- adjustments ---------------------------------------------------------------------------------


def test_raising_a_settled_invoice_reopens_it() -> None:
    state = given(invoice("I1", 100), payment("P1", 100))
    then = when(state, adjusted("I1", 120, on="2024-01-20"))
    assert outstanding(then.state) == {"I1": 20}
    assert [(c.kind, c.change) for c in then.changes] == [("reopened", 20)]
    assert deltas(then) == [("I1", 20, "2024-01-20")]


def test_raising_an_invoice_applies_unapplied_cash_to_it() -> None:
    state = given(invoice("I1", 100), payment("P1", 130))
    then = when(state, adjusted("I1", 120))
    assert outstanding(then.state) == {"I1": 0} and unapplied(then.state) == {"P1": 10}
    assert [(c.kind, c.change) for c in then.changes] == [("changed", 0)]


def test_lowering_an_invoice_below_what_is_applied_releases_the_newest_cash_to_other_invoices() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        payment("P1", 60, on="2024-01-10"),
        payment("P2", 40, on="2024-01-12"),
        invoice("I2", 50, issued="2024-01-05", due="2024-03-01"),
    )
    then = when(state, adjusted("I1", 70, on="2024-01-20"))
    assert outstanding(then.state) == {"I1": 0, "I2": 20}
    assert [a.amount for a in then.state.sources["P2"].applications] == [10, 30]
    assert [(c.invoice.invoice_id, c.kind, c.change) for c in then.changes] == [
        ("I1", "changed", 0),
        ("I2", "changed", -30),
    ]
    assert deltas(then) == [("I1", 30, "2024-01-20"), ("I1", -30, "2024-01-20"), ("I2", -30, "2024-01-20")]


def test_lowering_an_open_invoice_only_records_the_difference() -> None:
    state = given(invoice("I1", 100), payment("P1", 20))
    then = when(state, adjusted("I1", 50, on="2024-01-20"))
    assert outstanding(then.state) == {"I1": 30}
    assert deltas(then) == [("I1", -50, "2024-01-20")]


def test_a_due_date_change_moves_the_outstanding_between_due_dates_at_the_adjustment_date() -> None:
    state = given(invoice("I1", 100, due="2024-01-31"), payment("P1", 40))
    then = when(state, adjusted("I1", 100, on="2024-02-05", due="2024-03-31"))
    assert [(m.due_date, m.delta, m.effective_date) for m in then.movements] == [
        (day("2024-01-31"), -60, day("2024-02-05")),
        (day("2024-03-31"), 60, day("2024-02-05")),
    ]
    assert [(c.kind, c.change, c.invoice.due_date) for c in then.changes] == [
        ("changed", 0, day("2024-03-31"))
    ]


def test_the_same_adjustment_twice_changes_nothing_the_second_time() -> None:
    state = given(invoice("I1", 100), payment("P1", 100), adjusted("I1", 60, due="2024-04-01"))
    assert_no_op(state, when(state, adjusted("I1", 60, due="2024-04-01")))


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (adjusted("I-cancelled", 10), "invoice 'I-cancelled': it was cancelled"),
        (adjusted("I1", 10, currency="USD"), "invoice 'I1' in EUR"),
        (adjusted("I1", 10), "'I1' to 10: 20 of it is written off"),
        (adjusted("I1", 100, due="2023-12-01"), "due date of invoice 'I1' before its issue date"),
    ],
)
def test_an_adjustment_that_cannot_be_done_is_rejected(event: object, reason: str) -> None:
    state = given(
        invoice("I1", 100), invoice("I-cancelled", 100), cancelled("I-cancelled"), written_off("W1", "I1", 20)
    )
    then = when(state, event)  # type: ignore[arg-type]
    assert then.state == state and not then.movements and not then.changes
    assert then.rejection is not None and reason in then.rejection


# --- cancellations -------------------------------------------------------------------------------


def test_a_cancelled_invoice_closes_and_its_cash_pays_other_invoices() -> None:
    state = given(
        invoice("I1", 100, due="2024-02-01"),
        payment("P1", 70),
        invoice("I2", 50, due="2024-03-01"),
    )
    then = when(state, cancelled("I1", on="2024-01-20"))
    assert outstanding(then.state) == {"I1": 0, "I2": 0}
    assert unapplied(then.state) == {"P1": 20}
    assert kinds(then) == {"I1": "cancelled", "I2": "settled"}
    assert deltas(then) == [("I1", 70, "2024-01-20"), ("I1", -100, "2024-01-20"), ("I2", -50, "2024-01-20")]
    assert then.state.invoices["I1"].cancelled_on == day("2024-01-20")
    assert then.state.invoices["I1"].status == "cancelled"


def test_a_cancelled_invoice_is_not_paid_again() -> None:
    state = given(invoice("I1", 100), cancelled("I1"))
    then = when(state, payment("P1", 100, to={"I1": 100}))
    assert unapplied(then.state) == {"P1": 100} and not then.changes


def test_cancelling_a_cancelled_invoice_is_rejected() -> None:
    state = given(invoice("I1", 100), cancelled("I1"))
    then = when(state, cancelled("I1"))
    assert then.state == state and then.rejection is not None and "it was cancelled" in then.rejection


# --- write-offs ----------------------------------------------------------------------------------


def test_a_partial_write_off_leaves_the_rest_open() -> None:
    state = given(invoice("I1", 100), payment("P1", 30))
    then = when(state, written_off("W1", "I1", 50, on="2024-03-01"))
    assert outstanding(then.state) == {"I1": 20}
    assert then.state.write_offs == {"W1": WriteOff("W1", "I1", 50, day("2024-03-01"))}
    assert [(c.kind, c.change, c.invoice.status) for c in then.changes] == [("written_off", -50, "open")]
    assert deltas(then) == [("I1", -50, "2024-03-01")]


def test_a_write_off_without_an_amount_closes_the_invoice() -> None:
    state = given(invoice("I1", 100), payment("P1", 30))
    then = when(state, written_off("W1", "I1", on="2024-03-01"))
    assert then.state.invoices["I1"].written_off == 70
    assert [(c.kind, c.change, c.invoice.status) for c in then.changes] == [
        ("written_off", -70, "written_off")
    ]
    assert then.state.invoices["I1"].settled_on == day("2024-03-01")


def test_a_write_off_id_seen_before_is_a_no_op() -> None:
    state = given(invoice("I1", 100), written_off("W1", "I1", 10))
    assert_no_op(state, when(state, written_off("W1", "I1", 10)))


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (written_off("W1", "I1", 81), "write-off 'W1' of 81 does not fit the outstanding 80"),
        (written_off("W1", "I1", 10, currency="USD"), "invoice 'I1' in EUR with an amount in USD"),
        (written_off("W1", "I-cancelled"), "it was cancelled"),
        (written_off("W1", "I-paid"), "write-off 'W1' of 0 does not fit"),
    ],
)
def test_a_write_off_that_cannot_be_done_is_rejected(event: object, reason: str) -> None:
    state = given(
        invoice("I1", 100),
        invoice("I-cancelled", 100),
        cancelled("I-cancelled"),
        payment("P1", 20, to={"I1": 20}),
        invoice("I-paid", 10, due="2023-01-31", issued="2023-01-01"),
        payment("P2", 10, to={"I-paid": 10}),
    )
    then = when(state, event)  # type: ignore[arg-type]
    assert then.state == state and then.rejection is not None and reason in then.rejection


def test_paying_the_rest_of_a_partly_written_off_invoice_settles_it() -> None:
    state = given(invoice("I1", 100), written_off("W1", "I1", 30))
    then = when(state, payment("P1", 70, on="2024-03-05"))
    assert [(c.kind, c.invoice.status) for c in then.changes] == [("settled", "written_off")]


# --- settled_on and the balance facts ------------------------------------------------------------


def test_settled_on_is_the_date_the_outstanding_reached_zero_and_is_cleared_on_reopening() -> None:
    state = given(invoice("I1", 100), payment("P1", 60, on="2024-01-10"), payment("P2", 40, on="2024-01-20"))
    assert state.invoices["I1"].settled_on == day("2024-01-20")
    assert when(state, reversed_("P2")).state.invoices["I1"].settled_on is None


def test_an_invoice_nothing_happened_to_gets_no_balance_change() -> None:
    state = given(invoice("I1", 100, due="2024-02-01"), invoice("I2", 100, due="2024-03-01"))
    assert kinds(when(state, payment("P1", 50))) == {"I1": "changed"}


def test_an_event_gives_at_most_one_balance_change_per_invoice() -> None:
    state = given(invoice("I1", 100), payment("P1", 100))
    then = when(state, adjusted("I1", 80, due="2024-05-01"))
    assert len(then.movements) == 2 and len(then.changes) == 1


def test_a_debtor_profile_replaces_the_previous_one_without_movements() -> None:
    state = given(profile("Old name"))
    then = when(state, profile("New name", email="ap@example.com"))
    assert then.state.profile == profile("New name", email="ap@example.com")
    assert not then.movements and not then.changes


# --- events out of business-date order -----------------------------------------------------------


def test_a_payment_valued_before_a_later_reversal_applies_when_the_invoice_has_room_again() -> None:
    state = given(invoice("I1", 100), payment("P1", 100, on="2024-01-05"), reversed_("P1", on="2024-01-20"))
    then = when(state, payment("P2", 100, on="2024-01-10"))
    assert deltas(then) == [("I1", -100, "2024-01-20")]
    assert then.state.invoices["I1"].settled_on == day("2024-01-20")


def test_a_late_payment_with_an_early_value_date_keeps_its_value_date() -> None:
    state = given(invoice("I1", 100), payment("P1", 60, on="2024-01-20"))
    then = when(state, payment("P2", 40, on="2024-01-10"))
    assert deltas(then) == [("I1", -40, "2024-01-10")]
    assert then.state.invoices["I1"].settled_on == day("2024-01-20")


def test_timelines_add_up_to_the_outstanding() -> None:
    state = given(invoice("I1", 100), payment("P1", 60, on="2024-01-20"), payment("P2", 40, on="2024-01-10"))
    assert state.timelines["I1"] == (
        (dt.date(2024, 1, 1), 100),
        (dt.date(2024, 1, 10), -40),
        (dt.date(2024, 1, 20), -60),
    )


# --- events that arrive before the payment or invoice they name ---------------------------------


def test_a_reversal_before_its_payment_waits_and_the_invoice_is_open_once_both_arrived() -> None:
    state = given(invoice("I1", 100))
    parked = posted(state, "rev-P1", reversed_("P1", on="2024-01-25"))
    assert parked.parked and parked.rejection is None and not parked.movements and not parked.changes
    assert parked.state.parked == (Parked("rev-P1", reversed_("P1", on="2024-01-25")),)
    then = posted(parked.state, "pay-P1", payment("P1", 100, on="2024-01-15"))
    assert then.rejection is None and not then.parked
    assert then.resolved == (("rev-P1", None),)
    assert outstanding(then.state) == {"I1": 100} and unapplied(then.state) == {"P1": 0}
    assert then.state.sources["P1"].reversed_on == day("2024-01-25")
    assert then.state.parked == ()
    assert deltas(then) == [("I1", -100, "2024-01-15"), ("I1", 100, "2024-01-25")]
    assert not then.changes, "open before, open after: no balance change to publish"


def test_a_parked_event_is_applied_exactly_as_if_it_had_come_right_after_what_it_names() -> None:
    early = given(invoice("I1", 100), reversed_("P1"), payment("P1", 100, on="2024-01-15"))
    in_order = given(invoice("I1", 100), payment("P1", 100, on="2024-01-15"), reversed_("P1"))
    assert early == in_order


def test_a_re_allocation_before_its_payment_decides_how_the_payment_is_applied() -> None:
    state = given(invoice("I1", 100, due="2024-02-01"), invoice("I2", 100, due="2024-03-01"))
    parked = posted(state, "alloc-P1", allocated("P1", {"I2": 100}, on="2024-01-20"))
    assert parked.parked
    then = posted(parked.state, "pay-P1", payment("P1", 100, on="2024-01-15"))
    assert outstanding(then.state) == {"I1": 100, "I2": 0}
    assert kinds(then) == {"I2": "settled"}, "I1 was paid and re-opened within the one transition"
    assert then.resolved == (("alloc-P1", None),)


def test_a_write_off_before_its_invoice_closes_the_invoice_when_it_arrives() -> None:
    parked = posted(given(), "wo-W1", written_off("W1", "I1", on="2024-03-01"))
    assert parked.parked and outstanding(parked.state) == {}
    then = posted(parked.state, "inv-I1", invoice("I1", 100, issued="2024-01-01"))
    assert then.state.invoices["I1"].status == "written_off"
    assert then.state.write_offs == {"W1": WriteOff("W1", "I1", 100, day("2024-03-01"))}
    assert [(c.kind, c.change, c.invoice.status) for c in then.changes] == [("opened", 0, "written_off")]
    assert deltas(then) == [("I1", 100, "2024-01-01"), ("I1", -100, "2024-03-01")]
    assert then.resolved == (("wo-W1", None),)


def test_a_parked_write_off_larger_than_the_invoice_is_rejected_when_the_invoice_arrives() -> None:
    parked = posted(given(), "wo-W1", written_off("W1", "I1", 150))
    then = posted(parked.state, "inv-I1", invoice("I1", 100))
    assert then.rejection is None, "the invoice itself is applied"
    assert outstanding(then.state) == {"I1": 100} and then.state.write_offs == {}
    assert then.resolved == (
        ("wo-W1", "write-off 'W1' of 150 does not fit the outstanding 100 of invoice 'I1'"),
    )
    assert then.state.parked == ()


def test_parked_events_are_applied_in_arrival_order() -> None:
    state = given()
    early: list[tuple[str, JournalEntry]] = [
        ("adj", adjusted("I1", 80, on="2024-01-20")),
        ("wo-1", written_off("W1", "I1", 50)),
        ("wo-2", written_off("W2", "I1", 50)),
        ("other", written_off("W3", "I2", 10)),
    ]
    for event_id, event in early:
        state = posted(state, event_id, event).state
    then = posted(state, "inv-I1", invoice("I1", 100))
    assert then.resolved == (
        ("adj", None),
        ("wo-1", None),
        ("wo-2", "write-off 'W2' of 50 does not fit the outstanding 30 of invoice 'I1'"),
    )
    assert outstanding(then.state) == {"I1": 30}
    assert [p.event_id for p in then.state.parked] == ["other"], "still waiting for I2"


def test_a_cancellation_before_its_invoice_cancels_it_on_arrival_and_frees_its_earmarked_cash() -> None:
    state = given(invoice("I2", 100), payment("P1", 60, to={"I1": 60}), cancelled("I1"))
    assert outstanding(state) == {"I2": 100} and state.sources["P1"].directed == {"I1": 60}
    then = when(state, invoice("I1", 60))
    assert then.state.invoices["I1"].status == "cancelled"
    assert outstanding(then.state) == {"I1": 0, "I2": 40}
    assert kinds(then) == {"I1": "opened", "I2": "changed"}


def test_a_reversal_waiting_for_an_id_that_turns_out_a_credit_note_is_rejected_then() -> None:
    parked = posted(given(invoice("I1", 100)), "rev-C1", reversed_("C1"))
    then = posted(parked.state, "cn-C1", credit_note("C1", 10))
    assert then.resolved == (("rev-C1", "cannot reverse unknown payment 'C1'"),)
    assert outstanding(then.state) == {"I1": 90}


def test_the_same_parked_event_delivered_again_waits_once() -> None:
    once = posted(given(), "wo-W1", written_off("W1", "I1"))
    again = posted(once.state, "wo-W1", written_off("W1", "I1"))
    assert again == Transition(once.state, parked=True)


def test_an_event_parked_without_an_id_is_applied_but_not_reported() -> None:
    state = given(written_off("W1", "I1"))
    then = when(state, invoice("I1", 100))
    assert then.state.invoices["I1"].status == "written_off" and then.resolved == ()


def test_parked_events_survive_the_stored_encoding_and_old_states_decode_without_them() -> None:
    state = given(invoice("I1", 100))
    early: list[JournalEntry] = [
        payment("P1", 300, to={"I9": 300}),
        written_off("W1", "I9", 50),
        written_off("W2", "I9"),
        reversed_("P7"),
        allocated("P7", {"I1": 10}),
        adjusted("I8", 10, due="2024-05-01"),
        cancelled("I6"),
    ]
    for n, event in enumerate(early):
        state = posted(state, f"e{n}", event).state
    assert len(state.parked) == 6 and state.earmarked_by == {"P1": "e0"}
    raw = state_codec.encode_ledger(state)
    assert raw == TypeAdapter(DebtorLedger).dump_json(state)
    assert state_codec.decode_ledger(raw) == state
    old = orjson.loads(raw)
    del old["parked"], old["earmarked_by"]
    assert state_codec.decode_ledger(orjson.dumps(old)) == replace(state, parked=(), earmarked_by={})
