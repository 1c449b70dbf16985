"""Small builders of ERP event envelopes as JSON, the way an integrator writes them."""

from __future__ import annotations

from typing import Any


def envelope(
    event_type: str, tenant: str, debtor: str, event_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "erp/test",
        "type": event_type,
        "time": "2026-01-01T08:00:00Z",
        "tenantid": tenant,
        "debtorid": debtor,
        "data": data,
    }


def money(minor: int, currency: str = "EUR") -> dict[str, Any]:
    return {"amount_minor": minor, "currency": currency}


def invoice(
    tenant: str, debtor: str, number: str, issued: str, due: str, minor: int, currency: str = "EUR"
) -> dict[str, Any]:
    return envelope(
        "ar.invoice.issued.v1",
        tenant,
        debtor,
        f"inv-{number}",
        {"invoice_id": number, "issue_date": issued, "due_date": due, "amount": money(minor, currency)},
    )


def payment(
    tenant: str,
    debtor: str,
    pid: str,
    value_date: str,
    minor: int,
    allocate_to: str | None = None,
    currency: str = "EUR",
) -> dict[str, Any]:
    data: dict[str, Any] = {"payment_id": pid, "value_date": value_date, "amount": money(minor, currency)}
    if allocate_to:
        data["allocations"] = [{"invoice_id": allocate_to, "amount": money(minor, currency)}]
    return envelope("ar.payment.received.v1", tenant, debtor, f"pay-{pid}", data)


def reversal(tenant: str, debtor: str, pid: str, day: str) -> dict[str, Any]:
    return envelope(
        "ar.payment.reversed.v1",
        tenant,
        debtor,
        f"rev-{pid}",
        {"payment_id": pid, "reversal_date": day, "reason": "chargeback"},
    )
