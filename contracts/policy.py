"""The dunning policy: the escalation ladder and everything that shapes it, as one validated document.

A tenant's policy is published as `collections.policy.published.v1` on `collections.policies.v1`, each
version in force from a business date. The document is written in YAML or JSON (`load_policy`).

Amounts are integer minor units per currency (a currency a rule does not list has no minimum);
rates are decimal strings ("0.08" is 8 %); times of day are quoted "HH:MM" strings in the debtor's
time zone; days past due are counted from the due date (negative: before it).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from contracts.channels import Channel
from contracts.collections import Action
from contracts.envelope import EventData, Fragment, Identifier
from contracts.money import MAX_MINOR, CurrencyCode
from contracts.scalars import MAX_INT32, BusinessDate, Line, Version
from contracts.topics import POLICIES

POLICY_PUBLISHED = "collections.policy.published.v1"

DEBTOR_FACING: frozenset[Action] = frozenset(
    {"send_reminder", "formal_notice", "claim_letter", "schedule_call"}
)
"""Actions that reach the debtor: they count against contact caps, honour quiet hours and consent."""


def _hh_mm(value: object) -> object:
    # YAML 1.1 reads an unquoted 20:00 as the integer 1200; refuse anything but "HH:MM" text.
    if isinstance(value, dt.time):
        return value
    if not isinstance(value, str):
        raise ValueError('a time of day must be a quoted "HH:MM" string')
    try:
        parsed = dt.time.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f'{value!r} is not a time of day "HH:MM"') from exc
    if len(value) != 5 or parsed.tzinfo is not None:
        raise ValueError(f'{value!r} is not a time of day "HH:MM"')
    return parsed


LocalTime = Annotated[
    dt.time,
    BeforeValidator(_hh_mm),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
            "description": 'Local time, "HH:MM"',
        }
    ),
]
Rate = Annotated[
    str,
    Field(
        pattern=r"^(0|[1-9][0-9]*)(\.[0-9]+)?$",
        max_length=32,
        description='A non-negative decimal as a string, e.g. "0.08" for 8 %',
        examples=["0.08"],
    ),
]
MinorAmounts = Annotated[
    dict[CurrencyCode, Annotated[int, Field(strict=True, ge=0, le=MAX_MINOR)]],
    Field(description="Integer minor units per ISO 4217 currency; an unlisted currency has none"),
]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


def rate_value(rate: str) -> Decimal:
    return Decimal(rate)


class DailyWindow(Fragment):
    """A span of local time within one day, `start` before `end`."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start >= self.end:
            raise ValueError("a send window must start before it ends, within one day")
        return self


class QuietHours(Fragment):
    """No contact from `start` to `end` local time; `start` after `end` spans midnight (20:00-08:00)."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet hours must not start and end at the same time")
        return self

    def contains(self, moment: dt.time) -> bool:
        """Whether a local time of day is quiet."""
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def overlaps(self, window: DailyWindow) -> bool:
        return self.contains(window.start) or window.start < self.start < window.end


NOTICE_ACTIONS: tuple[Action, ...] = ("place_with_agency", "start_legal_action")
"""Steps that act away from the debtor and may tell the debtor they did."""
NOTICE_CHANNELS: tuple[Channel, ...] = ("letter", "email")


class LadderStep(Fragment):
    """One rung of the escalation ladder."""

    name: Name
    days: int = Field(
        ge=-90, le=3650, description="Days past due it is due on; negative: a courtesy reminder before it"
    )
    action: Action
    channels: list[Channel] = Field(min_length=1, max_length=6, description="In order of preference")
    template: str = Field(min_length=1, max_length=128, pattern=r"^[a-z][a-z0-9_.-]*$")
    min_overdue: MinorAmounts = Field(
        default_factory=dict, description="The step applies only from this amount overdue"
    )
    with_penalty: bool = Field(default=False, description="State the accrued late-payment penalty")
    offer_discount: bool = Field(default=False, description="State the early-payment discount on offer")
    deadline_days: int | None = Field(default=None, ge=1, le=365, description="Pay within this many days")
    recovery_costs: MinorAmounts = Field(
        default_factory=dict,
        description="Costs of recovery claimed with this step, once per command, per currency (the penalty's "
        "fixed fee is separate)",
    )
    send_window: DailyWindow | None = Field(default=None, description="Overrides the policy's send window")
    notice_template: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[a-z][a-z0-9_.-]*$",
        description="An agency placement or legal action also tells the debtor, by letter or e-mail as "
        "consented, from this template (a `<step>_notice` command), when the contact caps allow",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.notice_template and self.action not in NOTICE_ACTIONS:
            raise ValueError(f"step {self.name}: only {' and '.join(NOTICE_ACTIONS)} send a notice")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"step {self.name}: a channel is listed twice")
        if self.days <= 0 and self.action != "send_reminder":
            raise ValueError(f"step {self.name}: only a send_reminder can come before the due date")
        return self


class AmountBand(Fragment):
    """Overdue amounts from `from_minor` up to the next band's start."""

    name: Name
    from_minor: int = Field(strict=True, ge=0, le=MAX_MINOR)
    shift_days: int = Field(default=0, ge=-60, le=60, description="Moves every step; negative: earlier")


