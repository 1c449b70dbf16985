"""The ERP events a fault run posts, each remembered so that what the ledger must show is known from
the stream itself, never read back from the system under test."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from chaos.poster import Event
from tests.integration.events import envelope, invoice, payment


@dataclass(frozen=True)
class InvoiceSpec:
    event_id: str
    debtor: str
    invoice_id: str
    amount: int
    currency: str


class InvoiceBook:
    """Invoices with unique ids and distinct amounts over `debtors` debtors, remembered by event id."""

    FIRST_ISSUE = dt.date(2026, 1, 1)
    AS_OF = dt.date(2026, 12, 31)
    """Past every due date: every invoice is in the aging and on its statement."""

    def __init__(self, tenant: str, debtors: int = 200, currencies: Sequence[str] = ("EUR",)) -> None:
        self.tenant = tenant
        self.debtor_count = debtors
        self.currencies = tuple(currencies)
        self.run = uuid.uuid4().hex[:6]
        self.invoices: dict[str, InvoiceSpec] = {}

    def debtor(self, n: int) -> str:
        return f"D{n % self.debtor_count:04d}"

    @property
    def debtors(self) -> list[str]:
        return sorted({spec.debtor for spec in self.invoices.values()})

    def invoice(self, debtor: str | None = None) -> Event:
        n = len(self.invoices)
        debtor = debtor or self.debtor(n)
        number = f"{self.run}-{n:07d}"
        issued = self.FIRST_ISSUE + dt.timedelta(days=n % 150)
        amount = 100_000 + n  # distinct: a total tells which invoices it holds
        currency = self.currencies[(n // self.debtor_count) % len(self.currencies)]
        event = invoice(
            self.tenant,
            debtor,
            number,
            issued.isoformat(),
            (issued + dt.timedelta(days=30)).isoformat(),
            amount,
            currency,
        )
        self.invoices[event["id"]] = InvoiceSpec(event["id"], debtor, number, amount, currency)
        return event

    def batches(self, size: int, limit: int) -> Iterator[list[Event]]:
        """Batches of `size` new invoices, at most `limit` invoices in all."""
        made = 0
        while made < limit:
            count = min(size, limit - made)
            made += count
            yield [self.invoice() for _ in range(count)]


def debtor_event(tenant: str, debtor: str, event_id: str, name: str, registered: bool) -> Event:
    kind = "ar.debtor.registered.v1" if registered else "ar.debtor.updated.v1"
    return envelope(kind, tenant, debtor, event_id, {"name": name, "email": f"{debtor.lower()}@example.com"})


# --- a bounded stream of invoices, payments and debtor registrations ------------------------------


@dataclass(frozen=True)
class Posted:
    """One event of the stream, as the ERP meant it."""

    event_id: str
    kind: str
    """registration, invoice or payment."""
    debtor: str
    invoice_id: str = ""
    """The invoice issued, or the one a payment is allocated to."""
    amount: int = 0
    currency: str = "EUR"
    name: str = ""
    """A registration's debtor name."""


@dataclass
class Expected:
    """What the ledger must show once it has applied a set of the stream's events."""

    names: dict[str, str]
    """Debtor -> registered name."""
    invoices: dict[str, Posted]
    """Invoice id -> its issue."""
    outstanding: dict[str, int]
    """Invoice id -> amount less the payments allocated to it."""
    payments: dict[str, list[Posted]]
    """Invoice id -> the payments allocated to it."""
    aging_minor: dict[str, int]
    """Currency -> Σ outstanding."""


