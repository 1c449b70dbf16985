"""The collection case of one debtor in one currency, as pure functions: no I/O, no clock, no randomness.

`evolve(case, fact)` applies one record the case learns from (a balance fact of `ar.receivables.v1`,
a contact record of `ar.contacts.v1`) and returns the new case with the case events it caused.
`decide(case, business_date, policy, facts)` says what to do on a business day: the escalation
commands to emit, the pending commands to cancel and the case events, with the case after them.
`due_cases` picks the cases whose next action date has come, or that a policy version new to them
is to plan again, for set-based evaluation. Only a balance fact opens a case (`opens_case`): a
contact record for a case that does not exist changes nothing.

The ladder. Steps due before the due date (courtesy reminders) remind each invoice once, when it
is that many days from falling due. Steps after the due date run one after another, never skipped
by timing and never repeated: the next step is due when the oldest overdue invoice that may be
contacted is as many days past due as the step says (shifted by the amount band and the risk
segment), and no sooner than `min_days_between_steps` after the previous step of another day;
steps of one day go together. A partial payment re-anchors this on the invoices still overdue.
When nothing is overdue any more, the ladder starts over for the next invoice that falls overdue.
A step below its minimum amount, a placement with no eligible agency, or a contact with no
consented channel is passed over, and the ladder moves on. Debtor contacts respect the contact
caps (a step waits for room), go out in the send window of the debtor's time zone and only on
consented channels.

Agencies: a case is with at most one agency. While it is, our own debtor contacts wait; legal
action or a write-off proposal recalls it first. An agency without recovery for
`recall_after_days` is recalled and, when the policy says so, the next best agency not tried yet
gets the case the next day.

Holds: a disputed invoice is left out of every command; a promise to pay, a payment plan,
insolvency, a manual hold and a pause hold the whole case and cancel its pending commands. A
promise not paid by its date plus the grace days, or an instalment missed by more than the grace
days, is broken and resumes the ladder at once with the next step. Paying everything closes the
case and cancels whatever it had not executed.

The shell calls `evolve` for every fact (`fact_of` builds one from an envelope), then `decide` for
the cases `due_cases` returns, after each batch of facts and on every business day; it stores the
case (`dump_case` / `load_case`) and publishes what `decide` returned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

from contracts.channels import Channel
from contracts.collections import (
    Action,
    AgencyOutcome,
    CaseChange,
    CaseEvent,
    CaseNote,
    CollectionCommand,
    CommandCancelled,
    CommandItem,
    ContactResult,
    DisputeChanged,
    HoldChanged,
    HoldKind,
    InputRef,
    PaymentPlanAgreed,
    PromiseToPay,
)
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.money import Money, format_major
from contracts.policy import DEBTOR_FACING, DailyWindow, DunningPolicy, LadderStep, Penalty, PolicyPublished
from contracts.receivables import ReceivableBalance, ReceivableStatus
from services.dunning import penalties
from services.dunning.agencies import (
    UNSCORED,
    AgencyKey,
    AgencyPerformance,
    amount_band,
    choose_agency,
)
from services.dunning.pressure import cap_release, permitted_channels, send_window

CaseStatus = Literal["open", "held", "closed"]

PAYMENT_CAUSES = frozenset({"ar.payment.received.v1", "ar.payment.allocated.v1", "ar.payment.reversed.v1"})
"""Journal types whose balance changes are the debtor's payments (promises and plans count them)."""

DISPUTE_OPENED = "ar.dispute.opened.v1"
HOLD_PLACED = "ar.hold.placed.v1"
RECALL_STEP = "agency_recall"
TIMELINE_LIMIT = 500
INPUTS_LIMIT = 50
_IDS = uuid.UUID("8f5b8f5e-4a0e-4c1e-9a57-3f1f0c2d6a11")

CaseInput = (
    ReceivableBalance
    | ContactResult
    | PromiseToPay
    | DisputeChanged
    | PaymentPlanAgreed
    | HoldChanged
    | CaseNote
    | AgencyOutcome
)


# --- state --------------------------------------------------------------------------------------


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
    refs: tuple[InputRef, ...] = ()
    """Provenance of the contact records applied since the last decision."""

    @property
    def case_id(self) -> str:
        return case_id(self.debtor_id, self.currency)

    @property
    def disputed(self) -> frozenset[str]:
        return frozenset(self.disputes.values())

    def open_items(self) -> list[Item]:
        return sorted(self.items.values(), key=lambda i: (i.due_date, i.issue_date, i.invoice_id))

    def eligible_items(self) -> list[Item]:
        """Open items that may be part of a command: not disputed."""
        disputed = self.disputed
        return [i for i in self.open_items() if i.invoice_id not in disputed]

    def overdue(self, day: dt.date) -> int:
        return sum(i.outstanding for i in self.items.values() if i.days_past_due(day) > 0)


_CASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Case))
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
        case PromiseToPay():
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


def command_id(case: Case, step: str, business_date: dt.date, *parts: str) -> str:
    """Deterministic: the same case, round, step and date give the same id on every replay."""
    name = "|".join((case.tenant_id, case.case_id, str(case.round), step, business_date.isoformat(), *parts))
    return str(uuid.uuid5(_IDS, name))


