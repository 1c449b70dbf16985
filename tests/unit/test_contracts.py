"""The contracts as an ERP integrator meets them: what is accepted, what is refused and why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contracts.generate import drift
from contracts.money import format_major, parse_major
from contracts.registry import (
    ERP_TYPES,
    BatchError,
    ContractError,
    decode_event,
    encode_event,
    parse_batch,
    parse_event,
)


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


def test_sub_minor_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="more decimals"):
        parse_major("10.001", "EUR")
