"""What the debtor's record says about facts and decisions: one line each, in a collector's words,
with the business date, amount, case and, for a delivery, its channel and document."""

from __future__ import annotations

import datetime as dt

from contracts.collections import ContactResult
from services.dunning.domain import Decision, Entry, Pending, evolve, new_case, replace
from services.dunning.domain.case import Fact
from services.dunning.domain.record import case_of, decided_notes, fact_line
from tests.unit.dunning_world import Books, promise

D = dt.date


def test_an_invoice_and_a_payment_on_it() -> None:
    books = Books("EUR")
    issued = books.issue("A-1", 50_000, "2026-02-04", "2026-01-05")
    paid = books.pay("A-1", 20_000, "2026-02-10")
    issued_line = fact_line(issued, "e-1", None)
    paid_line = fact_line(paid, "e-2", None)
    assert issued_line is not None and paid_line is not None
    assert (issued_line.kind, issued_line.business_date, issued_line.amount_minor) == (
        "invoice",
        D(2026, 1, 5),
        50_000,
    )
    assert issued_line.sentence == "invoice A-1 issued on 2026-01-05 for 500.00 EUR, due 2026-02-04"
    assert (paid_line.kind, paid_line.business_date, paid_line.amount_minor) == (
        "payment",
        D(2026, 2, 10),
        20_000,
    )
    # 500.00 - 200.00 = 300.00 left on the invoice.
    assert paid_line.sentence == "payment cause-2: 200.00 EUR off invoice A-1, 300.00 EUR outstanding (open)"
    assert (paid_line.currency, paid_line.source_id) == ("EUR", "e-2")


def test_a_fact_is_placed_on_the_case_of_its_currency() -> None:
    books = Books("USD")
    issued = books.issue("U-1", 30_000, "2026-02-06")
    case, _ = evolve(new_case("T", "D1", "USD"), issued)
    pledge = promise(30_000, "2026-02-20", "2026-02-03", currency="USD")
    assert case_of(pledge, "D1", {case.case_id: case}) is case
    line = fact_line(pledge, "e-3", case)
    assert line is not None
    assert (line.kind, line.case_id, line.amount_minor, line.business_date) == (
        "promise",
        "D1:USD",
        30_000,
        D(2026, 2, 3),
    )


def test_a_delivery_names_its_step_channel_and_document() -> None:
    case = replace(
        new_case("T", "D1", "EUR"),
        as_of=D(2026, 2, 1),
        pending={"C-1": Pending("C-1", "send_reminder", "courtesy_reminder", D(2026, 2, 1), ("A-1",))},
    )
    sent = ContactResult(
        command_id="C-1",
        case_id="D1:EUR",
        outcome="delivered",
        channel="letter",
        reference="letters/T/C-1.pdf",
    )
    line = fact_line(Fact("ar.contact.delivered.v1", sent), "contact:C-1", case)
    assert line is not None
    assert (line.kind, line.channel, line.document) == ("delivery.delivered", "letter", "letters/T/C-1.pdf")
    assert line.sentence == "courtesy_reminder (C-1) delivered by letter as letters/T/C-1.pdf"
    assert line.business_date == D(2026, 2, 1)


def test_a_delivery_held_for_the_send_window_says_until_when() -> None:
    case = replace(new_case("T", "D1", "EUR"), as_of=D(2026, 2, 1))
    opens = dt.datetime(2026, 2, 1, 8, 0, tzinfo=dt.UTC)
    held = ContactResult(command_id="C-2", case_id="D1:EUR", outcome="deferred", not_before=opens)
    line = fact_line(Fact("ar.contact.deferred.v1", held), "contact:C-2:deferred", case)
    assert line is not None and line.kind == "delivery.deferred"
    assert line.sentence == "command C-2 deferred: held for the send window until 2026-02-01T08:00:00+00:00"


def test_a_deferral_noted_again_on_the_same_day_is_one_line() -> None:
    before = new_case("T", "D1", "USD")
    cap = Entry(D(2026, 2, 3), "deferred", "courtesy_reminder: contact cap reached until 2026-02-08")
    first = Decision(replace(before, timeline=(cap,)), notes=(cap,))
    again = Decision(replace(before, timeline=(cap, cap)), notes=(cap,))
    [line] = decided_notes(first, D(2026, 2, 3), before)
    assert (line.kind, line.case_id, line.sentence) == ("step.deferred", "D1:USD", cap.detail)
    assert decided_notes(again, D(2026, 2, 3), first.case) == []
    passed = Entry(D(2026, 2, 8), "passed", "friendly_reminder: no consented channel")
    replanned = Entry(D(2026, 2, 8), "replanned", "planned again under version 2")
    lines = decided_notes(Decision(before, notes=(replanned, passed)), D(2026, 2, 8), before)
    assert [(x.kind, x.sentence) for x in lines] == [("step.passed", passed.detail)]
