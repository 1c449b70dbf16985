"""Synthetic receivables portfolios as ledger events, reproducible from a seed.

A portfolio is a set of tenants, each with debtors who receive invoices and pay them according to
one of five payment behaviours. Its events are the ledger's envelopes, encoded exactly as
`contracts.registry.encode_event` encodes them (a test checks byte equality), in business-date order,
with one `ar.businessday.started.v1` per tenant at the start of every day.

The window of `days` business days is preceded by `history_days` of simulated history: what was still
open when the window starts is posted on its first day with its historical dates (the initial
open-item load), what was settled before is not posted at all.

Formatting the JSON directly, rather than constructing pydantic models, is what makes this fast;
`check_sample` validates events against the contracts and checks the bytes are theirs.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from statistics import NormalDist
from typing import Any, Literal, NamedTuple

from contracts import journal
from contracts.clock import BUSINESS_DAY_STARTED, clock_event_id
from contracts.registry import decode_event, encode_event
from contracts.topics import CLOCK, DEBTORS, JOURNAL

Behaviour = Literal["prompt", "late", "deteriorating", "disputing", "defaulting"]
BEHAVIOURS: tuple[tuple[Behaviour, float], ...] = (
    ("prompt", 0.45),
    ("late", 0.25),
    ("deteriorating", 0.12),
    ("disputing", 0.10),
    ("defaulting", 0.08),
)

MINOR_DIGITS = {"EUR": 2, "USD": 2, "RUB": 2, "CNY": 2, "JPY": 0}
"""The portfolio's currencies and their minor-unit exponents (ISO 4217)."""
MEDIAN_INVOICE_MAJOR = {"EUR": 1_800.0, "USD": 2_000.0, "RUB": 150_000.0, "CNY": 12_000.0, "JPY": 250_000.0}
INVOICE_SIGMA = 1.1
"""Invoice amounts are log-normal: median as above per currency, this sigma of the log."""

PAYMENT_TERMS: tuple[tuple[int, float], ...] = ((30, 0.5), (14, 0.15), (45, 0.15), (60, 0.2))

_LOCALES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # currency: (country, language, time zone, phone prefix), ...
    "EUR": (
        ("DE", "de", "Europe/Berlin", "+49 30"),
        ("FR", "fr", "Europe/Paris", "+33 1"),
        ("NL", "nl", "Europe/Amsterdam", "+31 20"),
        ("IT", "it", "Europe/Rome", "+39 06"),
    ),
    "USD": (("US", "en", "America/New_York", "+1 212"), ("US", "en", "America/Chicago", "+1 312")),
    "RUB": (("RU", "ru", "Europe/Moscow", "+7 495"),),
    "CNY": (("CN", "zh", "Asia/Shanghai", "+86 21"),),
    "JPY": (("JP", "ja", "Asia/Tokyo", "+81 3"),),
}
_TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
_COMPANY_WORDS = ("Nord", "Delta", "Sun", "Blue", "Iron", "Green", "Star", "Atlas", "Polar", "Vega")
_COMPANY_KINDS = ("Trading", "Logistics", "Foods", "Systems", "Metals", "Retail", "Textiles", "Energy")

JOURNAL_TOPIC, DEBTORS_TOPIC, CLOCK_TOPIC = JOURNAL.name, DEBTORS.name, CLOCK.name
T_REGISTERED, T_UPDATED = journal.DebtorProfile.TYPES
(T_INVOICE,) = journal.InvoiceIssued.TYPES
(T_ADJUSTED,) = journal.InvoiceAdjusted.TYPES
(T_CANCELLED,) = journal.InvoiceCancelled.TYPES
(T_CREDIT_NOTE,) = journal.CreditNoteIssued.TYPES
(T_PAYMENT,) = journal.PaymentReceived.TYPES
(T_ALLOCATED,) = journal.PaymentAllocated.TYPES
(T_REVERSED,) = journal.PaymentReversed.TYPES
(T_WRITE_OFF,) = journal.WriteOffPosted.TYPES

