"""The public IBM "Accounts Receivable" sample as journal events, day by day.

One row per invoice: customer, invoice and due dates, amount (USD, major units) and settlement date.
Each customer is registered on its first invoice date; each invoice is issued on its date and paid in
full, allocated to itself, on its settlement date.

The sample has no contact data. Customers billed electronically get an e-mail address and consent to
e-mail; those billed on paper consent to letters. Its country codes are anonymised; customers of
code 770 are given Russian and of code 818 Chinese, so that every template language is exercised.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.envelope import Envelope
from contracts.journal import Allocation, DebtorProfile, InvoiceIssued, PaymentReceived
from contracts.money import Money, parse_major
from contracts.registry import make_event

DEFAULT_PATH = Path("../shared/data/ibm-accounts-receivable-2012-2013H1.csv")
CURRENCY = "USD"
SOURCE = "erp/ibm-sample"


@dataclass(frozen=True)
class SampleInvoice:
    customer_id: str
    country_code: str
    invoice_number: str
    invoice_date: dt.date
    due_date: dt.date
    amount_minor: int
    disputed: bool
    settled_date: dt.date
    paperless: bool


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%m/%d/%Y").date()


def load(path: Path = DEFAULT_PATH) -> list[SampleInvoice]:
    with path.open(newline="") as handle:
        return [
            SampleInvoice(
                customer_id=row["customerID"],
                country_code=row["countryCode"],
                invoice_number=row["invoiceNumber"],
                invoice_date=_date(row["InvoiceDate"]),
                due_date=_date(row["DueDate"]),
                amount_minor=parse_major(row["InvoiceAmount"], CURRENCY),
                disputed=row["Disputed"] == "Yes",
                settled_date=_date(row["SettledDate"]),
                paperless=row["PaperlessBill"] == "Electronic",
            )
            for row in csv.DictReader(handle)
        ]


LANGUAGE_OF_COUNTRY = {"770": "ru", "818": "zh"}


def profile_of(invoice: SampleInvoice) -> DebtorProfile:
    electronic = invoice.paperless
    return DebtorProfile(
        name=f"Customer {invoice.customer_id}",
        language=LANGUAGE_OF_COUNTRY.get(invoice.country_code, "en"),
        email=f"ar-{invoice.customer_id.lower()}@customers.example" if electronic else None,
        postal_address=[] if electronic else ["Accounts Payable", f"Country {invoice.country_code}"],
        consented_channels=["email", "call", "webhook"] if electronic else ["letter", "call", "webhook"],
    )


def disputes_by_day(invoices: list[SampleInvoice]) -> dict[dt.date, list[SampleInvoice]]:
    """Disputed invoices, on the day after they fell due (the sample says only that they were)."""
    days: dict[dt.date, list[SampleInvoice]] = defaultdict(list)
    for inv in invoices:
        if inv.disputed and inv.settled_date > inv.due_date + dt.timedelta(days=1):
            days[inv.due_date + dt.timedelta(days=1)].append(inv)
    return dict(days)


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), dt.UTC)


def events_by_day(invoices: list[SampleInvoice], tenant_id: str) -> dict[dt.date, list[Envelope[Any]]]:
    days: dict[dt.date, list[Envelope[Any]]] = defaultdict(list)
    registered: set[str] = set()
    for inv in sorted(invoices, key=lambda i: (i.invoice_date, i.invoice_number)):
        common: dict[str, Any] = {"tenant_id": tenant_id, "debtor_id": inv.customer_id, "source": SOURCE}
        if inv.customer_id not in registered:
            registered.add(inv.customer_id)
            profile = profile_of(inv)
            days[inv.invoice_date].append(
                make_event(
                    "ar.debtor.registered.v1",
                    profile,
                    event_id=f"debtor-{inv.customer_id}",
                    time=_at(inv.invoice_date),
                    **common,
                )
            )
        amount = Money(amount_minor=inv.amount_minor, currency=CURRENCY)
        issued = InvoiceIssued(
            invoice_id=inv.invoice_number, issue_date=inv.invoice_date, due_date=inv.due_date, amount=amount
        )
        days[inv.invoice_date].append(
            make_event(
                "ar.invoice.issued.v1",
                issued,
                event_id=f"inv-{inv.invoice_number}",
                time=_at(inv.invoice_date),
                **common,
            )
        )
        paid = PaymentReceived(
            payment_id=f"pay-{inv.invoice_number}",
            value_date=inv.settled_date,
            amount=amount,
            allocations=[Allocation(invoice_id=inv.invoice_number, amount=amount)],
        )
        days[inv.settled_date].append(
            make_event(
                "ar.payment.received.v1",
                paid,
                event_id=f"pay-{inv.invoice_number}",
                time=_at(inv.settled_date),
                **common,
            )
        )
    return dict(sorted(days.items()))
