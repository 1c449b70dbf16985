"""The CSV open-item load read without I/O: every error names its line and column, a file is whole
or refused, invoices are the debtor's own, and a debtor is registered once per file."""

from __future__ import annotations

import datetime as dt

import pytest

from contracts.journal import DebtorProfile, InvoiceIssued, PaymentReceived
from services.ledger.open_items_csv import (
    LineError,
    OpenItemFile,
    OpenItemsError,
    conflict_errors,
    load_report,
    open_items_from_csv,
)

HEADER = "debtor_id,invoice_id,issue_date,due_date,amount,currency,amount_paid,debtor_name\n"
NOW = dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.UTC)
AS_OF = dt.date(2026, 1, 10)


def load(text: str, as_of: dt.date | None = AS_OF) -> OpenItemFile:
    return open_items_from_csv(text, "t1", as_of, NOW)


def errors_of(text: str, as_of: dt.date | None = AS_OF) -> list[LineError]:
    with pytest.raises(OpenItemsError) as raised:
        load(text, as_of)
    return raised.value.lines


def where(errors: list[LineError]) -> list[tuple[int, str | None]]:
    return [(e.line, e.column) for e in errors]


def test_every_error_names_its_line_and_column() -> None:
    errors = errors_of(
        HEADER
        + "D1,I1,2025-11-01,2025-12-01,100,EUR,,\n"
        + "D1,I2,2025-11-01,2025-13-01,100,EUR,,\n"  # line 3: no month 13
        + "D1,I3,2025-11-01,2025-12-01,12x,EUR,,\n"  # line 4: not an amount
        + "D1,I4,2025-11-01,2025-12-01,1.234,EUR,,\n"  # line 5: too many decimals
        + "D1,I5,2025-11-01,2025-12-01,10,EUX,,\n"  # line 6: no such currency
        + "D1,I 6,2025-11-01,2025-10-01,-5,EUR,,\n"  # line 7: three things wrong
        + "D1,I7,2025-11-01,2025-12-01,10,EUR,20,\n"  # line 8: paid more than the amount
    )
    assert where(errors) == [
        (3, "due_date"),
        (4, "amount"),
        (5, "amount"),
        (6, "currency"),
        (7, "invoice_id"),
        (7, "amount"),
        (7, "due_date"),
        (8, "amount_paid"),
    ]
    assert errors[0].field == "line 3, column due_date"
    assert "month must be in 1..12" in errors[0].message
    assert str(OpenItemsError(errors)).startswith("line 3, column due_date: '2025-13-01' is not a date")
    assert "'12x' is not a decimal amount" in errors[1].message
    assert "EUX" in errors[3].message
    assert "letter or digit" in errors[4].message  # the pattern in words, not as a regular expression
    assert errors[0].as_json() == {
        "line": 3,
        "column": "due_date",
        "field": "line 3, column due_date",
        "message": errors[0].message,
    }


def test_a_short_line_names_the_line_and_the_columns_it_lacks() -> None:
    errors = errors_of(HEADER + "D1,I1,2025-11-01,2025-12-01,100,EUR,,\nD1,I2,2025-11-01,2025-12-01\n")
    assert where(errors) == [(3, "amount"), (3, "currency"), (3, "amount_paid"), (3, "debtor_name")]
    assert all("line 3 has 4 fields, the header 8" in e.message for e in errors)


def test_a_long_line_is_refused_rather_than_read_shifted() -> None:
    errors = errors_of(HEADER + "D1,I1,2025-11-01,2025-12-01,1,200.50,EUR,,\n")
    assert where(errors) == [(2, None)]
    assert "9 fields" in errors[0].message and "quote" in errors[0].message


def test_line_numbers_are_a_text_editors_across_blank_lines_and_quoted_line_breaks() -> None:
    errors = errors_of(
        HEADER
        + "\n"
        + 'D1,I1,2025-11-01,2025-12-01,100,EUR,,"Acme\nGmbH"\n'
        + "D1,I2,2025-11-01,2025-12-01,x,EUR,,\n"
    )
    assert where(errors) == [(3, "debtor_name"), (5, "amount")]


def test_a_header_without_a_required_column_names_it() -> None:
    errors = errors_of("debtor_id,invoice_id,issue_date,amount,currency,Amount\n")
    assert where(errors) == [(1, "due_date"), (1, "amount")]
    assert "no column due_date" in errors[0].message and "2 times" in errors[1].message


def test_the_same_invoice_of_a_debtor_twice_in_a_file_names_both_lines() -> None:
    errors = errors_of(
        HEADER
        + "D1,I1,2025-11-01,2025-12-01,100,EUR,,\n"
        + "D2,I2,2025-11-01,2025-12-01,100,EUR,,\n"
        + "D1,I1,2025-11-05,2025-12-05,100,EUR,,\n"
    )
    assert where(errors) == [(4, "invoice_id")]
    assert "line 2" in errors[0].message and "line 4" in errors[0].message


def test_two_debtors_may_use_the_same_invoice_number() -> None:
    loaded = load(
        HEADER + "D1,INV-1,2025-11-01,2025-12-01,100,EUR,40,\n" + "D2,INV-1,2025-11-03,2025-12-03,250,EUR,,\n"
    )
    invoices = [i for i in loaded.items if i.kind == "invoice"]
    assert [(i.debtor_id, i.invoice_id, i.line) for i in invoices] == [("D1", "INV-1", 2), ("D2", "INV-1", 3)]
    assert [i.event.debtorid for i in invoices] == ["D1", "D2"]
    assert len({i.event.id for i in loaded.items}) == len(loaded.items) == 3, "no id is shared"
    assert all(isinstance(i.event.data, InvoiceIssued) for i in invoices)
    (paid,) = [i.event.data for i in loaded.items if i.kind == "payment"]
    assert isinstance(paid, PaymentReceived)
    assert paid.payment_id == "import:INV-1" and paid.allocations[0].invoice_id == "INV-1"
    assert paid.value_date == AS_OF