FIRST_SECOND, LAST_SECOND = 7 * 3600, 19 * 3600
"""ERP events are posted between 07:00 and 19:00 UTC; the clock starts each day at 06:00."""


@dataclass(frozen=True)
class PortfolioSpec:
    tenants: int
    debtors: int
    """Across all tenants."""
    invoices: int
    """Invoices issued within the window (those from the history that are still open come on top)."""
    days: int = 120
    history_days: int = 120
    start: dt.date = dt.date(2026, 1, 5)
    seed: int = 42

    @property
    def end(self) -> dt.date:
        """The last business day of the window."""
        return self.start + dt.timedelta(days=self.days - 1)


SIZES: dict[str, PortfolioSpec] = {
    "tiny": PortfolioSpec(tenants=2, debtors=40, invoices=400, days=45, history_days=60),
    "small": PortfolioSpec(tenants=3, debtors=4_000, invoices=50_000, days=90, history_days=90),
    "medium": PortfolioSpec(tenants=4, debtors=12_000, invoices=150_000, days=120, history_days=120),
    # An ERP going live: the open items of eight months of history loaded on the first day (1.4 million,
    # most of the 2.3 million events), then four weeks of business.
    "full": PortfolioSpec(tenants=4, debtors=250_000, invoices=420_000, days=20, history_days=240),
}


class PortfolioEvent(NamedTuple):
    topic: str
    tenant: str
    key: bytes
    value: bytes


@dataclass
class Portfolio:
    spec: PortfolioSpec
    events: list[PortfolioEvent]
    tenants: list[str]
    debtors: dict[str, list[str]]
    """Per tenant, its debtor ids."""
    behaviours: Counter[str]
    counts: Counter[str]
    """Events per type."""
    currencies: Counter[str]
    """Invoices per currency."""
    generated_in_s: float = 0.0

    @property
    def value_bytes(self) -> int:
        return sum(len(e.value) for e in self.events)

    def erp_events(self) -> list[PortfolioEvent]:
        """What an ERP posts through the ledger API: everything but the clock."""
        return [e for e in self.events if e.topic != CLOCK_TOPIC]

    def summary(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "tenants": spec.tenants,
            "debtors": spec.debtors,
            "invoices_in_window": spec.invoices,
            "days": spec.days,
            "history_days": spec.history_days,
            "start": spec.start.isoformat(),
            "end": spec.end.isoformat(),
            "seed": spec.seed,
            "events": len(self.events),
            "value_bytes": self.value_bytes,
            "events_by_type": dict(sorted(self.counts.items())),
            "debtors_by_behaviour": dict(sorted(self.behaviours.items())),
            "invoices_by_currency": dict(sorted(self.currencies.items())),
            "generated_in_s": round(self.generated_in_s, 3),
        }


def spec_for(
    size: str, *, debtors: int | None = None, invoices: int | None = None, seed: int = 42
) -> PortfolioSpec:
    spec = replace(SIZES[size], seed=seed)
    if debtors is not None:
        spec = replace(spec, debtors=debtors)
    if invoices is not None:
        spec = replace(spec, invoices=invoices)
    return spec


def tenant_ids(count: int, prefix: str = "") -> list[str]:
    return [
        f"{prefix}{_TENANT_NAMES[i % len(_TENANT_NAMES)]}{i // len(_TENANT_NAMES) or ''}"
        for i in range(count)
    ]


