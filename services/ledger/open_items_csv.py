"""The initial open-item load: an ERP's CSV export turned into journal events.

Columns (header row required): debtor_id, invoice_id, issue_date, due_date, amount, currency,
and optionally amount_paid and debtor_name. Amounts are in major units ("1234.50"); dates ISO 8601.
Each row becomes `ar.invoice.issued.v1` and, when something is paid already, `ar.payment.received.v1`
allocated to that invoice and valued at `as_of`. Event ids derive from the invoice id, so loading the
same file twice changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.journal import Allocation, DebtorProfile, InvoiceIssued, PaymentReceived
from contracts.money import Money, parse_major
from contracts.registry import ContractError, FieldError, make_event

REQUIRED = ("debtor_id", "invoice_id", "issue_date", "due_date", "amount", "currency")
SOURCE = "arrears/ledger/import"


def _row_events(
    row: dict[str, str], tenant_id: str, as_of: dt.date | None, now: dt.datetime
) -> list[Envelope[Any]]:
    currency = row["currency"].strip().upper()
    amount = Money(amount_minor=parse_major(row["amount"], currency), currency=currency)
    paid = parse_major(row.get("amount_paid") or "0", currency)
    debtor_id, invoice_id = row["debtor_id"].strip(), row["invoice_id"].strip()
    common: dict[str, Any] = {"tenant_id": tenant_id, "debtor_id": debtor_id, "source": SOURCE, "time": now}
    events: list[Envelope[Any]] = []
    if row.get("debtor_name", "").strip():
        profile = DebtorProfile(name=row["debtor_name"].strip())
        events.append(
            make_event("ar.debtor.registered.v1", profile, event_id=f"import.debtor:{debtor_id}", **common)
        )
    invoice = InvoiceIssued(
        invoice_id=invoice_id,
        issue_date=dt.date.fromisoformat(row["issue_date"].strip()),
        due_date=dt.date.fromisoformat(row["due_date"].strip()),
        amount=amount,
    )
    events.append(make_event("ar.invoice.issued.v1", invoice, event_id=f"import:{invoice_id}", **common))
    if paid:
        if as_of is None:
            raise ValueError("amount_paid needs the as_of date of the load (query parameter as_of)")
        if not 0 < paid <= amount.amount_minor:
            raise ValueError("amount_paid must be between 0 and amount")
        paid_money = Money(amount_minor=paid, currency=currency)
        payment = PaymentReceived(
            payment_id=f"import:{invoice_id}",
            value_date=max(as_of, invoice.issue_date),
            amount=paid_money,
            allocations=[Allocation(invoice_id=invoice_id, amount=paid_money)],
        )
        events.append(
            make_event("ar.payment.received.v1", payment, event_id=f"import:{invoice_id}:paid", **common)
        )
    return events


def open_items_from_csv(
    text: str, tenant_id: str, as_of: dt.date | None, now: dt.datetime, max_errors: int = 100
) -> list[Envelope[Any]]:
    """All rows' events, or a ContractError naming every bad row and column (nothing is half-loaded)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ContractError([FieldError("header", f"missing column(s): {', '.join(missing)}")])
    events: list[Envelope[Any]] = []
    errors: list[FieldError] = []
    for number, row in enumerate(reader, start=2):
        try:
            events.extend(_row_events(row, tenant_id, as_of, now))
        except ValidationError as exc:
            errors.extend(FieldError(f"line {number}", f"{e['loc']}: {e['msg']}") for e in exc.errors())
        except (ValueError, KeyError, AttributeError) as exc:
            errors.append(FieldError(f"line {number}", str(exc)))
        if len(errors) >= max_errors:
            break
    if errors:
        raise ContractError(errors)
    return events
