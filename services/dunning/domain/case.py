"""The collection case of one debtor in one currency, what it learns from, and what is decided about it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from contracts.collections import (
    Action,
    AgencyOutcome,
    CaseEvent,
    CaseNote,
    CollectionCommand,
    CommandCancelled,
    ContactResult,
    DisputeChanged,
    HoldChanged,
    HoldKind,
    InputRef,
    PaymentPlanAgreed,
    PromiseToPay,
    SettlementAgreed,
)
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile, DiscountGranted, WriteOffPosted
from contracts.money import format_major
from contracts.policy import PolicyPublished
from contracts.receivables import ReceivableBalance
from services.dunning.agencies import AgencyKey, AgencyPerformance

CaseStatus = Literal["open", "held", "closed"]

PAYMENT_CAUSES = frozenset({"ar.payment.received.v1", "ar.payment.allocated.v1", "ar.payment.reversed.v1"})
"""Journal types whose balance changes are the debtor's payments (promises and plans count them)."""

DISPUTE_OPENED = "ar.dispute.opened.v1"
HOLD_PLACED = "ar.hold.placed.v1"
RECALL_STEP = "agency_recall"
TIMELINE_LIMIT = 500
INPUTS_LIMIT = 50
CaseInput = (
    ReceivableBalance
    | ContactResult
    | PromiseToPay
    | SettlementAgreed
    | DisputeChanged
    | PaymentPlanAgreed
    | HoldChanged
    | CaseNote
    | AgencyOutcome
)


@dataclass(frozen=True)
class Item:
    """An open invoice of the case, as the ledger's balance facts describe it."""

    invoice_id: str
    issue_date: dt.date
    due_date: dt.date
    amount: int
    outstanding: int
    changes: tuple[tuple[dt.date, int], ...] = ()
    """Net change of the outstanding amount per effective date, for penalty accrual."""
    ref: InputRef | None = None
    paid_on: dt.date | None = None
    """Effective date of the latest payment applied to it (early-payment discounts are earned by it)."""
    closing: str | None = None
    """A discount or write-off dunning posted to close the rest, not applied by the ledger yet: the
    item is not chased meanwhile."""

    def days_past_due(self, day: dt.date) -> int:
        return (day - self.due_date).days


@dataclass(frozen=True)
class Promise:
    promise_id: str
    amount: int
    promised_date: dt.date
    recorded_on: dt.date
    paid_before: int
    """The case's payments when the promise was made; what is paid beyond counts towards it."""
    ref: InputRef | None = None
    settles: bool = False
    """An agreed settlement: once `amount` is paid the rest of `invoice_ids` (every open invoice when
    empty) is forgiven."""
    invoice_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    plan_id: str
    instalments: tuple[tuple[dt.date, int], ...]
    agreed_on: dt.date
    paid_before: int
    ref: InputRef | None = None

    @property
    def total(self) -> int:
        return sum(amount for _, amount in self.instalments)


@dataclass(frozen=True)
class Hold:
    hold_id: str
    kind: HoldKind
    placed_on: dt.date
    until: dt.date | None = None
    """The hold expires after this date."""
    reason: str | None = None
    claims_deadline: dt.date | None = None
    """Insolvency: the last day to lodge the claim with the administrator."""
    administrator: str | None = None
    claim_lodged: bool = False
    """Insolvency: the task to lodge the claim was issued."""


@dataclass(frozen=True)
class DisputeAge:
    """When an open dispute was opened, who resolves it, and whether it was escalated to them."""

    invoice_id: str
    opened_on: dt.date
    owner: str
    escalated: bool = False


@dataclass(frozen=True)
class Placement:
    agency_id: str
    command_id: str
    placed_on: dt.date
    step: str
    overdue: int
    segment: str
    band: str
    recovered: int = 0
    last_recovery_on: dt.date | None = None


@dataclass(frozen=True)
class Pending:
    """A command emitted and not yet executed: delivered, failed for good or skipped."""

    command_id: str
    action: Action
    step: str
    business_date: dt.date
    invoice_ids: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    """A line of the case's timeline."""

    business_date: dt.date
    kind: str
    detail: str