def generate(spec: PortfolioSpec, tenant_prefix: str = "") -> Portfolio:
    """Every event of the portfolio, in business-date order; the same spec gives the same bytes."""
    import time

    started = time.perf_counter()
    builder = _Builder(spec, tenant_ids(spec.tenants, tenant_prefix))
    master = random.Random(spec.seed)
    weights = [master.lognormvariate(0.0, 0.9) for _ in range(spec.debtors)]
    scale = spec.invoices / sum(weights) if weights else 0.0
    # Millions of small objects that all live to the end: the cyclic collector only costs time here.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for index, weight in enumerate(weights):
            builder.debtor(index, weight * scale, random.Random(spec.seed * 1_000_003 + index))
        portfolio = builder.finish()
    finally:
        if collecting:
            gc.enable()
    portfolio.generated_in_s = time.perf_counter() - started
    return portfolio


def check_sample(events: Iterable[PortfolioEvent], stride: int = 1) -> int:
    """Validate every `stride`-th event against its contract and check that it is encoded exactly as
    the contracts encode it; return how many were checked. Raises on the first mismatch."""
    checked = 0
    for index, event in enumerate(events):
        if index % stride:
            continue
        envelope = decode_event(event.value)
        if encode_event(envelope) != event.value:
            raise AssertionError(f"event {index} is not canonically encoded: {event.value!r}")
        if envelope.key.encode() != event.key or envelope.tenantid != event.tenant:
            raise AssertionError(f"event {index} has key {event.key!r}, expected {envelope.key!r}")
        if event.topic != envelope.data.TOPIC:
            raise AssertionError(f"event {index} is on {event.topic}, expected {envelope.data.TOPIC}")
        checked += 1
    return checked


# --- the builder ----------------------------------------------------------------------------------
#
# Written for speed: JSON is formatted with f-strings (the ids, names and codes are plain ASCII that
# needs no escaping, and `check_sample` proves the bytes equal the contracts' own encoding), random
# draws use `random()` and a table of normal quantiles rather than the slower `gauss` and `randint`.

_new_tuple = tuple.__new__
"""Builds a PortfolioEvent without the Python-level __new__ of a NamedTuple (a hot path)."""

_NORMAL = tuple(NormalDist().inv_cdf((i + 0.5) / 4096) for i in range(4096))
"""Standard normal quantiles: `_NORMAL[int(random() * 4096)]` is a normal draw."""


@cache
def _times_of_day() -> list[str]:
    """ "THH:MM:SSZ" for every second of a day."""
    return [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(86_400)]


def _money(minor: int, currency: str) -> str:
    return f'{{"amount_minor":{minor},"currency":"{currency}"}}'


def _pick(roll: float, weighted: tuple[tuple[Any, float], ...]) -> Any:
    for value, weight in weighted:
        roll -= weight
        if roll < 0:
            return value
    return weighted[-1][0]


Step = tuple[int, str, str, str]
"""(business day relative to the window start, event type, event id, data as JSON) of a journal event."""


@dataclass
class _Invoice:
    invoice_id: str
    issue: int
    due: int
    amount: int
    currency: str


class _Debtor:
    __slots__ = ("debtor_id", "first_post", "head", "key", "payments", "rand", "tail", "tenant")

    def __init__(self, tenant: str, debtor_id: str, rand: Callable[[], float]) -> None:
        self.tenant = tenant
        self.debtor_id = debtor_id
        self.key = f"{tenant}:{debtor_id}".encode()
        self.rand = rand
        self.payments = 0
        self.first_post: int | None = None
        self.head = f'","source":"erp/{tenant}","type":"'
        self.tail = (
            f'","datacontenttype":"application/json","tenantid":"{tenant}","debtorid":"{debtor_id}","data":'
        )