def cancellation_id(tenant_id: str, cancelled_command_id: str) -> str:
    """Envelope id of the cancellation of a command."""
    return str(uuid.uuid5(_IDS, f"{tenant_id}|cancel|{cancelled_command_id}"))


def case_event_id(tenant_id: str, event: CaseEvent) -> str:
    """Envelope id of a case event: one per case and version."""
    return str(uuid.uuid5(_IDS, f"{tenant_id}|{event.case_id}|{event.version}"))


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
    return "held" if _case_holds(case, day) else "open"


def _case_holds(case: Case, day: dt.date) -> list[str]:
    """Why the whole case is held on `day`, if it is."""
    holds = sorted(case.holds.values(), key=lambda h: h.hold_id)
    reasons = [f"{h.kind} hold {h.hold_id}" for h in holds if h.until is None or day <= h.until]
    if case.promise is not None:
        reasons.append(f"promise to pay {case.promise.promise_id} by {case.promise.promised_date}")
    if case.plan is not None:
        reasons.append(f"payment plan {case.plan.plan_id}")
    return reasons


# --- evolve -------------------------------------------------------------------------------------


@dataclass
class _Changes:
    """Case events being built (change, detail, agency, step) and timeline lines."""

    day: dt.date
    inputs: list[InputRef]
    events: list[tuple[CaseChange, str | None, str | None, str | None]] = field(default_factory=list)
    timeline: list[Entry] = field(default_factory=list)
    needs_decision: bool = False

    def add(
        self,
        change: CaseChange,
        detail: str | None = None,
        agency_id: str | None = None,
        step: str | None = None,
    ) -> int:
        """Add a case event; returns how many events this change set holds now."""
        self.events.append((change, detail, agency_id, step))
        self.timeline.append(Entry(self.day, change, detail or change))
        return len(self.events)

    def note(self, kind: str, detail: str) -> None:
        self.timeline.append(Entry(self.day, kind, detail))


def evolve(case: Case, fact: Fact) -> tuple[Case, list[CaseEvent]]:
    """Apply one fact to the case. A fact for another currency or another case changes nothing."""
    data = fact.data
    fact_currency = currency_of(fact)
    if fact_currency is not None and fact_currency != case.currency:
        return case, []
    if isinstance(data, (ContactResult, AgencyOutcome)) and data.case_id != case.case_id:
        return case, []
    day = _fact_date(case, fact)
    changes = _Changes(day, [fact.ref] if fact.ref else [])
    match data:
        case ReceivableBalance():
            after = _balance(case, data, fact.ref, changes)
        case ContactResult():
            after = _contact_result(case, data, changes)
        case PromiseToPay():
            after = _promise(case, data, fact.ref, changes)
        case DisputeChanged():
            after = _dispute(case, data, fact.type == DISPUTE_OPENED, changes)
        case PaymentPlanAgreed():
            after = _plan(case, data, fact.ref, changes)
        case HoldChanged():
            after = _hold(case, data, fact.type == HOLD_PLACED, changes)
        case CaseNote():
            changes.add("note", data.text[:2000])
            after = case
        case AgencyOutcome():
            after = _agency_outcome(case, data, changes)
    if after == case and not changes.timeline:
        return case, []
    refs = case.refs if isinstance(data, ReceivableBalance) or fact.ref is None else (*case.refs, fact.ref)
    after = replace(after, as_of=max(case.as_of or day, day), refs=refs[-INPUTS_LIMIT:])
    if changes.needs_decision or isinstance(data, (ReceivableBalance, PromiseToPay, PaymentPlanAgreed)):
        after = replace(after, next_action_date=min(case.next_action_date or day, day))
    return _emit(after, changes, policy_version=None)


def _fact_date(case: Case, fact: Fact) -> dt.date:
    data = fact.data
    if isinstance(data, ReceivableBalance):
        return data.effective_date
    if isinstance(
        data, (PromiseToPay, DisputeChanged, PaymentPlanAgreed, HoldChanged, CaseNote, AgencyOutcome)
    ):
        return data.recorded.business_date
    return case.as_of or dt.date.min


def _balance(case: Case, fact: ReceivableBalance, ref: InputRef | None, changes: _Changes) -> Case:
    was_open = bool(case.items)
    previous = case.items.get(fact.invoice_id)
    history = previous.changes if previous else ()
    items = dict(case.items)
    status: ReceivableStatus = fact.status
    if status == "open" and fact.outstanding.amount_minor > 0:
        items[fact.invoice_id] = Item(
            invoice_id=fact.invoice_id,
            issue_date=fact.issue_date,
            due_date=fact.due_date,
            amount=fact.amount.amount_minor,
            outstanding=fact.outstanding.amount_minor,
            changes=_add_change(history, fact.effective_date, fact.change.amount_minor),
            ref=ref,
        )
    else:
        items.pop(fact.invoice_id, None)
    paid = case.paid - fact.change.amount_minor if fact.cause_type in PAYMENT_CAUSES else case.paid
    after = replace(
        case,
        items=items,
        paid=paid,
        reminded=frozenset(r for r in case.reminded if r[1] in items),
        recalculate=case.recalculate or (fact.change.amount_minor < 0 and bool(items)),
    )
    label = f"invoice {fact.invoice_id}: {_amount(fact.outstanding.amount_minor, case.currency)} outstanding"
    changes.note(fact.status, label)
    if not was_open and items:
        changes.add("opened", label)
    if paid > case.paid and after.placement is not None:
        after = replace(after, placement=replace(after.placement, last_recovery_on=fact.effective_date))
    if after.promise is not None and (paid - after.promise.paid_before >= after.promise.amount):
        changes.add("promise_kept", f"promise {after.promise.promise_id} paid")
        after = replace(after, promise=None)
    if after.plan is not None and (paid - after.plan.paid_before >= after.plan.total):
        changes.add("plan_completed", f"payment plan {after.plan.plan_id} paid")
        after = replace(after, plan=None)
    if was_open and not items:
        changes.add("closed", "nothing outstanding")
        after = replace(after, promise=None, plan=None)
    return after