@dataclass(frozen=True)
class Case:
    tenant_id: str
    debtor_id: str
    currency: str
    items: Mapping[str, Item] = field(default_factory=dict)
    """Open invoices (outstanding > 0); settled ones leave and come back when re-opened."""
    step: str | None = None
    """The last ladder step after the due date reached in this round (executed or passed over)."""
    step_days: int | None = None
    executed_on: dt.date | None = None
    """Business date of the last step executed in this round, and its days past due."""
    executed_days: int | None = None
    round: int = 0
    """Counts the times the ladder started over, so command ids of a new round differ."""
    reminded: frozenset[tuple[str, str]] = frozenset()
    """(courtesy step, invoice id) pairs already reminded."""
    disputes: Mapping[str, str] = field(default_factory=dict)
    """Open dispute id -> invoice id."""
    dispute_ages: Mapping[str, DisputeAge] = field(default_factory=dict)
    """Open dispute id -> its age and owner (disputes opened before this was kept have none)."""
    promise: Promise | None = None
    plan: Plan | None = None
    holds: Mapping[str, Hold] = field(default_factory=dict)
    placement: Placement | None = None
    agencies_tried: tuple[str, ...] = ()
    place_again_on: dt.date | None = None
    pending: Mapping[str, Pending] = field(default_factory=dict)
    contacts: Mapping[str, dt.date] = field(default_factory=dict)
    """Debtor contacts that count against the caps: command id -> business date."""
    paid: int = 0
    """Net payments applied to the case's invoices, ever."""
    escalate_now: bool = False
    recalculate: bool = False
    next_action_date: dt.date | None = None
    planned_under: int | None = None
    """The policy version the case was last decided under (None: never decided)."""
    as_of: dt.date | None = None
    """The latest business date the case has seen."""
    version: int = 0
    status: CaseStatus = "closed"
    timeline: tuple[Entry, ...] = ()
    """The case's timeline lines of its latest business date, so that a decision made again that day
    notes nothing twice. The whole timeline is the shell's (a row per line, as each decision and fact
    gives them): kept here, it would be most of what every read of the case decodes."""
    refs: tuple[InputRef, ...] = ()
    """Provenance of the contact records applied since the last decision."""

    @property
    def case_id(self) -> str:
        return case_id(self.debtor_id, self.currency)

    @property
    def disputed(self) -> frozenset[str]:
        return frozenset(self.disputes.values())

    def open_items(self) -> tuple[Item, ...]:
        """The open items, oldest due first. Sorted once per case instance (instances never change;
        `replace` drops the sorted copy when it changes the items), under a key with a leading
        underscore that keeps it out of the stored JSON and out of comparisons."""
        memo = self.__dict__
        ordered: tuple[Item, ...] | None = memo.get(_OPEN_ITEMS)
        if ordered is None:
            ordered = memo[_OPEN_ITEMS] = tuple(
                sorted(self.items.values(), key=lambda i: (i.due_date, i.issue_date, i.invoice_id))
            )
        return ordered

    def eligible_items(self) -> list[Item]:
        """Open items that may be part of a command: not disputed, not being closed."""
        disputed = self.disputed
        return [i for i in self.open_items() if i.invoice_id not in disputed and i.closing is None]

    def overdue(self, day: dt.date) -> int:
        return sum(
            i.outstanding for i in self.items.values() if i.days_past_due(day) > 0 and i.closing is None
        )


_CASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Case))
_OPEN_ITEMS = "_open_items"
_T = TypeVar("_T")


def replace(obj: _T, /, **changes: Any) -> _T:
    """`dataclasses.replace`, a good deal faster for the case. A case is copied field by field
    (a few dozen fields, changed several times in every decision) rather than rebuilt through its
    generated `__init__`, which replace would call: the same object, as `Case` has no `__post_init__`
    and no fields outside `__init__`."""
    if type(obj) is not Case:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    unknown = changes.keys() - _CASE_FIELDS
    if unknown:
        raise TypeError(f"Case has no field(s) {sorted(unknown)}")
    made = object.__new__(Case)
    made.__dict__.update(obj.__dict__)
    made.__dict__.update(changes)
    if "items" in changes:
        made.__dict__.pop(_OPEN_ITEMS, None)
    return made  # type: ignore[return-value]


@dataclass(frozen=True)
class Fact:
    """One record a case learns from: its CloudEvents type, its data, and where it was read."""

    type: str
    data: CaseInput
    ref: InputRef | None = None