class Tiers(Fragment):
    """Tiered treatment: the shifts of the amount band and of the risk segment are added."""

    amount_bands: dict[CurrencyCode, list[AmountBand]] = Field(
        default_factory=dict, description="Per currency, ascending from 0"
    )
    segment_shifts: dict[Name, Annotated[int, Field(ge=-60, le=60)]] = Field(
        default_factory=dict, description='Shift in days per risk segment, e.g. {"high": -5}'
    )

    @model_validator(mode="after")
    def _ascending(self) -> Self:
        for currency, bands in self.amount_bands.items():
            starts = [b.from_minor for b in bands]
            if not bands or starts[0] != 0:
                raise ValueError(f"amount bands of {currency} must start at 0")
            if any(a >= b for a, b in pairwise(starts)):
                raise ValueError(f"amount bands of {currency} must ascend")
            if len({b.name for b in bands}) != len(bands):
                raise ValueError(f"amount bands of {currency} repeat a name")
        return self


class ContactCap(Fragment):
    """At most `max_contacts` debtor contacts within any `period_days` consecutive business days."""

    max_contacts: int = Field(ge=1, le=1000)
    period_days: int = Field(ge=1, le=366)


class Penalty(Fragment):
    """Late-payment penalty terms: simple interest on what is outstanding, a fixed fee per item, or both.

    Interest runs from the day after `due date + grace_days` on each day's outstanding amount."""

    rate: Rate | None = None
    rate_per: Literal["annum", "day"] = "annum"
    day_count: Literal[360, 365] = Field(default=365, description="Days in a year for a rate per annum")
    fixed_fee: MinorAmounts = Field(default_factory=dict, description="Once per overdue item")
    grace_days: int = Field(default=0, ge=0, le=365)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.rate is None and not self.fixed_fee:
            raise ValueError("a penalty needs a rate, a fixed fee, or both")
        return self


class DiscountTier(Fragment):
    """`rate` off the outstanding amount when paid within `within_days` of the issue date."""

    within_days: int = Field(ge=0, le=365)
    rate: Rate

    @model_validator(mode="after")
    def _below_one(self) -> Self:
        if not Decimal(0) < rate_value(self.rate) < Decimal(1):
            raise ValueError("a discount rate lies between 0 and 1")
        return self


class Agency(Fragment):
    agency_id: Identifier
    name: Line | None = Field(default=None, max_length=200)
    currencies: list[CurrencyCode] = Field(default_factory=list, description="Empty: any currency")
    segments: list[Name] = Field(default_factory=list, description="Empty: any risk segment")
    fee_rate: Rate | None = Field(
        default=None, description="The agency's fee as a share of what it recovers; none: not known"
    )


class AgencyRules(Fragment):
    """Which agency gets a case: the best past recovery rate for the case's segment and amount band
    among those with at least `min_placements` placements of that kind; without such history the
    first eligible agency in `fallback` order."""

    agencies: list[Agency] = Field(min_length=1, max_length=100)
    fallback: list[Identifier] = Field(
        default_factory=list, description="Order of choice without history; empty: the agencies' order"
    )
    min_placements: int = Field(default=5, ge=1, le=MAX_INT32)
    recall_after_days: int = Field(
        default=90, ge=1, le=3650, description="Recall after this long without recovery"
    )
    replace_on_recall: bool = Field(
        default=True, description="After a recall, place with the next best agency not tried yet"
    )

    @model_validator(mode="after")
    def _known(self) -> Self:
        ids = [a.agency_id for a in self.agencies]
        if len(set(ids)) != len(ids):
            raise ValueError("an agency is listed twice")
        unknown = [a for a in self.fallback if a not in ids]
        if unknown:
            raise ValueError(f"fallback names unknown agencies: {', '.join(unknown)}")
        if len(set(self.fallback)) != len(self.fallback):
            raise ValueError("fallback names an agency twice")
        return self

    def order(self) -> list[Agency]:
        """The agencies in fallback order (those the fallback leaves out follow in listed order)."""
        by_id = {a.agency_id: a for a in self.agencies}
        ranked = [by_id[i] for i in self.fallback]
        return ranked + [a for a in self.agencies if a.agency_id not in self.fallback]