def _add_change(
    history: tuple[tuple[dt.date, int], ...], day: dt.date, delta: int
) -> tuple[tuple[dt.date, int], ...]:
    merged = dict(history)
    merged[day] = merged.get(day, 0) + delta
    return tuple(sorted((d, v) for d, v in merged.items() if v))


def _contact_result(case: Case, result: ContactResult, changes: _Changes) -> Case:
    finished = result.outcome in ("delivered", "skipped") or (result.outcome == "failed" and result.permanent)
    reached = not (result.outcome == "skipped" or (result.outcome == "failed" and result.permanent))
    detail = f"{result.command_id} {result.outcome}" + (f" on {result.channel}" if result.channel else "")
    changes.note(f"contact_{result.outcome}", detail + (f": {result.reason}" if result.reason else ""))
    pending = dict(case.pending)
    if finished:
        pending.pop(result.command_id, None)
    contacts = (
        dict(case.contacts) if reached else {k: v for k, v in case.contacts.items() if k != result.command_id}
    )
    after = replace(case, pending=pending, contacts=contacts)
    placement = case.placement
    if placement is not None and placement.command_id == result.command_id and not reached:
        reason = f": {result.reason}" if result.reason else ""
        changes.add(
            "recalled", f"placement with {placement.agency_id} not delivered{reason}", placement.agency_id
        )
        # A placement the notifier skipped is tried again; one that failed for good goes elsewhere.
        tried = case.agencies_tried + ((placement.agency_id,) if result.outcome == "failed" else ())
        after = replace(after, placement=None, place_again_on=changes.day, agencies_tried=tried)
        changes.needs_decision = True
    return after


def _promise(case: Case, promise: PromiseToPay, ref: InputRef | None, changes: _Changes) -> Case:
    if promise.amount.amount_minor <= 0:
        changes.note("ignored", f"promise {promise.promise_id} without an amount")
        return case
    made = Promise(
        promise_id=promise.promise_id,
        amount=promise.amount.amount_minor,
        promised_date=promise.promised_date,
        recorded_on=promise.recorded.business_date,
        paid_before=case.paid,
        ref=ref,
    )
    changes.add(
        "promise_recorded",
        f"promise {promise.promise_id}: {_amount(made.amount, case.currency)} by {made.promised_date}"
        f" (recorded by {promise.recorded.recorded_by})",
    )
    return replace(case, promise=made)


def _dispute(case: Case, dispute: DisputeChanged, opened: bool, changes: _Changes) -> Case:
    known = dispute.invoice_id in case.items
    if opened:
        disputes = {**case.disputes, dispute.dispute_id: dispute.invoice_id}
        detail = f"invoice {dispute.invoice_id} disputed ({dispute.dispute_id})"
    else:
        disputes = {k: v for k, v in case.disputes.items() if k != dispute.dispute_id}
        detail = f"dispute {dispute.dispute_id} on invoice {dispute.invoice_id} resolved"
    if known:
        changes.add("held" if opened else "resumed", detail)
        changes.needs_decision = True
    return replace(case, disputes=disputes)


def _plan(case: Case, plan: PaymentPlanAgreed, ref: InputRef | None, changes: _Changes) -> Case:
    agreed = Plan(
        plan_id=plan.plan_id,
        instalments=tuple((i.due_date, i.amount.amount_minor) for i in plan.instalments),
        agreed_on=plan.recorded.business_date,
        paid_before=case.paid,
        ref=ref,
    )
    changes.add(
        "plan_agreed",
        f"payment plan {plan.plan_id}: {len(agreed.instalments)} instalments of "
        f"{_amount(agreed.total, case.currency)} in all, the last on {agreed.instalments[-1][0]}",
    )
    return replace(case, plan=agreed, promise=None)


def _hold(case: Case, hold: HoldChanged, placed: bool, changes: _Changes) -> Case:
    if placed:
        held = Hold(hold.hold_id, hold.kind, hold.recorded.business_date, hold.until, hold.reason)
        until = f" until {hold.until}" if hold.until else ""
        reason = f": {hold.reason}" if hold.reason else ""
        changes.add("held", f"{hold.kind} hold {hold.hold_id}{until}{reason}")
        changes.needs_decision = True
        return replace(case, holds={**case.holds, hold.hold_id: held})
    if hold.hold_id not in case.holds:
        return case
    changes.add("resumed", f"{hold.kind} hold {hold.hold_id} released")
    changes.needs_decision = True
    return replace(case, holds={k: v for k, v in case.holds.items() if k != hold.hold_id})


