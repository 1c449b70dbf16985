"""What dunning decides and what the collection side records: commands, case events, contacts.

Commands (`collections.commands.v1`) are executed by the notifier; case events
(`collections.cases.v1`) tell everyone how a case moved; contact records (`ar.contacts.v1`) are the
outcomes of contacts and what collectors and agencies agree with a debtor.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal, Self

from pydantic import AwareDatetime, Field, field_validator, model_validator

from contracts.channels import Channel
from contracts.envelope import CaseId, EventData, Fragment, Identifier
from contracts.money import CurrencyCode, Money, positive
from contracts.scalars import (
    MAX_DAYS,
    MAX_INT32,
    MAX_INT64,
    BusinessDate,
    Language,
    Line,
    QuotedText,
    Text,
    Version,
)
from contracts.topics import CASES, COMMANDS, CONTACTS

Action = Literal[
    "send_reminder",
    "formal_notice",
    "claim_letter",
    "schedule_call",
    "request_credit_hold",
    "place_with_agency",
    "recall_from_agency",
    "start_legal_action",
    "propose_writeoff",
    "escalate_dispute",
]
ACTIONS: tuple[Action, ...] = (
    "send_reminder",
    "formal_notice",
    "claim_letter",
    "schedule_call",
    "request_credit_hold",
    "place_with_agency",
    "recall_from_agency",
    "start_legal_action",
    "propose_writeoff",
    "escalate_dispute",
)


def command_type(action: Action) -> str:
    return f"collections.command.{action}.v1"


COMMAND_CANCELLED = "collections.command.cancelled.v1"


class InputRef(Fragment):
    """A record a decision was made from: the answer to "why was this sent?"."""

    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partition: int = Field(ge=0, le=MAX_INT32)
    offset: int = Field(ge=0, le=MAX_INT64)
    event_id: Identifier


class CommandItem(Fragment):
    """One overdue invoice a command concerns."""

    invoice_id: Identifier
    issue_date: BusinessDate
    due_date: BusinessDate
    outstanding: Money
    days_past_due: int = Field(ge=-MAX_DAYS, le=MAX_DAYS)
    penalty: Money | None = Field(default=None, description="Late-payment penalty accrued on this item")


class CollectionCommand(EventData):
    """One escalation step for one debtor and currency, listing every overdue item it concerns."""

    TYPES: ClassVar[tuple[str, ...]] = tuple(command_type(a) for a in ACTIONS)
    TOPIC: ClassVar[str] = COMMANDS.name

    command_id: Identifier
    case_id: CaseId
    action: Action
    step: Line = Field(min_length=1, max_length=64, description="The policy ladder step's name")
    channels: list[Channel] = Field(
        description="In order of preference; the notifier uses the first that works"
    )
    template: Line = Field(min_length=1, max_length=128)
    language: Language = Field(default="en", description="BCP 47 language of the debtor")
    business_date: BusinessDate = Field(description="The business day the command was decided on")
    case_version: int = Field(
        ge=0, le=MAX_INT32, description="The case's version it was decided from (for the last look)"
    )
    items: list[CommandItem] = Field(default_factory=list)
    total: Money = Field(description="Sum of the items' outstanding amounts")
    penalty: Money | None = None
    discount: Money | None = Field(default=None, description="Early-payment discount on offer, if any")
    costs: Money | None = Field(
        default=None, description="Recovery costs claimed besides the penalty (claim letter, final demand)"
    )
    deadline: dt.date | None = Field(
        default=None, description="Pay by this date (claim letter, final demand)"
    )
    agency_id: Identifier | None = None
    agency_name: Line | None = Field(
        default=None, max_length=200, description="The agency's name in the policy, for the debtor's notice"
    )
    assignee: Line | None = Field(
        default=None, max_length=200, description="Who a task is for (a dispute's owner); none: the team"
    )
    send_after: AwareDatetime | None = Field(
        default=None, description="Not before this moment: the end of quiet hours in the debtor's time zone"
    )
    send_before: AwareDatetime | None = Field(
        default=None, description="Not after this moment: the start of the next quiet hours"
    )
    policy_version: Version
    inputs: list[InputRef] = Field(default_factory=list, description="Provenance of the decision")
    bundle: list[Identifier] = Field(
        default_factory=list,
        max_length=64,
        description="The command ids, sorted, of all commands (this one among them) that reach the debtor "
        "as one message: the debtor's cases in other currencies contacting them on the same business day "
        "on the same channels. Empty: a message of its own",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if any(i.outstanding.currency != self.total.currency for i in self.items):
            raise ValueError("every item must be in the command's currency")
        if self.bundle and (self.command_id not in self.bundle or self.bundle != sorted(set(self.bundle))):
            raise ValueError("a bundle lists its members' command ids, sorted, this command's among them")
        return self


class CommandCancelled(EventData):
    """A command not yet executed is no longer wanted (payment, hold, case closed)."""

    TYPES: ClassVar[tuple[str, ...]] = (COMMAND_CANCELLED,)
    TOPIC: ClassVar[str] = COMMANDS.name

    command_id: Identifier
    case_id: CaseId
    business_date: BusinessDate
    reason: Text = Field(max_length=500)


CaseChange = Literal[
    "opened",
    "escalated",
    "recalculated",
    "held",
    "resumed",
    "promise_recorded",
    "promise_kept",
    "promise_broken",
    "plan_agreed",
    "plan_broken",
    "plan_completed",
    "placed",
    "recalled",
    "note",
    "closed",
    "notified",
    "discount_granted",
    "rest_forgiven",
]
CASE_CHANGES: tuple[CaseChange, ...] = (
    "opened",
    "escalated",
    "recalculated",
    "held",
    "resumed",
    "promise_recorded",
    "promise_kept",
    "promise_broken",
    "plan_agreed",
    "plan_broken",
    "plan_completed",
    "placed",
    "recalled",
    "note",
    "closed",
    "notified",
    "discount_granted",
    "rest_forgiven",
)


def case_type(change: CaseChange) -> str:
    return f"collections.case.{change}.v1"


class CaseEvent(EventData):
    """How a collection case moved, with the state after the move."""

    TYPES: ClassVar[tuple[str, ...]] = tuple(case_type(c) for c in CASE_CHANGES)
    TOPIC: ClassVar[str] = CASES.name

    case_id: CaseId
    change: CaseChange
    business_date: BusinessDate
    version: int = Field(ge=0, le=MAX_INT32)
    overdue: Money
    step: Line | None = Field(default=None, max_length=64)
    status: Literal["open", "held", "closed"]
    agency_id: Identifier | None = None
    next_action_date: dt.date | None = Field(
        default=None, description="A business date plus the policy's days (so not bounded like one)"
    )
    detail: Text | None = Field(default=None, max_length=2000)
    policy_version: Version | None = None
    inputs: list[InputRef] = Field(default_factory=list)


ContactOutcome = Literal["attempted", "delivered", "failed", "skipped", "deferred"]


class ContactResult(EventData):
    """What became of one command on one channel. `skipped` is the notifier's last look saying no;
    `deferred` says it waits for the send window of the debtor's time zone (until `not_before`)."""

    TYPES: ClassVar[tuple[str, ...]] = tuple(
        f"ar.contact.{o}.v1" for o in ("attempted", "delivered", "failed", "skipped", "deferred")
    )
    TOPIC: ClassVar[str] = CONTACTS.name

    command_id: Identifier
    case_id: CaseId
    outcome: ContactOutcome
    channel: Channel | None = None
    reason: QuotedText | None = Field(default=None, max_length=2000)
    permanent: bool = Field(default=False, description="A failure that retrying will not fix")
    attempt: int = Field(default=1, ge=1, le=MAX_INT32)
    reference: QuotedText | None = Field(
        default=None, max_length=500, description="Message id, file name, call task id"
    )
    not_before: AwareDatetime | None = Field(
        default=None, description="Deferred: when the send window opens and the delivery is tried"
    )


