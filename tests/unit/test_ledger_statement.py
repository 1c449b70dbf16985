"""A debtor's statement as of a date: what stood on that date, and payments kept apart from credit
notes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given as for_all
from hypothesis import settings

from contracts.journal import InvoiceAdjusted, InvoiceCancelled, WriteOffPosted
from services.ledger.aging import age_by_currency
from services.ledger.domain import LedgerEvent, evolve, initial_state
from services.ledger.statement import MovementLine, Statement, statement
from services.sample import ibm

from . import adjusted, allocated, credit_note, day, given, invoice, payment, reversed_
from .test_ledger_properties import dates, histories, run

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"


def recorded(*events: LedgerEvent) -> list[MovementLine]:
    """The balance movements the projection records for these events."""
    state, lines = initial_state("acme", "debtor-1"), []
    for event in events:
        transition = evolve(state, event)
        assert transition.rejection is None, transition.rejection
        state = transition.state
        lines += [
            MovementLine(m.invoice_id, m.currency, m.due_date, m.effective_date, m.delta)
            for m in transition.movements
        ]
    return lines


def as_of(events: Sequence[LedgerEvent], on: str) -> Statement:
    """The statement as of a date, from the ledger and the movements recorded for the events."""
    return statement(given(*events), day(on), movements=recorded(*events))


def open_items(report: Statement) -> dict[str, int]:
    return {i.invoice_id: i.outstanding for i in report.open_items}


def balances(report: Statement) -> dict[str, tuple[int, int]]:
    """Per currency: (balance, unapplied)."""
    return {c.currency: (c.balance, c.unapplied) for c in report.currencies}


def paid(report: Statement) -> list[str]:
    return [p.invoice_id for p in report.payment_history]


def credited(report: Statement) -> list[str]:
    return [c.invoice_id for c in report.settled_by_credit]


# --- as of a date --------------------------------------------------------------------------------


def test_cash_valued_after_the_date_has_not_come_yet_on_it() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 10_000, "2024-01-01", "2024-01-31"),
        payment("P1", 10_000, "2024-02-20", to={"A": 10_000}),
    ]

    before = as_of(events, "2024-02-15")
    assert open_items(before) == {"A": 10_000}
    assert before.open_items[0].days_past_due == 15
    assert balances(before) == {"EUR": (10_000, 0)}
    assert before.currencies[0].aging["1-30"] == 10_000
    assert paid(before) == []

    after = as_of(events, "2024-02-20")
    assert open_items(after) == {}
    assert paid(after) == ["A"]
    assert after.payment_history[0].days_to_pay == 50


def test_an_invoice_issued_after_the_date_is_not_on_it() -> None:
    events: list[LedgerEvent] = [invoice("A", 10_000, "2024-01-01"), invoice("B", 5_000, "2024-03-01")]
    report = as_of(events, "2024-02-01")
    assert open_items(report) == {"A": 10_000}
    assert balances(report) == {"EUR": (10_000, 0)}


def test_cash_received_by_the_date_and_not_yet_applied_is_unapplied_on_it() -> None:
    events: list[LedgerEvent] = [payment("P1", 4_000, "2024-01-05"), invoice("A", 10_000, "2024-02-01")]
    assert balances(as_of(events, "2024-01-20")) == {"EUR": (0, 4_000)}
    assert balances(as_of(events, "2024-02-01")) == {"EUR": (6_000, 0)}


def test_a_payment_reversed_after_the_date_paid_the_invoice_on_it() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 10_000, "2024-01-01", "2024-01-31"),
        payment("P1", 10_000, "2024-01-20", to={"A": 10_000}),
        reversed_("P1", "2024-03-01"),
    ]
    on = as_of(events, "2024-02-15")
    assert open_items(on) == {}
    assert balances(on) == {"EUR": (0, 0)}
    assert paid(on) == ["A"] and on.payment_history[0].paid_on == day("2024-01-20")

    bounced = as_of(events, "2024-03-01")
    assert open_items(bounced) == {"A": 10_000}
    assert balances(bounced) == {"EUR": (10_000, 0)}
    assert paid(bounced) == []


def test_cash_re_allocated_after_the_date_paid_what_it_paid_on_it() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 6_000, "2024-01-01"),
        invoice("B", 6_000, "2024-01-02"),
        payment("P1", 6_000, "2024-01-20", to={"A": 6_000}),
        allocated("P1", {"B": 6_000}, "2024-02-10"),
    ]
    on = as_of(events, "2024-02-01")
    assert open_items(on) == {"B": 6_000}
    assert paid(on) == ["A"]
    assert balances(on) == {"EUR": (6_000, 0)}

    later = as_of(events, "2024-02-10")
    assert open_items(later) == {"A": 6_000}
    assert paid(later) == ["B"]


def test_a_due_date_moved_after_the_date_ages_under_the_old_one() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 10_000, "2024-01-01", "2024-01-31"),
        adjusted("A", 10_000, "2024-03-01", due="2024-04-30"),
    ]
    on = as_of(events, "2024-02-15")
    assert on.open_items[0].due_date == day("2024-01-31")
    assert on.currencies[0].aging["1-30"] == 10_000

    later = as_of(events, "2024-03-15")
    assert later.open_items[0].due_date == day("2024-04-30")
    assert later.currencies[0].aging["current"] == 10_000


def test_the_aging_is_the_debtors_share_of_the_portfolio_aging() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 10_000, "2024-01-01", "2024-01-31"),
        invoice("B", 3_000, "2024-02-01", "2024-03-02", currency="USD"),
        payment("P1", 4_000, "2024-02-05"),
        adjusted("A", 10_000, "2024-02-20", due="2024-02-28"),
    ]
    movements = recorded(*events)
    for on in ("2024-01-15", "2024-02-10", "2024-03-01", "2024-06-30"):
        portfolio = age_by_currency(
            ((m.currency, m.due_date, m.delta) for m in movements if m.effective_date <= day(on)), day(on)
        )
        report = as_of(events, on)
        assert {c.currency: dict(c.aging) for c in report.currencies} == portfolio, on


def test_the_moment_of_a_reported_statement_is_on_it() -> None:
    moment = dt.datetime(2024, 2, 1, 12, tzinfo=dt.UTC)
    report = statement(given(invoice("A", 100)), day("2024-02-01"), known_at=moment)
    assert report.known_at == moment
    assert report.to_json()["known_at"] == "2024-02-01T12:00:00+00:00"


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the shared sample data is not beside the repository")
def test_the_sample_customer_owed_on_30_june_2013_what_it_had_not_yet_paid() -> None:
    rows = [r for r in ibm.load(SAMPLE) if r.customer_id == "0688-XNJRO"]
    events: list[LedgerEvent] = [
        e.data for day_events in ibm.events_by_day(rows, "acme").values() for e in day_events
    ]
    report = statement(given(*events), day("2013-06-30"), movements=recorded(*events))

    still_owed = {
        r.invoice_number: r.amount_minor for r in rows if r.invoice_date <= day("2013-06-30") < r.settled_date
    }
    assert open_items(report) == still_owed
    assert balances(report) == {"USD": (9_415, 0)}
    assert {p.invoice_id for p in report.payment_history} == {
        r.invoice_number for r in rows if r.settled_date <= day("2013-06-30")
    }
    assert all(p.settled_on <= day("2013-06-30") for p in report.payment_history)


# --- payments and credit notes ----------------------------------------------------------------------


def test_an_invoice_settled_by_a_credit_note_is_not_paid() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 5_000, "2024-01-01", "2024-01-31"),
        invoice("B", 7_000, "2024-01-01", "2024-01-31"),
        credit_note("C1", 5_000, "2024-01-10", for_invoice="A"),
        payment("P1", 7_000, "2024-02-15", to={"B": 7_000}),
    ]
    report = as_of(events, "2024-03-01")
    assert paid(report) == ["B"]
    assert credited(report) == ["A"]
    assert report.settled_by_credit[0].credit_notes == ("C1",)
    assert report.settled_by_credit[0].settled_on == day("2024-01-10")


def test_an_invoice_paid_and_credited_is_paid_when_the_cash_came() -> None:
    events: list[LedgerEvent] = [
        invoice("A", 10_000, "2024-01-01", "2024-01-31"),
        payment("P1", 7_000, "2024-01-21", to={"A": 7_000}),
        credit_note("C1", 3_000, "2024-03-01", for_invoice="A"),
    ]
    report = as_of(events, "2024-03-31")
    assert credited(report) == []
    (entry,) = report.payment_history
    assert (entry.paid, entry.credited) == (7_000, 3_000)
    assert (entry.paid_on, entry.settled_on) == (day("2024-01-21"), day("2024-03-01"))
    assert (entry.days_to_pay, entry.days_late) == (20, 0)

    before_the_credit = as_of(events, "2024-02-15")
    assert open_items(before_the_credit) == {"A": 3_000}
    assert paid(before_the_credit) == []


def test_an_unapplied_credit_note_is_unapplied_but_not_cash_paid() -> None:
    events: list[LedgerEvent] = [invoice("A", 1_000, "2024-01-01"), credit_note("C1", 1_500, "2024-01-05")]
    report = as_of(events, "2024-01-31")
    assert balances(report) == {"EUR": (0, 500)}
    assert paid(report) == [] and credited(report) == ["A"]


# --- properties -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@for_all(histories(), dates)
def test_a_statement_as_of_any_date_adds_up(history: list[LedgerEvent], on: dt.date) -> None:
    """From the recorded movements or the ledger's timelines: the same balances, the aging adds up
    to them, and an invoice is at most one of open, paid, settled by credit."""
    result = run(history)
    movements = [
        MovementLine(m.invoice_id, m.currency, m.due_date, m.effective_date, m.delta)
        for ms in result.movements.values()
        for m in ms
    ]
    report = statement(result.state, on, movements=movements)
    from_timelines = statement(result.state, on)
    assert open_items(report) == open_items(from_timelines)
    assert balances(report) == balances(from_timelines)
    for summary in report.currencies:
        assert sum(summary.aging.values()) == summary.balance
        assert summary.balance == sum(
            m.delta for m in movements if m.currency == summary.currency and m.effective_date <= on
        )
    listed = [*open_items(report), *paid(report), *credited(report)]
    assert len(listed) == len(set(listed))
    assert all(p.settled_on <= on and p.paid_on <= on and p.paid > 0 for p in report.payment_history)
    assert all(c.settled_on <= on for c in report.settled_by_credit)


@settings(max_examples=300, deadline=None)
@for_all(histories(), dates)
def test_cash_received_by_a_date_is_applied_or_unapplied_on_it(
    history: list[LedgerEvent], on: dt.date
) -> None:
    """Without adjustments, cancellations and write-offs, what the invoices issued by a date lack of
    their amount on it is exactly the cash received by then less the statement's unapplied cash,
    however the cash was re-allocated or reversed later."""
    kept = [e for e in history if not isinstance(e, InvoiceAdjusted | InvoiceCancelled | WriteOffPosted)]
    state = run(kept).state
    report = statement(state, on)
    for summary in report.currencies:
        received = sum(
            s.amount
            for s in state.sources.values()
            if s.currency == summary.currency
            and s.value_date <= on
            and not (s.reversed_on is not None and s.reversed_on <= on)
        )
        owed = sum(
            i.amount for i in state.invoices.values() if i.currency == summary.currency and i.issue_date <= on
        )
        assert received - summary.unapplied == owed - summary.balance, summary.currency


@settings(max_examples=200, deadline=None)
@for_all(histories())
def test_as_of_a_date_after_every_event_the_statement_is_the_ledger_as_it_stands(
    history: list[LedgerEvent],
) -> None:
    state = run(history).state
    report = statement(state, dt.date(2025, 1, 1))
    assert open_items(report) == {i: v.outstanding for i, v in state.invoices.items() if v.status == "open"}
    for summary in report.currencies:
        assert summary.unapplied == sum(
            s.unapplied for s in state.sources.values() if s.currency == summary.currency
        )
    settled = {i for i, v in state.invoices.items() if v.status == "settled"}
    cash_paid = {a.invoice_id for s in state.sources.values() if s.kind == "payment" for a in s.applications}
    assert set(paid(report)) == settled & cash_paid
    assert set(credited(report)) == settled - cash_paid