def _channels(*channels: Channel) -> list[Channel]:
    return list(channels)


class DunningPolicy(Fragment):
    """A tenant's dunning policy."""

    name: Line = Field(min_length=1, max_length=100)
    steps: list[LadderStep] = Field(min_length=1, max_length=50, description="Ordered by days")
    min_days_between_steps: int = Field(
        default=7,
        ge=0,
        le=365,
        description="Least days between two steps of different days, so a late start never rushes the ladder",
    )
    tiers: Tiers = Field(default_factory=Tiers)
    contact_caps: list[ContactCap] = Field(default_factory=list, max_length=10)
    quiet_hours: QuietHours | None = None
    send_window: DailyWindow = Field(
        default_factory=lambda: DailyWindow(start=dt.time(9), end=dt.time(18)),
        description="When debtor contacts go out, local time",
    )
    default_consent: list[Channel] = Field(
        default_factory=lambda: _channels("email", "letter"),
        description="Channels assumed consented when a debtor's profile does not say",
    )
    consent_free_channels: list[Channel] = Field(
        default_factory=lambda: _channels("letter", "webhook"), description="Channels that need no consent"
    )
    penalty: Penalty | None = None
    discounts: list[DiscountTier] = Field(default_factory=list, max_length=10)
    promise_grace_days: int = Field(default=3, ge=0, le=90)
    insolvency_claim_days: int = Field(
        default=30,
        ge=1,
        le=365,
        description="Days after an insolvency hold to lodge the claim, when the hold names no deadline",
    )
    plan_grace_days: int = Field(default=5, ge=0, le=90)
    agency: AgencyRules | None = None
    dispute_limit_days: int = Field(
        default=30, ge=1, le=3650, description="A dispute open longer than this is reported as overdue"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        days = [s.days for s in self.steps]
        if days != sorted(days):
            raise ValueError("steps must be ordered by days past due")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        if self.agency is None and any(s.action == "place_with_agency" for s in self.steps):
            raise ValueError("a place_with_agency step needs the agency rules")
        if self.quiet_hours is not None:
            windows = [("the send window", self.send_window)]
            windows += [(f"step {s.name}", s.send_window) for s in self.steps if s.send_window]
            for where, window in windows:
                if self.quiet_hours.overlaps(window):
                    raise ValueError(f"{where} overlaps the quiet hours")
        tiers = [t.within_days for t in self.discounts]
        rates = [rate_value(t.rate) for t in self.discounts]
        if tiers != sorted(set(tiers)) or rates != sorted(rates, reverse=True):
            raise ValueError("discount tiers must ascend by days with falling rates")
        return self

    def step_index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.name == name)


class PolicyPublished(EventData):
    """A version of a tenant's dunning policy, in force from `effective_from` until a later one is."""

    TYPES: ClassVar[tuple[str, ...]] = (POLICY_PUBLISHED,)
    TOPIC: ClassVar[str] = POLICIES.name
    NEEDS_DEBTOR: ClassVar[bool] = False

    version: Version
    effective_from: BusinessDate = Field(description="The business date from which this version decides")
    document: DunningPolicy


def load_policy(source: Path | str) -> DunningPolicy:
    """Parse and validate a policy from a file (a `Path`) or from YAML or JSON text (a `str`).

    Raises `ValueError` (a pydantic `ValidationError` naming each wrong field) when it is invalid."""
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    raw: Any = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError("a policy document is a mapping")
    return DunningPolicy.model_validate(raw)


def policy_in_force(versions: list[PolicyPublished], business_date: dt.date) -> PolicyPublished | None:
    """The version deciding on `business_date`: the highest version already effective."""
    effective = [v for v in versions if v.effective_from <= business_date]
    return max(effective, key=lambda v: v.version, default=None)