class _Builder:
    def __init__(self, spec: PortfolioSpec, tenants: list[str]) -> None:
        self.spec = spec
        self.tenants = tenants
        self.lo = -spec.history_days
        self.days = spec.days
        days = range(self.lo, spec.days + 400)
        self._date = [(spec.start + dt.timedelta(days=d)).isoformat() for d in days]
        self._weekday = [(spec.start + dt.timedelta(days=d)).weekday() for d in days]
        self._times = _times_of_day()
        self._buckets: list[list[tuple[int, int, PortfolioEvent]]] = [[] for _ in range(spec.days)]
        self._seq = 0
        self.counts: Counter[str] = Counter()
        self.behaviours: Counter[str] = Counter()
        self.currencies: Counter[str] = Counter()
        self.debtors: dict[str, list[str]] = {t: [] for t in tenants}
        currencies = list(MINOR_DIGITS)
        self._tenant_currency = {t: currencies[i % len(currencies)] for i, t in enumerate(tenants)}

    # dates ---------------------------------------------------------------------------------------

    def date(self, day: int) -> str:
        return self._date[day - self.lo]

    def bank_day(self, day: int) -> int:
        """Saturdays and Sundays move to the Monday after (no invoices or value dates at weekends)."""
        weekday = self._weekday[day - self.lo]
        return day + 7 - weekday if weekday >= 5 else day

    def friday_before(self, day: int) -> int:
        """The Friday on or before `day` (weekly payment runs)."""
        return day - (self._weekday[day - self.lo] - 4) % 7

    # emission ------------------------------------------------------------------------------------

    def _emit(self, debtor: _Debtor, day: int, event_type: str, event_id: str, data: str, topic: str) -> None:
        post = day if day > 0 else 0
        if post >= self.days:
            return
        second = FIRST_SECOND + int(debtor.rand() * (LAST_SECOND - FIRST_SECOND))
        value = (
            f'{{"specversion":"1.0","id":"{event_id}{debtor.head}{event_type}","time":"'
            f"{self._date[post - self.lo]}{self._times[second]}{debtor.tail}{data}}}"
        ).encode()
        # The opening load keeps the business order of what it posts (an invoice before its payment).
        order = day if day < 0 else second
        event = _new_tuple(PortfolioEvent, (topic, debtor.tenant, debtor.key, value))
        self._buckets[post].append((order, self._seq, event))
        self._seq += 1
        self.counts[event_type] += 1
        if debtor.first_post is None or post < debtor.first_post:
            debtor.first_post = post

    def emit_thread(self, debtor: _Debtor, steps: list[Step], invoices: list[_Invoice]) -> None:
        """Post an invoice's events, unless all happened before the window and settled it (history)."""
        if steps[0][0] < 0 and len(steps) > len(invoices) and max(s[0] for s in steps) < 0:
            return
        for invoice in invoices:
            self.currencies[invoice.currency] += 1
        for day, event_type, event_id, data in steps:
            self._emit(debtor, day, event_type, event_id, data, JOURNAL_TOPIC)

    def finish(self) -> Portfolio:
        events: list[PortfolioEvent] = []
        for day, bucket in enumerate(self._buckets):
            for tenant in self.tenants:
                events.append(
                    PortfolioEvent(CLOCK_TOPIC, tenant, tenant.encode(), self._clock_event(tenant, day))
                )
            bucket.sort()
            events.extend(entry[2] for entry in bucket)
        self.counts[BUSINESS_DAY_STARTED] += len(self.tenants) * self.days
        self._buckets = []
        return Portfolio(
            spec=self.spec,
            events=events,
            tenants=list(self.tenants),
            debtors=self.debtors,
            behaviours=self.behaviours,
            counts=self.counts,
            currencies=self.currencies,
        )

    def _clock_event(self, tenant: str, day: int) -> bytes:
        date = self.date(day)
        event_id = clock_event_id(tenant, self.spec.start + dt.timedelta(days=day))
        return (
            f'{{"specversion":"1.0","id":"{event_id}","source":"arrears/clock","type":"{BUSINESS_DAY_STARTED}",'
            f'"time":"{date}T06:00:00Z","datacontenttype":"application/json","tenantid":"{tenant}",'
            f'"data":{{"business_date":"{date}"}}}}'
        ).encode()

    # one debtor ----------------------------------------------------------------------------------

    def debtor(self, index: int, window_invoices: float, rng: random.Random) -> None:
        rand = rng.random
        tenant = self.tenants[index % len(self.tenants)]
        debtor = _Debtor(tenant, f"D{index // len(self.tenants):07d}", rand)
        currencies = list(MINOR_DIGITS)
        currency = self._tenant_currency[tenant] if rand() < 0.75 else currencies[int(rand() * 5)]
        second = None
        if rand() < 0.1:
            others = [c for c in currencies if c != currency]
            second = others[int(rand() * len(others))]
        behaviour: Behaviour = _pick(rand(), BEHAVIOURS)
        terms: int = _pick(rand(), PAYMENT_TERMS)
        self.debtors[tenant].append(debtor.debtor_id)
        self.behaviours[behaviour] += 1

        span = self.days - self.lo
        expected = window_invoices * span / self.days
        count = max(1, int(expected) + (1 if rand() < expected - int(expected) else 0))
        issue_days = sorted(self.bank_day(self.lo + int(rand() * span)) for _ in range(count))
        invoices = []
        for n, issue in enumerate(issue_days):
            cur = second if second and rand() < 0.2 else currency
            amount = self.amount(rand(), cur)
            invoices.append(_Invoice(f"{debtor.debtor_id}-{n + 1:05d}", issue, issue + terms, amount, cur))
        _BEHAVIOUR_PLANS[behaviour](self, debtor, invoices)

        self._profile(debtor, currency, T_REGISTERED, f"reg-{debtor.debtor_id}", debtor.first_post or 0)
        if rand() < 0.05:
            self._profile(
                debtor, currency, T_UPDATED, f"upd-{debtor.debtor_id}-1", 1 + int(rand() * self.days)
            )

    @staticmethod
    def amount(roll: float, currency: str) -> int:
        major = MEDIAN_INVOICE_MAJOR[currency] * math.exp(INVOICE_SIGMA * _NORMAL[int(roll * 4096)])
        return max(1, round(major * 10.0 ** MINOR_DIGITS[currency]))

    def _profile(self, debtor: _Debtor, currency: str, event_type: str, event_id: str, day: int) -> None:
        rand = debtor.rand
        locales = _LOCALES[currency]
        country, language, zone, phone = locales[int(rand() * len(locales))]
        word = _COMPANY_WORDS[int(rand() * len(_COMPANY_WORDS))]
        kind = _COMPANY_KINDS[int(rand() * len(_COMPANY_KINDS))]
        name = f"{word} {kind} {int(debtor.debtor_id[1:])}"
        mailbox = "billing" if event_type == T_UPDATED else "ap"
        street, postcode = 1 + int(rand() * 200), 10_000 + int(rand() * 90_000)
        channels = ',"consented_channels":["email","letter"]' if rand() < 0.3 else ""
        data = (
            f'{{"name":"{name}","country":"{country}","language":"{language}","timezone":"{zone}",'
            f'"email":"{mailbox}@{name.lower().replace(" ", "-")}.example",'
            f'"phone":"{phone} {1_000_000 + int(rand() * 9_000_000)}",'
            f'"postal_address":["{street} Harbour Street","{country}-{postcode}"],'
            f'"tax_id":"{country}{10**8 + int(rand() * 9 * 10**8)}"{channels}}}'
        )
        self._emit(debtor, day, event_type, event_id, data, DEBTORS_TOPIC)

    # journal steps -------------------------------------------------------------------------------

    def invoice_step(self, debtor: _Debtor, invoice: _Invoice) -> Step:
        description = f',"description":"Delivery note {invoice.invoice_id}"' if debtor.rand() < 0.3 else ""
        data = (
            f'{{"invoice_id":"{invoice.invoice_id}","issue_date":"{self._date[invoice.issue - self.lo]}",'
            f'"due_date":"{self._date[invoice.due - self.lo]}",'
            f'"amount":{_money(invoice.amount, invoice.currency)}{description}}}'
        )
        return (invoice.issue, T_INVOICE, f"inv-{invoice.invoice_id}", data)

    def payment_step(
        self, debtor: _Debtor, day: int, amount: int, currency: str, allocations: str, reference: str
    ) -> tuple[Step, str]:
        """`allocations` as JSON items, "" for none; `reference` as a JSON member, "" for none."""
        debtor.payments += 1
        payment_id = f"{debtor.debtor_id}-P{debtor.payments:05d}"
        data = (
            f'{{"payment_id":"{payment_id}","value_date":"{self._date[day - self.lo]}",'
            f'"amount":{_money(amount, currency)},"allocations":[{allocations}]{reference}}}'
        )
        return (day, T_PAYMENT, f"pay-{payment_id}", data), payment_id

    def pay(
        self, debtor: _Debtor, steps: list[Step], invoice: _Invoice, day: int, amount: int, allocated: bool
    ) -> tuple[str, int]:
        """A payment of `amount` for the invoice on the first bank day from `day`: (its id, that day)."""
        day = self.bank_day(day)
        if allocated:
            allocations = (
                f'{{"invoice_id":"{invoice.invoice_id}","amount":{_money(amount, invoice.currency)}}}'
            )
            reference = f',"reference":"Invoice {invoice.invoice_id}"'
        else:
            allocations = reference = ""
        step, payment_id = self.payment_step(debtor, day, amount, invoice.currency, allocations, reference)
        steps.append(step)
        return payment_id, day

    def reverse(self, steps: list[Step], payment_id: str, day: int) -> None:
        reason = "returned direct debit" if day % 2 else "chargeback"
        data = f'{{"payment_id":"{payment_id}","reversal_date":"{self.date(day)}","reason":"{reason}"}}'
        steps.append((day, T_REVERSED, f"rev-{payment_id}", data))

    def allocate(self, steps: list[Step], payment_id: str, invoice: _Invoice, amount: int, day: int) -> None:
        data = (
            f'{{"payment_id":"{payment_id}","allocation_date":"{self.date(day)}","allocations":'
            f'[{{"invoice_id":"{invoice.invoice_id}","amount":{_money(amount, invoice.currency)}}}]}}'
        )
        steps.append((day, T_ALLOCATED, f"alloc-{payment_id}", data))

    def credit_note(self, steps: list[Step], invoice: _Invoice, amount: int, day: int, reason: str) -> None:
        credit_id = f"{invoice.invoice_id}-C"
        data = (
            f'{{"credit_note_id":"{credit_id}","issue_date":"{self.date(day)}",'
            f'"amount":{_money(amount, invoice.currency)},"invoice_id":"{invoice.invoice_id}",'
            f'"reason":"{reason}"}}'
        )
        steps.append((day, T_CREDIT_NOTE, f"cn-{credit_id}", data))

    def adjust(
        self, steps: list[Step], invoice: _Invoice, new_amount: int, day: int, due: int | None
    ) -> None:
        due_date = f',"due_date":"{self.date(due)}"' if due is not None else ""
        reason = "price correction" if due is None else "extended terms"
        data = (
            f'{{"invoice_id":"{invoice.invoice_id}","adjustment_date":"{self.date(day)}",'
            f'"new_amount":{_money(new_amount, invoice.currency)}{due_date},"reason":"{reason}"}}'
        )
        steps.append((day, T_ADJUSTED, f"adj-{invoice.invoice_id}", data))

    def cancel(self, steps: list[Step], invoice: _Invoice, day: int) -> None:
        data = (
            f'{{"invoice_id":"{invoice.invoice_id}","cancellation_date":"{self.date(day)}",'
            '"reason":"issued in error"}'
        )
        steps.append((day, T_CANCELLED, f"cxl-{invoice.invoice_id}", data))

    def write_off(self, steps: list[Step], invoice: _Invoice, amount: int | None, day: int) -> None:
        partial = f',"amount":{_money(amount, invoice.currency)}' if amount else ""
        data = (
            f'{{"writeoff_id":"{invoice.invoice_id}-W","invoice_id":"{invoice.invoice_id}",'
            f'"posting_date":"{self.date(day)}"{partial},"reason":"uncollectible"}}'
        )
        steps.append((day, T_WRITE_OFF, f"wo-{invoice.invoice_id}-W", data))