class Recorded(Fragment):
    """Who recorded an agreement, and on which business day it takes effect."""

    recorded_by: Line = Field(min_length=1, max_length=200, description="User, collector or agency id")
    business_date: BusinessDate


class PromiseToPay(EventData):
    TYPES: ClassVar[tuple[str, ...]] = ("ar.promise.made.v1",)
    TOPIC: ClassVar[str] = CONTACTS.name

    promise_id: Identifier
    amount: Money
    promised_date: BusinessDate
    recorded: Recorded

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class SettlementAgreed(EventData):
    """An agreed settlement: the debtor pays `amount` by `pay_by` and the rest of the named invoices
    (all the currency's open invoices when none are named) is forgiven. Paid, the rest is written off
    with the agreement as its reason; missed, it is a broken promise and escalation resumes."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.settlement.agreed.v1",)
    TOPIC: ClassVar[str] = CONTACTS.name

    settlement_id: Identifier
    amount: Money = Field(description="What the debtor pays to settle")
    pay_by: BusinessDate
    invoice_ids: list[Identifier] = Field(
        default_factory=list,
        max_length=1000,
        description="The invoices settled; empty: all open in the currency",
    )
    recorded: Recorded

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class DisputeChanged(EventData):
    """An open dispute holds only the invoice it names."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.dispute.opened.v1", "ar.dispute.resolved.v1")
    TOPIC: ClassVar[str] = CONTACTS.name

    dispute_id: Identifier
    invoice_id: Identifier
    reason: Text | None = Field(default=None, max_length=2000)
    owner: Line | None = Field(
        default=None,
        max_length=200,
        description="Who resolves the dispute; a dispute open longer than the policy allows is escalated to "
        "them (default: who recorded it)",
    )
    recorded: Recorded


