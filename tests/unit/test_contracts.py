"""The contracts as an ERP integrator meets them: what is accepted, what is refused and why."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from contracts.collections import ContactResult
from contracts.generate import SCHEMAS, drift
from contracts.money import format_major, parse_major
from contracts.policy import POLICY_PUBLISHED, PolicyPublished
from contracts.registry import (
    ERP_TYPES,
    BatchError,
    ContractError,
    decode_event,
    encode_event,
    parse_batch,
    parse_event,
)
from services.dunning.policies import default_policy


def invoice(**data: Any) -> dict[str, Any]:
    return {
        "id": "evt-1",
        "source": "erp",
        "type": "ar.invoice.issued.v1",
        "time": "2026-01-05T09:00:00Z",
        "tenantid": "acme",
        "debtorid": "D-1",
        "data": {
            "invoice_id": "INV-1",
            "issue_date": "2026-01-05",
            "due_date": "2026-02-04",
            "amount": {"amount_minor": 12_345, "currency": "EUR"},
            **data,
        },
    }


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ContractError) as caught:
        parse_event(raw)
    return {e.field: e.message for e in caught.value.errors}


def test_checked_in_schemas_match_the_models() -> None:
    assert drift() == [], "run: python -m contracts.generate"


def test_a_valid_envelope_round_trips_through_bytes() -> None:
    event = parse_event(invoice())
    assert decode_event(encode_event(event)) == event
    assert event.key == "acme:D-1"


def test_money_must_be_integer_minor_units() -> None:
    assert "data.amount.amount_minor" in errors_of(
        invoice(amount={"amount_minor": 123.45, "currency": "EUR"})
    )
    assert "data.amount.amount_minor" in errors_of(
        invoice(amount={"amount_minor": "12345", "currency": "EUR"})
    )


def test_currency_must_be_iso_4217() -> None:
    assert "data.amount.currency" in errors_of(invoice(amount={"amount_minor": 1, "currency": "EURO"}))
    assert "data.amount.currency" in errors_of(invoice(amount={"amount_minor": 1, "currency": "ABC"}))


def test_due_date_before_issue_date_is_refused() -> None:
    assert "due_date is before issue_date" in " ".join(errors_of(invoice(due_date="2025-12-31")).values())


def test_unknown_type_and_unknown_fields_are_named() -> None:
    assert "type" in errors_of({**invoice(), "type": "ar.invoice.printed.v1"})
    assert "data.colour" in errors_of(invoice(colour="red"))


def test_an_erp_cannot_post_derived_records() -> None:
    command = {
        **invoice(),
        "type": "collections.command.send_reminder.v1",
    }
    with pytest.raises(ContractError) as caught:
        parse_event(command, ERP_TYPES)
    assert [e.field for e in caught.value.errors] == ["type"]
    assert "ar.invoice.issued.v1" in ERP_TYPES
    assert "ar.receivable.settled.v1" not in ERP_TYPES


def test_journal_events_need_a_debtor() -> None:
    raw = invoice()
    del raw["debtorid"]
    assert "debtorid" in errors_of(raw)


def test_allocations_cannot_exceed_the_payment() -> None:
    raw = {
        **invoice(),
        "type": "ar.payment.received.v1",
        "data": {
            "payment_id": "P-1",
            "value_date": "2026-01-10",
            "amount": {"amount_minor": 100, "currency": "EUR"},
            "allocations": [{"invoice_id": "INV-1", "amount": {"amount_minor": 101, "currency": "EUR"}}],
        },
    }
    assert "allocations exceed the payment amount" in " ".join(errors_of(raw).values())


def payment(**data: Any) -> dict[str, Any]:
    return {
        **invoice(),
        "id": "evt-2",
        "type": "ar.payment.received.v1",
        "data": {
            "payment_id": "P-1",
            "value_date": "2026-01-10",
            "amount": {"amount_minor": 100, "currency": "EUR"},
            **data,
        },
    }


def test_a_batch_parses_to_the_envelopes_each_event_parses_to() -> None:
    registered = {
        **invoice(),
        "id": "evt-3",
        "type": "ar.debtor.registered.v1",
        "data": {"name": "Acme Ltd", "country": "DE", "email": "ap@acme.example"},
    }
    events = [invoice(), payment(allocations=[]), registered]
    assert parse_batch(orjson.dumps(events), ERP_TYPES) == [parse_event(e, ERP_TYPES) for e in events]


def test_a_batch_names_every_wrong_event_and_its_field() -> None:
    no_debtor = invoice()
    del no_debtor["debtorid"]
    events = [
        invoice(),
        invoice(amount={"amount_minor": 10.5, "currency": "EUR"}),
        {**invoice(), "type": "ar.invoice.printed.v1"},
        {**invoice(), "type": "collections.command.send_reminder.v1"},
        "an invoice",
        payment(allocations=[{"invoice_id": "INV-1", "amount": {"amount_minor": 101, "currency": "EUR"}}]),
        no_debtor,
    ]
    with pytest.raises(BatchError) as caught:
        parse_batch(orjson.dumps(events), ERP_TYPES)
    found = [(i, e.field, e.message) for i, e in caught.value.errors]
    assert [(i, field) for i, field, _ in found] == [
        (1, "data.amount.amount_minor"),
        (2, "type"),
        (3, "type"),
        (4, "(event)"),
        (5, "data"),
        (6, "debtorid"),
    ]
    assert found[1][2] == "unknown event type 'ar.invoice.printed.v1'"
    assert found[2][2] == "collections.command.send_reminder.v1 is not accepted here"
    assert "allocations exceed the payment amount" in found[4][2]
    # The same messages as for the event alone.
    assert found[0][2] == errors_of(events[1])["data.amount.amount_minor"]  # type: ignore[arg-type]


@pytest.mark.parametrize("digits", [16, 30])
def test_an_amount_no_ledger_could_hold_is_refused(digits: int) -> None:
    body = orjson.dumps([invoice()]).replace(b"12345", b"1" + b"0" * digits)
    with pytest.raises(BatchError) as caught:
        parse_batch(body, ERP_TYPES)
    assert [(i, e.field) for i, e in caught.value.errors] == [(0, "data.amount.amount_minor")]


@pytest.mark.parametrize(("body", "message"), [(b"[{", "not JSON"), (b'{"id": 1}', "expected a JSON array")])
def test_a_body_that_is_no_array_of_events_is_refused_as_a_whole(body: bytes, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_batch(body, ERP_TYPES)
    assert [e.field for e in caught.value.errors] == ["(body)"]
    assert caught.value.errors[0].message.startswith(message)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("1234.5", "EUR", 123_450), ("100", "USD", 10_000), ("1500", "JPY", 1_500), ("1.234", "KWD", 1_234)],
)
def test_major_units_convert_exactly(text: str, currency: str, minor: int) -> None:
    assert parse_major(text, currency) == minor
    assert parse_major(format_major(minor, currency), currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (123_450, "EUR", "1234.50"),
        (-5, "EUR", "-0.05"),
        (0, "USD", "0.00"),
        (-1_500, "JPY", "-1500"),
        (1_234, "KWD", "1.234"),
        (2**63 - 1, "EUR", "92233720368547758.07"),
    ],
)
def test_minor_units_read_in_major_units(minor: int, currency: str, text: str) -> None:
    assert format_major(minor, currency) == text


def test_sub_minor_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="more decimals"):
        parse_major("10.001", "EUR")


# --- what PostgreSQL and the services cannot store or compute with is refused at the contract ------


def registration(**data: Any) -> dict[str, Any]:
    return {
        **invoice(),
        "id": "reg-1",
        "type": "ar.debtor.registered.v1",
        "data": {"name": "Acme Ltd", **data},
    }


def batch_errors(*events: dict[str, Any]) -> list[tuple[int, Any, str, str]]:
    """What the ledger API answers for a batch: (event, id, field, message) of every wrong field."""
    with pytest.raises(BatchError) as caught:
        parse_batch(orjson.dumps(list(events)), ERP_TYPES)
    return [(i, caught.value.ids[i], e.field, e.message) for i, e in caught.value.errors]


def test_a_nul_in_a_debtor_name_is_refused_naming_the_field() -> None:
    found = batch_errors(registration(), registration(name="Acme\x00Ltd"))
    assert [(event, event_id, field) for event, event_id, field, _ in found] == [(1, "reg-1", "data.name")]
    assert found[0][3] == "must be one line of text without control characters (such as NUL)"
    assert "data.name" in errors_of(registration(name="Acme\x00Ltd"))


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\n", "\t"])
def test_one_line_text_refuses_every_control_character(control: str) -> None:
    assert "data.name" in errors_of(registration(name=f"Acme{control}Ltd"))
    assert "data.postal_address[0]" in errors_of(registration(postal_address=[f"1 Main{control}Street"]))
    assert "source" in errors_of({**invoice(), "source": f"erp{control}"})


def test_free_text_takes_line_breaks_and_tabs_but_no_other_control_character() -> None:
    parse_event(invoice(description="line one\r\nline two\tcolumn"))
    assert "data.description" in errors_of(invoice(description="a\x00b"))
    assert "data.description" in errors_of(invoice(description="bell\x07"))


@pytest.mark.parametrize("address", ["ap\x00@acme.example", "ap@acme\x00.example", "ap@acme.example\x1b"])
def test_an_email_address_with_a_control_character_is_refused(address: str) -> None:
    assert "data.email" in errors_of(registration(email=address))


def test_a_lone_surrogate_is_refused_as_json_the_services_cannot_encode() -> None:
    with pytest.raises(ContractError) as caught:
        parse_batch(b'[{"id": "reg-1", "data": {"name": "\\ud800"}}]', ERP_TYPES)
    assert [e.field for e in caught.value.errors] == ["(body)"]


@pytest.mark.parametrize("bad", ["0001-01-01", "1899-12-31", "3000-01-01", "9999-12-31"])
def test_business_dates_lie_between_1900_and_2999(bad: str) -> None:
    assert "data.issue_date" in errors_of(invoice(issue_date=bad, due_date="2026-02-04"))
    assert "data.due_date" in errors_of(invoice(issue_date="2026-01-05", due_date=bad))
    assert "data.value_date" in errors_of(payment(value_date=bad))


def test_the_first_and_last_business_dates_are_accepted() -> None:
    parse_event(invoice(issue_date="1900-01-01", due_date="2999-12-31"))


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_envelope_time_out_of_range_is_refused(moment: str) -> None:
    assert "time" in errors_of({**invoice(), "time": moment})


def test_a_debtor_id_leaves_room_for_its_case_id() -> None:
    parse_event({**invoice(), "debtorid": "D" * 124})
    assert "debtorid" in errors_of({**invoice(), "debtorid": "D" * 125})


def contact(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    recorded = {"recorded_by": "collector:alice", "business_date": "2026-01-05"}
    return {**invoice(), "id": "c-1", "type": event_type, "data": {**data, "recorded": recorded}}


def test_a_note_or_hold_in_no_iso_currency_is_refused() -> None:
    note = {"note_id": "N-1", "text": "called", "currency": "XYZ"}
    assert "data.currency" in errors_of(contact("ar.case.noted.v1", note))
    hold = {"hold_id": "H-1", "kind": "manual", "currency": "XYZ"}
    assert "data.currency" in errors_of(contact("ar.hold.placed.v1", hold))
    parse_event(contact("ar.case.noted.v1", {**note, "currency": "EUR", "text": "called\nno answer"}))
    assert "data.text" in errors_of(contact("ar.case.noted.v1", {**note, "currency": "EUR", "text": "\x00"}))


@pytest.mark.parametrize("case_id", ["A1:XYZ", "A1", ":EUR", "A1:eur", "A 1:EUR"])
def test_a_case_id_names_a_debtor_and_an_iso_currency(case_id: str) -> None:
    outcome = {"outcome_id": "O-1", "agency_id": "agency-a", "case_id": case_id, "kind": "contact_made"}
    assert "data.case_id" in errors_of(contact("ar.agency.outcome.v1", outcome))


@pytest.mark.parametrize("amount", [-5, 0])
def test_a_promise_is_of_a_positive_amount(amount: int) -> None:
    promise = {"promise_id": "PR-1", "amount": {"amount_minor": amount, "currency": "EUR"}}
    found = errors_of(contact("ar.promise.made.v1", {**promise, "promised_date": "2026-02-01"}))
    assert "data.amount" in found
    assert "positive" in found["data.amount"]


def test_an_instalment_is_of_a_positive_amount_on_a_business_date() -> None:
    instalments = [
        {"due_date": "2026-02-01", "amount": {"amount_minor": 100, "currency": "EUR"}},
        {"due_date": "0001-03-01", "amount": {"amount_minor": -1, "currency": "EUR"}},
    ]
    found = errors_of(
        contact("ar.plan.agreed.v1", {"plan_id": "PL-1", "currency": "EUR", "instalments": instalments})
    )
    assert {"data.instalments[1].due_date", "data.instalments[1].amount"} <= set(found)


def test_integers_fit_their_columns() -> None:
    ref = {"topic": "ar.receivables.v1", "partition": 0, "offset": 0, "event_id": "e-1"}
    case_event = {
        "case_id": "D-1:EUR",
        "change": "opened",
        "business_date": "2026-01-05",
        "version": 1,
        "overdue": {"amount_minor": 0, "currency": "EUR"},
        "status": "open",
        "inputs": [ref],
    }
    event = {**invoice(), "type": "collections.case.opened.v1", "data": case_event}
    parse_event(event)
    assert "data.version" in errors_of({**event, "data": {**case_event, "version": 2**31}})
    assert "data.policy_version" in errors_of({**event, "data": {**case_event, "policy_version": 2**31}})
    too_far = [{**ref, "partition": 2**31}, {**ref, "offset": 2**63}]
    found = errors_of({**event, "data": {**case_event, "inputs": too_far}})
    assert {"data.inputs[0].partition", "data.inputs[1].offset"} <= set(found)


def test_a_policy_version_fits_an_integer_column() -> None:
    published = PolicyPublished(version=1, effective_from=dt.date(2026, 1, 1), document=default_policy())
    raw = {**invoice(), "type": POLICY_PUBLISHED, "data": published.model_dump(mode="json")}
    del raw["debtorid"]
    parse_event(raw)
    assert "data.version" in errors_of({**raw, "data": {**raw["data"], "version": 2**31}})
    assert "data.effective_from" in errors_of(
        {**raw, "data": {**raw["data"], "effective_from": "0001-01-01"}}
    )


def test_a_mail_servers_error_quoted_in_a_contact_result_loses_its_control_characters() -> None:
    result = ContactResult(
        command_id="C-1", case_id="D-1:EUR", outcome="failed", reason="550 no such user\x00\x1b[0m\r\n"
    )
    assert result.reason == "550 no such user\ufffd\ufffd[0m\r\n"


def test_the_schemas_carry_the_bounds() -> None:
    schema = orjson.loads((SCHEMAS / "ar.debtor.registered.v1.json").read_bytes())
    profile = schema["$defs"]["DebtorProfile"]["properties"]
    assert "\\x00" in profile["name"]["pattern"]
    issued = orjson.loads((SCHEMAS / "ar.invoice.issued.v1.json").read_bytes())
    due = issued["$defs"]["InvoiceIssued"]["properties"]["due_date"]
    assert (due["formatMinimum"], due["formatMaximum"]) == ("1900-01-01", "2999-12-31")