class Stream:
    """Every debtor registered first (with an e-mail address), then invoices with unique ids and
    distinct amounts, each paid (in full, or half of it) with a probability, by a payment allocated
    to it a while later in the stream. Seeded: the same seed posts the same events (the ids carry a
    run tag, so a stream can be posted twice to the same ledger).

    Invoices are issued over the first weeks of 2026 and fall due 14 days later, so a business clock
    advanced from 1 January makes them overdue one after another and dunning decides reminders."""

    FIRST_ISSUE = dt.date(2026, 1, 1)
    AS_OF = dt.date(2026, 12, 31)
    """Past every due date and value date: every event is on its statement."""

    def __init__(
        self,
        tenant: str,
        *,
        seed: int,
        debtors: int = 200,
        invoices: int = 10_000,
        paid: float = 0.35,
        currencies: Sequence[str] = ("EUR", "USD"),
        issue_days: int = 60,
    ) -> None:
        self.tenant = tenant
        self.random = random.Random(seed)
        self.debtor_count = debtors
        self.invoice_limit = invoices
        self.paid = paid
        self.currencies = tuple(currencies)
        self.issue_days = issue_days
        self.run = uuid.UUID(int=self.random.getrandbits(128)).hex[:6]
        self.events: dict[str, Posted] = {}
        self._due: list[tuple[int, Event]] = []
        """Payments waiting for their place in the stream: (invoice count at which to post, event)."""

    def debtor(self, n: int) -> str:
        return f"D{n:04d}"

    def email(self, debtor: str) -> str:
        return f"{debtor.lower()}@{self.tenant}.example"

    def _register(self, n: int) -> Event:
        debtor = self.debtor(n)
        name = f"Debtor {debtor} {self.run}"
        event = envelope(
            "ar.debtor.registered.v1",
            self.tenant,
            debtor,
            f"reg-{self.run}-{debtor}",
            {"name": name, "email": self.email(debtor)},
        )
        self.events[event["id"]] = Posted(event["id"], "registration", debtor, name=name)
        return event

    def _invoice(self, n: int) -> Event:
        debtor = self.debtor(self.random.randrange(self.debtor_count))
        number = f"{self.run}-{n:07d}"
        issued = self.FIRST_ISSUE + dt.timedelta(days=self.random.randrange(self.issue_days))
        amount = 10_000 + 7 * n + self.random.randrange(7)  # distinct
        currency = self.currencies[self.random.randrange(len(self.currencies))]
        event = invoice(
            self.tenant,
            debtor,
            number,
            issued.isoformat(),
            (issued + dt.timedelta(days=14)).isoformat(),
            amount,
            currency,
        )
        self.events[event["id"]] = Posted(event["id"], "invoice", debtor, number, amount, currency)
        if self.random.random() < self.paid:
            paying = amount if self.random.random() < 0.7 else amount // 2
            value_date = issued + dt.timedelta(days=self.random.randrange(5, 40))
            pid = f"{number}-P"
            payment = payment_event(
                self.tenant, debtor, pid, value_date.isoformat(), paying, number, currency
            )
            self.events[payment["id"]] = Posted(payment["id"], "payment", debtor, number, paying, currency)
            self._due.append((n + self.random.randrange(20, 400), payment))
        return event

    def batches(self, size: int) -> Iterator[list[Event]]:
        """The whole stream in batches of `size`: registrations, then invoices with their payments."""
        events = [self._register(n) for n in range(self.debtor_count)]
        for start in range(0, len(events), size):
            yield events[start : start + size]
        batch: list[Event] = []
        for n in range(self.invoice_limit):
            batch.append(self._invoice(n))
            ready = [p for at, p in self._due if at <= n]
            self._due = [(at, p) for at, p in self._due if at > n]
            batch.extend(ready)
            if len(batch) >= size:
                yield batch
                batch = []
        batch.extend(p for _, p in self._due)
        self._due = []
        if batch:
            yield batch

    def expected(self, applied: set[str]) -> Expected:
        """What the ledger shows once it has applied exactly the events `applied` (by event id)."""
        names: dict[str, str] = {}
        invoices: dict[str, Posted] = {}
        payments: dict[str, list[Posted]] = {}
        for event_id in applied:
            posted = self.events.get(event_id)
            if posted is None:
                continue
            if posted.kind == "registration":
                names[posted.debtor] = posted.name
            elif posted.kind == "invoice":
                invoices[posted.invoice_id] = posted
            else:
                payments.setdefault(posted.invoice_id, []).append(posted)
        outstanding = {}
        aging: dict[str, int] = {}
        for invoice_id, issued in invoices.items():
            left = issued.amount - sum(p.amount for p in payments.get(invoice_id, []))
            outstanding[invoice_id] = left
            if left:
                aging[issued.currency] = aging.get(issued.currency, 0) + left
        return Expected(names, invoices, outstanding, payments, aging)


def payment_event(
    tenant: str, debtor: str, pid: str, value_date: str, minor: int, invoice_id: str, currency: str
) -> Event:
    return payment(tenant, debtor, pid, value_date, minor, allocate_to=invoice_id, currency=currency)