def _agency_outcome(case: Case, outcome: AgencyOutcome, changes: _Changes) -> Case:
    placement = case.placement
    detail = f"agency {outcome.agency_id}: {outcome.kind}"
    if outcome.amount_recovered is not None:
        detail += f" {_amount(outcome.amount_recovered.amount_minor, outcome.amount_recovered.currency)}"
    if outcome.detail:
        detail += f": {outcome.detail}"
    if placement is None or placement.agency_id != outcome.agency_id:
        changes.note("ignored", f"{detail} (the case is not placed with it)")
        return case
    changes.add("note", detail, agency_id=placement.agency_id)
    recovered = outcome.amount_recovered
    if outcome.kind != "recovered" or recovered is None or recovered.currency != case.currency:
        return case
    return replace(
        case,
        placement=replace(
            placement,
            recovered=placement.recovered + recovered.amount_minor,
            last_recovery_on=outcome.recorded.business_date,
        ),
    )


def _emit(case: Case, changes: _Changes, policy_version: int | None) -> tuple[Case, list[CaseEvent]]:
    """Number the changes as case events (one version each), with the case's state after them."""
    status = status_on(case, changes.day)
    overdue = Money(amount_minor=case.overdue(changes.day), currency=case.currency)
    events = [
        CaseEvent(
            case_id=case.case_id,
            change=change,
            business_date=changes.day,
            version=case.version + index,
            overdue=overdue,
            step=step or case.step,
            status=status,
            agency_id=agency_id or (case.placement.agency_id if case.placement else None),
            next_action_date=case.next_action_date,
            detail=detail[:2000] if detail else None,
            policy_version=policy_version,
            inputs=changes.inputs[:INPUTS_LIMIT],
        )
        for index, (change, detail, agency_id, step) in enumerate(changes.events, start=1)
    ]
    timeline = (*case.timeline, *changes.timeline)[-TIMELINE_LIMIT:]
    return replace(case, version=case.version + len(events), status=status, timeline=timeline), events


def _amount(amount_minor: int, currency: str) -> str:
    return f"{format_major(amount_minor, currency)} {currency}"


# --- decide -------------------------------------------------------------------------------------


def decide(
    case: Case,
    business_date: dt.date,
    policy: PolicyPublished,
    facts: DebtorFacts | None = None,
    *,
    tick: InputRef | None = None,
) -> Decision:
    """What to do about the case on `business_date` under `policy`; `tick` is the clock record that
    asked (provenance). Deciding twice on the same date emits nothing the second time."""
    facts = facts or DebtorFacts()
    if case.currency in facts.segments:
        facts = replace(facts, segment=facts.segments[case.currency])
    work = _Decider(case, business_date, policy, facts, tick)
    work.replanned()
    work.expire_holds()
    work.check_promise()
    work.check_plan()
    if not work.case.items:
        work.close()
    elif reasons := _case_holds(work.case, business_date):
        work.cancel_unwanted("held: " + "; ".join(reasons))
        work.wait_for_holds()
    else:
        work.cancel_settled()
        work.cancel_disputed()
        work.check_placement()
        work.start_over_if_cured()
        work.courtesy_reminders()
        work.ladder()
        work.place_again()
    work.recalculated()
    return work.finish()


def decide_debtor(
    cases: Sequence[Case],
    business_date: dt.date,
    policy: PolicyPublished,
    facts: DebtorFacts | None = None,
    *,
    tick: InputRef | None = None,
) -> list[Decision]:
    """`decide` for all cases of one debtor (one per currency), in case id order, so that contact
    caps count every contact with the debtor."""
    base = facts or DebtorFacts()
    current = {c.case_id: c for c in cases}
    decisions = []
    for key in sorted(current):
        elsewhere = [d for k, c in current.items() if k != key for d in c.contacts.values()]
        decision = decide(
            current[key],
            business_date,
            policy,
            replace(base, contacts_elsewhere=(*base.contacts_elsewhere, *elsewhere)),
            tick=tick,
        )
        current[key] = decision.case
        decisions.append(decision)
    return decisions