class Instalment(Fragment):
    due_date: BusinessDate
    amount: Money

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class PaymentPlanAgreed(EventData):
    TYPES: ClassVar[tuple[str, ...]] = ("ar.plan.agreed.v1",)
    TOPIC: ClassVar[str] = CONTACTS.name

    plan_id: Identifier
    currency: CurrencyCode
    instalments: list[Instalment] = Field(min_length=1, max_length=120)
    recorded: Recorded

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        dates = [i.due_date for i in self.instalments]
        if dates != sorted(dates):
            raise ValueError("instalments must be in due-date order")
        if any(i.amount.currency != self.currency for i in self.instalments):
            raise ValueError("instalments must be in the plan's currency")
        return self


HoldKind = Literal["manual", "insolvency", "paused"]

DISPUTE_ESCALATION = "dispute_escalation"
"""The step that escalates a dispute open longer than the policy allows to its owner."""
INSOLVENCY_CLAIM = "insolvency_claim"
"""The step that lodges the claim with an insolvency administrator: decided while the case is held,
and executed although it is."""
KEPT_WHILE_HELD = frozenset({INSOLVENCY_CLAIM, DISPUTE_ESCALATION})
"""Steps a hold neither cancels in dunning nor stops at the notifier's last look: the insolvency claim is
made because of one, and a dispute's owner is owed an answer whatever else holds the case."""


class HoldChanged(EventData):
    """A hold on a debtor's case in one currency (or all, when `currency` is empty)."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.hold.placed.v1", "ar.hold.released.v1")
    TOPIC: ClassVar[str] = CONTACTS.name

    hold_id: Identifier
    kind: HoldKind
    currency: CurrencyCode | None = None
    reason: Text | None = Field(default=None, max_length=2000)
    until: BusinessDate | None = Field(default=None, description="The hold expires after this date")
    claims_deadline: BusinessDate | None = Field(
        default=None, description="Insolvency: the last day to lodge claims with the administrator"
    )
    administrator: Line | None = Field(
        default=None,
        max_length=300,
        description="Insolvency: the administrator, with the proceedings' number",
    )
    recorded: Recorded


class CaseNote(EventData):
    TYPES: ClassVar[tuple[str, ...]] = ("ar.case.noted.v1",)
    TOPIC: ClassVar[str] = CONTACTS.name

    note_id: Identifier
    currency: CurrencyCode | None = None
    text: Text = Field(min_length=1, max_length=4000)
    recorded: Recorded


class AgencyOutcome(EventData):
    """An agency's report on a case placed with it."""

    TYPES: ClassVar[tuple[str, ...]] = ("ar.agency.outcome.v1",)
    TOPIC: ClassVar[str] = CONTACTS.name

    outcome_id: Identifier
    agency_id: Identifier
    case_id: CaseId
    kind: Literal["contact_made", "no_contact", "promise", "dispute", "recovered"]
    amount_recovered: Money | None = None
    detail: Text | None = Field(default=None, max_length=2000)
    recorded: Recorded

    @field_validator("amount_recovered")
    @classmethod
    def _amount_positive(cls, value: Money | None) -> Money | None:
        return None if value is None else positive(value, "amount_recovered")