def _between(rand: Callable[[], float], low: int, high: int) -> int:
    """A whole number from low to high, both included."""
    return low + int(rand() * (high - low + 1))


def _normal(rand: Callable[[], float], mean: float, sd: float) -> float:
    return mean + sd * _NORMAL[int(rand() * 4096)]


# --- payment behaviours -------------------------------------------------------------------------


def _plan_prompt(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """Pays on time, mostly with remittance advice; a quarter pay in weekly runs covering several
    invoices; now and then an invoice is forgotten until weeks after its due date."""
    rand = debtor.rand
    if rand() < 0.25:
        _weekly_runs(b, debtor, invoices)
        return
    for invoice in invoices:
        steps = [b.invoice_step(debtor, invoice)]
        delay = _between(rand, 15, 40) if rand() < 0.04 else round(_normal(rand, -2.0, 4.0))
        b.pay(
            debtor, steps, invoice, max(invoice.issue + 1, invoice.due + delay), invoice.amount, rand() < 0.85
        )
        b.emit_thread(debtor, steps, [invoice])


def _weekly_runs(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """One payment per Friday payment run and currency, paying every invoice due by the next run."""
    runs: dict[tuple[int, str], list[_Invoice]] = {}
    for invoice in invoices:
        run = b.friday_before(invoice.due)
        runs.setdefault((run + 7 if run <= invoice.issue else run, invoice.currency), []).append(invoice)
    for (day, currency), paid in sorted(runs.items()):
        steps = [b.invoice_step(debtor, i) for i in paid]
        allocations = ",".join(
            f'{{"invoice_id":"{i.invoice_id}","amount":{_money(i.amount, currency)}}}' for i in paid
        )
        reference = f',"reference":"Payment run {b.date(day)}"'
        total = sum(i.amount for i in paid)
        steps.append(b.payment_step(debtor, day, total, currency, allocations, reference)[0])
        b.emit_thread(debtor, steps, paid)


def _plan_late(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """Pays weeks late, often without saying what for, sometimes in two instalments; a few payments
    bounce and are paid again; some unallocated payments are allocated by the ERP days later."""
    rand = debtor.rand
    for invoice in invoices:
        steps = [b.invoice_step(debtor, invoice)]
        day = max(invoice.issue + 1, invoice.due + round(math.exp(_normal(rand, math.log(18), 0.6))))
        allocated = rand() < 0.4
        if rand() < 0.2 and invoice.amount > 1:
            first = max(1, round(invoice.amount * (0.3 + 0.4 * rand())))
            b.pay(
                debtor, steps, invoice, max(invoice.issue + 1, day - _between(rand, 10, 25)), first, allocated
            )
            b.pay(debtor, steps, invoice, day, invoice.amount - first, allocated)
        else:
            extra = round(invoice.amount * 0.01) if not allocated and rand() < 0.03 else 0
            payment_id, day = b.pay(debtor, steps, invoice, day, invoice.amount + extra, allocated)
            roll = rand()
            if roll < 0.03:
                bounced = day + _between(rand, 2, 6)
                b.reverse(steps, payment_id, bounced)
                b.pay(debtor, steps, invoice, bounced + _between(rand, 7, 20), invoice.amount, allocated)
            elif not allocated and roll < 0.13:
                b.allocate(steps, payment_id, invoice, invoice.amount, day + _between(rand, 1, 5))
        b.emit_thread(debtor, steps, [invoice])


def _plan_deteriorating(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """Starts out paying on time, pays later and later, and stops paying some of the last invoices."""
    rand = debtor.rand
    span = b.days - b.lo
    for invoice in invoices:
        steps = [b.invoice_step(debtor, invoice)]
        t = (invoice.issue - b.lo) / span
        if not (t > 0.75 and rand() < 0.35):
            day = max(invoice.issue + 1, invoice.due + round(_normal(rand, 75 * t * t, 3.0)))
            b.pay(debtor, steps, invoice, day, invoice.amount, rand() < 0.5)
        b.emit_thread(debtor, steps, [invoice])


def _plan_disputing(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """Disputes a third of the invoices: settled by credit notes, price adjustments or cancellation,
    the rest paid late; asks for extended terms now and then."""
    rand = debtor.rand
    for invoice in invoices:
        steps = [b.invoice_step(debtor, invoice)]
        roll = rand()
        owed = invoice.amount
        if roll < 0.03:
            b.cancel(steps, invoice, invoice.issue + _between(rand, 3, 20))
            b.emit_thread(debtor, steps, [invoice])
            continue
        if roll < 0.25 and owed > 1:
            credit = max(1, round(owed * (0.1 + 0.5 * rand())))
            reason = "disputed quantity" if rand() < 0.5 else "damaged goods"
            b.credit_note(steps, invoice, credit, invoice.issue + _between(rand, 10, 40), reason)
            owed -= credit
            delay = _between(rand, 20, 50)
        elif roll < 0.30 and owed > 1:
            owed = max(1, round(owed * (0.7 + 0.25 * rand())))
            b.adjust(steps, invoice, owed, invoice.issue + _between(rand, 2, 15), None)
            delay = _between(rand, 0, 20)
        elif roll < 0.35:
            b.adjust(steps, invoice, owed, invoice.issue + _between(rand, 2, 10), invoice.due + 30)
            delay = 30 + _between(rand, -3, 5)
        else:
            delay = round(_normal(rand, 5.0, 5.0))
        day = max(invoice.issue + 1, invoice.due + delay, steps[-1][0] + 1)
        b.pay(debtor, steps, invoice, day, owed, rand() < 0.9)
        b.emit_thread(debtor, steps, [invoice])


def _plan_defaulting(b: _Builder, debtor: _Debtor, invoices: list[_Invoice]) -> None:
    """Pays late with bounced payments, then stops paying altogether; half of what is 90 days and more
    past due is written off, in part or in full."""
    rand = debtor.rand
    default_day = b.lo + round((b.days - b.lo) * (0.3 + 0.5 * rand()))
    for invoice in invoices:
        steps = [b.invoice_step(debtor, invoice)]
        day = max(invoice.issue + 1, invoice.due + round(math.exp(_normal(rand, math.log(25), 0.5))))
        if day < default_day:
            payment_id, day = b.pay(debtor, steps, invoice, day, invoice.amount, True)
            if rand() < 0.15:
                bounced = day + _between(rand, 2, 8)
                b.reverse(steps, payment_id, bounced)
                if bounced + 10 < default_day and rand() < 0.6:
                    b.pay(debtor, steps, invoice, bounced + _between(rand, 10, 30), invoice.amount, True)
        elif rand() < 0.5:
            when = max(invoice.due + 90, default_day) + _between(rand, 0, 30)
            partial = round(invoice.amount * (0.3 + 0.5 * rand())) if rand() < 0.4 else None
            b.write_off(steps, invoice, partial, when)
        b.emit_thread(debtor, steps, [invoice])


_BEHAVIOUR_PLANS: dict[str, Callable[[_Builder, _Debtor, list[_Invoice]], None]] = {
    "prompt": _plan_prompt,
    "late": _plan_late,
    "deteriorating": _plan_deteriorating,
    "disputing": _plan_disputing,
    "defaulting": _plan_defaulting,
}