class _Decider:
    """One decision being built: the case as it moves, and what to publish."""

    def __init__(
        self, case: Case, day: dt.date, policy: PolicyPublished, facts: DebtorFacts, tick: InputRef | None
    ) -> None:
        self.case = case
        self.start = case
        self.day = day
        self.policy = policy
        self.doc: DunningPolicy = policy.document
        self.facts = facts
        self.tick = tick
        self.changes = _Changes(day, self.provenance(case.refs))
        self.commands: list[CollectionCommand] = []
        self.broken: list[InputRef | None] = []
        """The promise or plan whose breaking escalates: provenance of the commands."""
        self.cancellations: list[CommandCancelled] = []
        self.dates: list[dt.date] = []
        profile = facts.profile
        self.timezone = profile.timezone if profile else "UTC"
        self.language = profile.language if profile else "en"

    # -- bookkeeping

    def provenance(self, refs: Iterable[InputRef | None]) -> list[InputRef]:
        seen: dict[tuple[str, int, int, str], InputRef] = {}
        for ref in (self.tick, *refs):
            if ref is not None:
                seen.setdefault((ref.topic, ref.partition, ref.offset, ref.event_id), ref)
        return list(seen.values())[:INPUTS_LIMIT]

    def later(self, day: dt.date | None) -> None:
        if day is not None:
            self.dates.append(max(day, self.day + dt.timedelta(days=1)))

    def cancel(self, which: Callable[[Pending], bool], reason: str) -> None:
        before = self.case.pending
        pending = dict(before)
        contacts = dict(self.case.contacts)
        # Sorted, so that a case stored without key order (JSONB) cancels in the same order.
        for command_id_, command in sorted(before.items(), key=lambda p: (p[1].business_date, p[0])):
            if not which(command):
                continue
            self.cancellations.append(
                CommandCancelled(
                    command_id=command_id_,
                    case_id=self.case.case_id,
                    business_date=self.day,
                    reason=reason[:500],
                )
            )
            self.changes.note("cancelled", f"{command.step} {command_id_}: {reason}")
            pending.pop(command_id_)
            contacts.pop(command_id_, None)
        self.case = replace(self.case, pending=pending, contacts=contacts)
        placement = self.case.placement
        cancelled = set(before) - set(pending)
        if placement is not None and placement.command_id in cancelled:
            # The agency never heard of the case: place it again once the ladder may.
            detail = f"placement with {placement.agency_id} cancelled: {reason}"
            self.changes.add("recalled", detail, placement.agency_id)
            self.case = replace(self.case, placement=None, place_again_on=self.day)

    def cancel_unwanted(self, reason: str) -> None:
        """Cancel everything pending but recalls: an agency must hear that the case left it."""
        self.cancel(lambda p: p.action != "recall_from_agency", reason)

    def cancel_settled(self) -> None:
        """Cancel pending commands none of whose invoices is still open."""
        open_items = set(self.case.items)
        self.cancel(
            lambda p: p.action != "recall_from_agency" and not open_items.intersection(p.invoice_ids),
            "paid",
        )

    # -- holds, promises, plans, agencies

    def replanned(self) -> None:
        planned_under = self.case.planned_under
        if planned_under is not None and planned_under != self.policy.version and self.case.items:
            detail = f"policy version {self.policy.version} in force: planned again (was {planned_under})"
            self.changes.note("replanned", detail)

    def expire_holds(self) -> None:
        expired = [h for h in self.case.holds.values() if h.until is not None and h.until < self.day]
        for hold in sorted(expired, key=lambda h: h.hold_id):
            self.changes.add("resumed", f"{hold.kind} hold {hold.hold_id} expired on {hold.until}")
        if expired:
            gone = {h.hold_id for h in expired}
            self.case = replace(self.case, holds={k: v for k, v in self.case.holds.items() if k not in gone})

    def check_promise(self) -> None:
        promise = self.case.promise
        if promise is None:
            return
        deadline = promise.promised_date + dt.timedelta(days=self.doc.promise_grace_days)
        if self.day <= deadline:
            return
        paid = self.case.paid - promise.paid_before
        if paid >= promise.amount or self.case.overdue(self.day) == 0:
            self.changes.add("promise_kept", f"promise {promise.promise_id} kept")
            self.case = replace(self.case, promise=None)
            return
        self.broken.append(promise.ref)
        self.changes.inputs = self.provenance([*self.changes.inputs, promise.ref])
        self.changes.add(
            "promise_broken",
            f"promise {promise.promise_id} of {_amount(promise.amount, self.case.currency)} by "
            f"{promise.promised_date}: {_amount(max(paid, 0), self.case.currency)} paid; escalation resumes",
        )
        self.case = replace(self.case, promise=None, escalate_now=True)

    def check_plan(self) -> None:
        plan = self.case.plan
        if plan is None:
            return
        paid = self.case.paid - plan.paid_before
        due = 0
        for due_date, amount in plan.instalments:
            due += amount
            if paid < due and self.day > due_date + dt.timedelta(days=self.doc.plan_grace_days):
                self.broken.append(plan.ref)
                self.changes.inputs = self.provenance([*self.changes.inputs, plan.ref])
                self.changes.add(
                    "plan_broken",
                    f"payment plan {plan.plan_id}: the instalment due {due_date} is unpaid "
                    f"({_amount(max(paid, 0), self.case.currency)} of {_amount(due, self.case.currency)} "
                    "paid); escalation resumes",
                )
                self.case = replace(self.case, plan=None, escalate_now=True)
                return

    def check_placement(self) -> None:
        placement = self.case.placement
        rules = self.doc.agency
        if placement is None or rules is None:
            return
        recall_on = (placement.last_recovery_on or placement.placed_on) + dt.timedelta(
            days=rules.recall_after_days
        )
        if self.day < recall_on:
            return
        self.recall(f"no recovery for {rules.recall_after_days} days")
        if rules.replace_on_recall:
            self.case = replace(self.case, place_again_on=self.day + dt.timedelta(days=1))

    def recall(self, reason: str) -> None:
        placement = self.case.placement
        assert placement is not None
        items = self.case.eligible_items()
        version = self.changes.add(
            "recalled", f"recalled from {placement.agency_id}: {reason}", placement.agency_id, RECALL_STEP
        )
        self.command(
            action="recall_from_agency",
            step=RECALL_STEP,
            channels=["webhook"],
            template=RECALL_STEP,
            items=items,
            version=version,
            id_parts=(placement.agency_id,),
            agency_id=placement.agency_id,
        )
        self.case = replace(
            self.case, placement=None, agencies_tried=(*self.case.agencies_tried, placement.agency_id)
        )

    def wait_for_holds(self) -> None:
        case = self.case
        for hold in case.holds.values():
            self.later(hold.until + dt.timedelta(days=1) if hold.until else None)
        if case.promise is not None:
            grace = dt.timedelta(days=self.doc.promise_grace_days + 1)
            self.later(case.promise.promised_date + grace)
        if case.plan is not None:
            paid, due = case.paid - case.plan.paid_before, 0
            for due_date, amount in case.plan.instalments:
                due += amount
                if paid < due:
                    self.later(due_date + dt.timedelta(days=self.doc.plan_grace_days + 1))
                    break

    def close(self) -> None:
        self.cancel(lambda _: True, "nothing outstanding")
        self.case = replace(
            self.case,
            step=None,
            step_days=None,
            executed_on=None,
            executed_days=None,
            round=self.case.round + (1 if self.case.step is not None else 0),
            reminded=frozenset(),
            promise=None,
            plan=None,
            placement=None,
            place_again_on=None,
            escalate_now=False,
            recalculate=False,
        )

    def cancel_disputed(self) -> None:
        disputed = self.case.disputed
        if disputed:
            self.cancel(
                lambda p: p.action != "recall_from_agency" and bool(disputed.intersection(p.invoice_ids)),
                "disputed: " + ", ".join(sorted(disputed)),
            )

    def start_over_if_cured(self) -> None:
        case = self.case
        if case.step is None or any(i.days_past_due(self.day) > 0 for i in case.items.values()):
            return
        self.changes.add("recalculated", "nothing is overdue any more: the ladder starts over")
        self.case = replace(
            case,
            step=None,
            step_days=None,
            executed_on=None,
            executed_days=None,
            round=case.round + 1,
            escalate_now=False,
        )

    # -- the ladder

    def shift(self, overdue: int) -> int:
        tiers = self.doc.tiers
        band = amount_band(tiers, self.case.currency, overdue)
        bands = {b.name: b.shift_days for b in tiers.amount_bands.get(self.case.currency, [])}
        return bands.get(band, 0) + tiers.segment_shifts.get(self.facts.segment or UNSCORED, 0)

    def contact_block(self) -> dt.date | None:
        made = [*self.case.contacts.values(), *self.facts.contacts_elsewhere]
        return cap_release(self.doc.contact_caps, made, self.day)

    def courtesy_reminders(self) -> None:
        for step in (s for s in self.doc.steps if s.days <= 0):
            lead = dt.timedelta(days=-step.days)
            fresh = [
                i
                for i in self.case.eligible_items()
                if (step.name, i.invoice_id) not in self.case.reminded and i.due_date >= self.day
            ]
            items = [i for i in fresh if i.due_date - lead <= self.day]
            for waiting in fresh:
                if waiting.due_date - lead > self.day:
                    self.later(waiting.due_date - lead)
            if not items:
                continue
            total = sum(i.outstanding for i in items)
            reminded = self.case.reminded | {(step.name, i.invoice_id) for i in items}
            if total < step.min_overdue.get(self.case.currency, 0):
                self.changes.note(
                    "passed", f"{step.name}: {_amount(total, self.case.currency)} is below its minimum"
                )
                self.case = replace(self.case, reminded=reminded)
                continue
            if (release := self.contact_block()) is not None:
                self.changes.note("deferred", f"{step.name}: contact cap reached until {release}")
                self.later(release)
                continue
            channels = permitted_channels(self.doc, self.facts.profile, step.channels)
            self.case = replace(self.case, reminded=reminded)
            if not channels:
                self.changes.note("passed", f"{step.name}: no consented channel")
                continue
            version = self.changes.add(
                "escalated", f"{step.name}: {len(items)} invoice(s) fall due soon", step=step.name
            )
            self.step_command(step, items, channels, version, id_parts=tuple(i.invoice_id for i in items))

    def ladder(self) -> None:
        steps = [s for s in self.doc.steps if s.days > 0]
        index = self.next_index(steps)
        while index < len(steps):
            step = steps[index]
            eligible = self.case.eligible_items()
            if not eligible:
                return
            overdue = [i for i in eligible if i.days_past_due(self.day) > 0]
            amount = sum(i.outstanding for i in overdue)
            due_on = self.due_on(step, eligible)
            executed_on = self.case.executed_on
            if executed_on is not None and step.days == self.case.executed_days:
                due_on = executed_on  # steps of one day go together
            elif executed_on is not None:
                due_on = max(due_on, executed_on + dt.timedelta(days=self.doc.min_days_between_steps))
            if self.case.escalate_now and overdue:
                due_on = self.day
            elif step.action == "propose_writeoff" and self.case.currency in self.facts.write_off_proposed:
                # Scoring finds that recovering this debt costs more than it returns: review it as
                # soon as the steps before allow, keeping only the spacing between steps.
                spacing = dt.timedelta(days=self.doc.min_days_between_steps)
                due_on = min(due_on, max(self.day, executed_on + spacing) if executed_on else self.day)
            if due_on > self.day or not overdue:
                self.later(due_on)
                return
            if not self.take(step, overdue, amount):
                return
            index += 1

    def due_on(self, step: LadderStep, eligible: list[Item]) -> dt.date:
        """The first day from today on which the oldest eligible item is as many days past due as the
        step says, shifted by the band of the amount overdue on that day (as far as known today)."""
        anchor = eligible[0].due_date
        one = dt.timedelta(days=1)
        starts = sorted({self.day, *(i.due_date + one for i in eligible if i.due_date + one > self.day)})
        for index, start in enumerate(starts):
            amount = sum(i.outstanding for i in eligible if i.due_date < start)
            when = max(start, anchor + dt.timedelta(days=max(1, step.days + self.shift(amount))))
            if index + 1 == len(starts) or when < starts[index + 1]:
                return when
        raise AssertionError("unreachable: the last period is open-ended")

    def next_index(self, steps: list[LadderStep]) -> int:
        case = self.case
        if case.step is None:
            return 0
        names = [s.name for s in steps]
        if case.step in names:
            return names.index(case.step) + 1
        # The policy changed under the case: go on after the steps of the days already reached.
        return next((n for n, s in enumerate(steps) if s.days > (case.step_days or 0)), len(steps))

    def reach(self, step: LadderStep, *, executed: bool) -> None:
        self.case = replace(self.case, step=step.name, step_days=step.days)
        if executed:
            self.case = replace(self.case, executed_on=self.day, executed_days=step.days, escalate_now=False)

    def take(self, step: LadderStep, overdue: list[Item], amount: int) -> bool:
        """Execute (or pass over) a step that is due; False when it must wait."""
        minimum = step.min_overdue.get(self.case.currency, 0)
        if amount < minimum:
            detail = f"{step.name}: {_amount(amount, self.case.currency)} overdue is below its minimum"
            self.changes.note("passed", detail)
            self.reach(step, executed=False)
            return True
        if step.action in DEBTOR_FACING:
            return self.contact(step, overdue)
        if step.action == "place_with_agency":
            return self.place(step, overdue, amount)
        if step.action in ("start_legal_action", "propose_writeoff") and self.case.placement is not None:
            self.recall(f"escalating to {step.name}")
        version = self.changes.add(
            "escalated", f"{step.name}: {len(overdue)} overdue invoice(s)", step=step.name
        )
        self.step_command(step, overdue, list(step.channels), version)
        self.reach(step, executed=True)
        return True

    def contact(self, step: LadderStep, overdue: list[Item]) -> bool:
        placement = self.case.placement
        if placement is not None:
            # The agency works the case; the debtor hears from it, not from us, until a recall.
            self.changes.note("deferred", f"{step.name}: placed with {placement.agency_id}")
            return False
        if (release := self.contact_block()) is not None:
            self.changes.note("deferred", f"{step.name}: contact cap reached until {release}")
            self.later(release)
            return False
        channels = permitted_channels(self.doc, self.facts.profile, step.channels)
        if not channels:
            self.changes.note("passed", f"{step.name}: no consented channel")
            self.reach(step, executed=False)
            return True
        version = self.changes.add(
            "escalated", f"{step.name}: {len(overdue)} overdue invoice(s)", step=step.name
        )
        self.step_command(step, overdue, channels, version)
        self.reach(step, executed=True)
        return True

    def place(self, step: LadderStep, overdue: list[Item], amount: int) -> bool:
        if self.case.placement is not None:
            self.changes.note("passed", f"{step.name}: already placed with {self.case.placement.agency_id}")
            self.reach(step, executed=False)
            return True
        agency_id = self.choose_agency(amount)
        if agency_id is None:
            self.changes.note("passed", f"{step.name}: no eligible agency")
            self.reach(step, executed=False)
            return True
        self.placement(step, overdue, amount, agency_id)
        self.reach(step, executed=True)
        return True

    def choose_agency(self, amount: int) -> str | None:
        rules = self.doc.agency
        if rules is None:
            return None
        return choose_agency(
            rules,
            self.facts.agencies,
            segment=self.facts.segment or UNSCORED,
            currency=self.case.currency,
            band=amount_band(self.doc.tiers, self.case.currency, amount),
            exclude=self.case.agencies_tried,
        )

    def placement(self, step: LadderStep, overdue: list[Item], amount: int, agency_id: str) -> None:
        version = self.changes.add(
            "placed",
            f"{step.name}: placed with {agency_id}, {_amount(amount, self.case.currency)} overdue",
            agency_id,
            step.name,
        )
        command = self.step_command(step, overdue, list(step.channels), version, agency_id=agency_id)
        self.case = replace(
            self.case,
            placement=Placement(
                agency_id=agency_id,
                command_id=command.command_id,
                placed_on=self.day,
                step=step.name,
                overdue=amount,
                segment=self.facts.segment or UNSCORED,
                band=amount_band(self.doc.tiers, self.case.currency, amount),
            ),
            place_again_on=None,
        )

    def place_again(self) -> None:
        case = self.case
        if case.place_again_on is None or case.placement is not None:
            return
        if case.place_again_on > self.day:
            self.later(case.place_again_on)
            return
        overdue = [i for i in case.eligible_items() if i.days_past_due(self.day) > 0]
        step = next((s for s in self.doc.steps if s.action == "place_with_agency"), None)
        amount = sum(i.outstanding for i in overdue)
        agency_id = self.choose_agency(amount) if overdue and step is not None else None
        if step is None or agency_id is None:
            self.changes.note("passed", "no further agency to place the case with")
            self.case = replace(self.case, place_again_on=None)
            return
        self.placement(step, overdue, amount, agency_id)

    # -- commands

    def step_command(
        self,
        step: LadderStep,
        items: list[Item],
        channels: list[Channel],
        version: int,
        *,
        id_parts: tuple[str, ...] = (),
        agency_id: str | None = None,
    ) -> CollectionCommand:
        terms = self.doc.penalty if step.with_penalty else None
        discount = (
            sum(penalties.discount(i.outstanding, i.issue_date, self.day, self.doc.discounts) for i in items)
            if step.offer_discount
            else 0
        )
        return self.command(
            action=step.action,
            step=step.name,
            channels=channels,
            template=step.template,
            items=items,
            version=version,
            id_parts=id_parts,
            agency_id=agency_id,
            terms_of=terms,
            discount=discount,
            deadline=self.day + dt.timedelta(days=step.deadline_days) if step.deadline_days else None,
            window=(step.send_window or self.doc.send_window) if step.action in DEBTOR_FACING else None,
        )

    def command(
        self,
        *,
        action: Action,
        step: str,
        channels: list[Channel],
        template: str,
        items: list[Item],
        version: int,
        id_parts: tuple[str, ...] = (),
        agency_id: str | None = None,
        terms_of: Penalty | None = None,
        discount: int = 0,
        deadline: dt.date | None = None,
        window: DailyWindow | None = None,
    ) -> CollectionCommand:
        currency = self.case.currency
        command_items = []
        for item in items:
            accrued = (
                penalties.penalty(item.changes, item.due_date, item.outstanding, currency, self.day, terms_of)
                if terms_of is not None
                else None
            )
            command_items.append(
                CommandItem(
                    invoice_id=item.invoice_id,
                    issue_date=item.issue_date,
                    due_date=item.due_date,
                    outstanding=Money(amount_minor=item.outstanding, currency=currency),
                    days_past_due=item.days_past_due(self.day),
                    penalty=Money(amount_minor=accrued, currency=currency) if accrued is not None else None,
                )
            )
        send_after, send_before = send_window(window, self.timezone, self.day) if window else (None, None)
        penalty_total = sum(i.penalty.amount_minor for i in command_items if i.penalty is not None)
        command = CollectionCommand(
            command_id=command_id(self.case, step, self.day, *id_parts),
            case_id=self.case.case_id,
            action=action,
            step=step,
            channels=channels,
            template=template,
            language=self.language,
            business_date=self.day,
            case_version=self.start.version + version,
            items=command_items,
            total=Money(amount_minor=sum(i.outstanding for i in items), currency=currency),
            penalty=Money(amount_minor=penalty_total, currency=currency) if terms_of is not None else None,
            discount=Money(amount_minor=discount, currency=currency) if discount > 0 else None,
            deadline=deadline,
            agency_id=agency_id,
            send_after=send_after,
            send_before=send_before,
            policy_version=self.policy.version,
            inputs=self.provenance([*(i.ref for i in items), *self.case.refs, *self.broken]),
        )
        self.commands.append(command)
        pending = Pending(command.command_id, action, step, self.day, tuple(i.invoice_id for i in items))
        contacts = dict(self.case.contacts)
        if action in DEBTOR_FACING:
            contacts[command.command_id] = self.day
        self.case = replace(
            self.case, pending={**self.case.pending, command.command_id: pending}, contacts=contacts
        )
        return command

    # -- the end

    def recalculated(self) -> None:
        case = self.case
        if case.recalculate and case.items and not _case_holds(case, self.day):
            self.changes.add(
                "recalculated",
                f"paid down to {_amount(sum(i.outstanding for i in case.items.values()), case.currency)}",
            )
        self.case = replace(self.case, recalculate=False)

    def finish(self) -> Decision:
        placement, rules = self.case.placement, self.doc.agency
        if (
            placement is not None
            and rules is not None
            and self.case.items
            and not _case_holds(self.case, self.day)
        ):
            last = placement.last_recovery_on or placement.placed_on
            self.later(last + dt.timedelta(days=rules.recall_after_days))
        longest = max((c.period_days for c in self.doc.contact_caps), default=0)
        horizon = self.day - dt.timedelta(days=longest)
        case = replace(
            self.case,
            next_action_date=min(self.dates, default=None),
            planned_under=self.policy.version,
            as_of=max(self.case.as_of or self.day, self.day),
            refs=(),
            contacts={k: v for k, v in self.case.contacts.items() if v > horizon or k in self.case.pending},
        )
        case, events = _emit(case, self.changes, self.policy.version)
        return Decision(case, tuple(self.commands), tuple(self.cancellations), tuple(events))


# --- storage ------------------------------------------------------------------------------------

_CASE = TypeAdapter(Case)


def dump_case(case: Case) -> dict[str, Any]:
    """The case as JSON-ready data, for the shell's store."""
    dumped: dict[str, Any] = _CASE.dump_python(case, mode="json")
    return dumped


def load_case(raw: Mapping[str, Any]) -> Case:
    """The case `dump_case` gave."""
    return _CASE.validate_python(raw)


def load_case_json(raw: bytes | str) -> Case:
    """The case `dump_case` gave, encoded as JSON: the same case as `load_case(json.loads(raw))`,
    parsed and validated in one pass (a third faster)."""
    return _CASE.validate_json(raw)