@dataclass(frozen=True)
class DebtorFacts:
    """What `decide` knows of the debtor beyond the case."""

    profile: DebtorProfile | None = None
    segment: str | None = None
    """Risk segment from scoring ("low", "medium", "high"); None: not scored."""
    segments: Mapping[str, str] = field(default_factory=dict)
    """The segment scoring gave the debtor in each currency: a case takes its currency's, before
    `segment` (a debtor's cases are per currency, and so are its scores)."""
    write_off_proposed: frozenset[str] = frozenset()
    """Currencies whose overdue debt scoring proposes for write-off (its expected recovery is below
    the cost of the next action, or it is older than scoring's maximum age): the case of such a
    currency reaches the write-off step as soon as the steps before it are done, without waiting for
    the step's own days."""
    contacts_elsewhere: tuple[dt.date, ...] = ()
    """Business dates of contacts the debtor's other cases made (caps are per debtor)."""
    agencies: AgencyPerformance = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    case: Case
    commands: tuple[CollectionCommand, ...] = ()
    cancellations: tuple[CommandCancelled, ...] = ()
    events: tuple[CaseEvent, ...] = ()
    notes: tuple[Entry, ...] = ()
    """The decision's timeline lines (steps deferred or passed over among them)."""
    postings: tuple[DiscountGranted | WriteOffPosted, ...] = ()
    """Journal entries for the ledger: discounts earned, the rest of a settlement forgiven."""


def case_id(debtor_id: str, currency: str) -> str:
    return f"{debtor_id}:{currency}"


def new_case(tenant_id: str, debtor_id: str, currency: str) -> Case:
    return Case(tenant_id=tenant_id, debtor_id=debtor_id, currency=currency)


def fact_of(envelope: Envelope[Any], ref: InputRef | None = None) -> Fact:
    """The fact an envelope carries (its data must be one of `CaseInput`)."""
    return Fact(envelope.type, envelope.data, ref)


def opens_case(fact: Fact) -> bool:
    """Whether the fact opens the case of its currency when the debtor has none: only an invoice's
    balance does. A promise, plan, hold, note, contact result or agency outcome naming a case that
    does not exist is about nothing and opens none."""
    return isinstance(fact.data, ReceivableBalance)


def currency_of(fact: Fact) -> str | None:
    """The currency of the case a fact belongs to; None: every case of the debtor (holds and notes
    without a currency, disputes, contact results and agency outcomes, which name their case)."""
    data = fact.data
    match data:
        case ReceivableBalance():
            return data.outstanding.currency
        case PromiseToPay() | SettlementAgreed():
            return data.amount.currency
        case PaymentPlanAgreed():
            return data.currency
        case HoldChanged() | CaseNote():
            return data.currency
        case ContactResult() | AgencyOutcome():
            return data.case_id.rsplit(":", 1)[-1]
        case _:
            return None


def is_due(case: Case, business_date: dt.date, new_version: PolicyPublished | None = None) -> bool:
    """Whether the case is to be decided on `business_date`: its next action date has come or, on the
    first business day a version is in force (`new_version`), it is open (held or not) and was not
    decided under that version. Every open case is thus planned again under a new version on its
    first day (a step the version brings forward is taken on the new schedule, not on the date the
    old one had planned). Deciding a case makes it not due on that date any more."""
    if case.next_action_date is not None and case.next_action_date <= business_date:
        return True
    return new_version is not None and bool(case.items) and case.planned_under != new_version.version


def due_cases(
    cases: Iterable[Case], business_date: dt.date, new_version: PolicyPublished | None = None
) -> list[Case]:
    """The cases to decide on `business_date` (`is_due`), by case id."""
    due = (c for c in cases if is_due(c, business_date, new_version))
    return sorted(due, key=lambda c: (c.tenant_id, c.case_id))


def agency_key(case: Case) -> AgencyKey | None:
    """The kind of case its current placement counts for, to keep agency performance with
    `record_placement` (on a `placed` event) and `record_recovery` (on a recovered outcome)."""
    placement = case.placement
    if placement is None:
        return None
    return AgencyKey(placement.agency_id, placement.segment, case.currency, placement.band)


def status_on(case: Case, day: dt.date) -> CaseStatus:
    if not case.items:
        return "closed"
    return "held" if case_holds(case, day) else "open"


def case_holds(case: Case, day: dt.date) -> list[str]:
    """Why the whole case is held on `day`, if it is."""
    holds = sorted(case.holds.values(), key=lambda h: h.hold_id)
    reasons = [f"{h.kind} hold {h.hold_id}" for h in holds if h.until is None or day <= h.until]
    if case.promise is not None:
        kind = "settlement" if case.promise.settles else "promise to pay"
        reasons.append(f"{kind} {case.promise.promise_id} by {case.promise.promised_date}")
    if case.plan is not None:
        reasons.append(f"payment plan {case.plan.plan_id}")
    return reasons


def amount_text(amount_minor: int, currency: str) -> str:
    return f"{format_major(amount_minor, currency)} {currency}"
