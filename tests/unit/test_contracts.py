"""The contracts as an ERP integrator meets them: what is accepted, what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.generate import drift
from contracts.money import format_major, parse_major
from contracts.registry import ERP_TYPES, ContractError, decode_event, encode_event, parse_event


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