def test_event_ids_depend_on_debtor_and_invoice_and_nothing_else() -> None:
    first = load(HEADER + "D1,INV-1,2025-11-01,2025-12-01,100,EUR,40,\n")
    again = open_items_from_csv(
        HEADER + "D1,INV-1,2025-11-01,2025-12-01,100,EUR,40,\n", "t1", AS_OF, NOW + dt.timedelta(days=1)
    )
    ambiguous = load(HEADER + "D1:INV,1,2025-11-01,2025-12-01,100,EUR,40,\n")
    assert [e.id for e in first.events] == [e.id for e in again.events]
    assert not {e.id for e in first.events} & {e.id for e in ambiguous.events}
    long = "X" * 124
    longest = load(f"{HEADER}{long},{'Y' * 128},2025-11-01,2025-12-01,100,EUR,40,\n")
    assert all(len(e.id) <= 128 for e in longest.events)


def test_a_debtor_is_registered_once_per_file() -> None:
    loaded = load(
        HEADER
        + "D1,I1,2025-11-01,2025-12-01,100,EUR,,Acme GmbH\n"
        + "D1,I2,2025-11-02,2025-12-02,100,EUR,,Acme GmbH\n"
        + "D2,I3,2025-11-02,2025-12-02,100,EUR,,\n"
        + "D1,I4,2025-11-03,2025-12-03,100,EUR,,\n"
        + "D2,I5,2025-11-04,2025-12-04,100,EUR,,Beta AG\n"
    )
    registrations = [i for i in loaded.items if i.kind == "debtor"]
    assert [(r.debtor_id, r.line) for r in registrations] == [("D1", 2), ("D2", 6)]
    assert [r.event.type for r in registrations] == ["ar.debtor.registered.v1"] * 2
    names = [DebtorProfile(name="Acme GmbH"), DebtorProfile(name="Beta AG")]
    assert [r.event.data for r in registrations] == names
    report = load_report(loaded, {e.id: "accepted" for e in loaded.events})
    assert report["loaded"] == {"debtors_registered": 2, "invoices": 5, "payments": 0}
    assert report["already_present"] == {"debtors_registered": 0, "invoices": 0, "payments": 0}
    assert (report["lines"], report["events"], report["accepted"], report["duplicates"]) == (5, 7, 7, 0)


def test_two_names_for_one_debtor_name_both_lines() -> None:
    errors = errors_of(
        HEADER
        + "D1,I1,2025-11-01,2025-12-01,100,EUR,,Acme GmbH\n"
        + "D1,I2,2025-11-02,2025-12-02,100,EUR,,\n"
        + "D1,I3,2025-11-02,2025-12-02,100,EUR,,ACME\n"
    )
    assert where(errors) == [(4, "debtor_name")]
    assert "line 2" in errors[0].message and "line 4" in errors[0].message


def test_an_amount_paid_needs_the_date_of_the_load() -> None:
    errors = errors_of(HEADER + "D1,I1,2025-11-01,2025-12-01,100,EUR,40,\n", as_of=None)
    assert where(errors) == [(2, "amount_paid")] and "as_of" in errors[0].message


def test_checking_stops_after_enough_errors_and_says_so() -> None:
    text = HEADER + "".join(f"D1,I{n},2025-11-01,2025-12-01,x,EUR,,\n" for n in range(5))
    with pytest.raises(OpenItemsError) as raised:
        open_items_from_csv(text, "t1", AS_OF, NOW, max_errors=3)
    assert where(raised.value.lines)[-1] == (4, None)
    assert "checked up to this line" in raised.value.lines[-1].message


def test_conflicts_name_the_line_the_invoice_and_the_debtor() -> None:
    loaded = load(
        HEADER + "D1,I1,2025-11-01,2025-12-01,100,EUR,,Acme\n" + "D2,I1,2025-11-01,2025-12-01,100,EUR,30,\n"
    )
    ids = {i.kind + ":" + i.debtor_id: i.event.id for i in loaded.items}
    errors = conflict_errors(loaded, {ids["debtor:D1"], ids["payment:D2"], ids["invoice:D2"]})
    assert where(errors) == [(2, "debtor_name"), (3, "invoice_id"), (3, "amount_paid")]
    assert "debtor D1" in errors[0].message
    assert "invoice I1 of debtor D2" in errors[1].message and "invoice I1 of debtor D2" in errors[2].message
    assert all("nothing of this file was loaded" in e.message for e in errors)


def test_a_repeated_load_reports_what_was_there_already() -> None:
    loaded = load(
        HEADER + "D1,I1,2025-11-01,2025-12-01,100,EUR,30,Acme\n" + "D1,I2,2025-11-01,2025-12-01,5,EUR,,\n"
    )
    statuses = {e.id: "duplicate" for e in loaded.events}
    statuses[loaded.items[-1].event.id] = "accepted"
    report = load_report(loaded, statuses)
    assert report["loaded"] == {"debtors_registered": 0, "invoices": 1, "payments": 0}
    assert report["already_present"] == {"debtors_registered": 1, "invoices": 1, "payments": 1}
