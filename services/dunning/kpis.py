"""Collections KPIs: the facts dunning keeps for them as cases move, and the figures made of those facts.

As the consumer applies a fact or a decision to a case, `observe` notes what the KPIs need in small
fact tables, written with the case in the same transaction (`kpi_store`): each promise to pay and
what became of it, each dispute on an invoice of the case, each episode of a case (opened to closed:
the last ladder step reached, whether it was placed with an agency, whether a payment closed it), each
agency placement, and every recovery on a placement, as the ledger saw it and as the agency reported
it. The requests aggregate those tables in SQL; the rates, averages and fees are computed here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from contracts.collections import AgencyOutcome, CaseEvent, CollectionCommand, DisputeChanged
from contracts.receivables import ReceivableBalance
from services.dunning.domain.case import DISPUTE_OPENED, PAYMENT_CAUSES, Case, Fact, Promise

NO_STEP = "none"
"""The funnel's key for open cases that have reached no ladder step yet."""
NO_REASON = "unspecified"
LEDGER = "ledger"
AGENCY = "agency"


@dataclass(frozen=True)
class PromiseRow:
    tenant_id: str
    case_id: str
    promise_id: str
    debtor_id: str
    currency: str
    amount_minor: int
    made_on: dt.date
    due_on: dt.date
    outcome: str | None = None
    """kept, broken, superseded (by a newer promise or a payment plan) or dropped (the case closed
    without it being paid); None while it stands."""
    outcome_on: dt.date | None = None


@dataclass(frozen=True)
class DisputeRow:
    tenant_id: str
    case_id: str
    dispute_id: str
    debtor_id: str
    currency: str
    invoice_id: str
    reason: str | None
    amount_minor: int
    """The invoice's outstanding amount when the dispute was opened."""
    opened_on: dt.date


@dataclass(frozen=True)
class PlacementRow:
    tenant_id: str
    case_id: str
    placement_id: str
    """The placing command's id."""
    agency_id: str
    segment: str
    currency: str
    placed_on: dt.date
    placed_minor: int


@dataclass(frozen=True)
class RecoveryRow:
    tenant_id: str
    case_id: str
    placement_id: str
    source: str
    """`LEDGER`: a payment reduced a placed invoice's balance while placed (negative: reversed);
    `AGENCY`: the agency reported a recovery."""
    recovery_id: str
    recovered_on: dt.date
    amount_minor: int


@dataclass
class Episode:
    """A case from opened to closed. `opened_version` None: the episode already open in the table."""

    opened_version: int | None
    debtor_id: str
    currency: str
    opened_on: dt.date | None = None
    placed: bool = False
    last_step: str | None = None
    last_step_on: dt.date | None = None
    closed_on: dt.date | None = None
    closed_by_payment: bool | None = None


@dataclass
class KpiFacts:
    """What a transaction adds to the KPI tables, by key (the last version of a row wins)."""

    promises: dict[tuple[str, str, str], PromiseRow] = field(default_factory=dict)
    disputes: dict[tuple[str, str, str], DisputeRow] = field(default_factory=dict)
    resolved: dict[tuple[str, str, str], dt.date] = field(default_factory=dict)
    placements: dict[tuple[str, str, str], PlacementRow] = field(default_factory=dict)
    recoveries: dict[tuple[str, str, str, str, str], RecoveryRow] = field(default_factory=dict)
    episodes: dict[tuple[str, str], list[Episode]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(
            (self.promises, self.disputes, self.resolved, self.placements, self.recoveries, self.episodes)
        )

    def clear(self) -> None:
        for table in (self.promises, self.disputes, self.resolved, self.placements, self.recoveries):
            table.clear()
        self.episodes.clear()


def observe(
    facts: KpiFacts,
    before: Case,
    after: Case,
    events: Sequence[CaseEvent],
    commands: Sequence[CollectionCommand] = (),
    fact: Fact | None = None,
) -> None:
    """Note what a fact applied to a case (`fact`), or a decision about it (`commands`), means for
    the KPIs: `before` and `after` are the case around it, `events` the case events it made."""
    _episodes(facts, after, events, commands, fact)
    _promises(facts, before, after, events)
    if fact is not None:
        _disputes(facts, before, after, fact)
        _recoveries(facts, before, fact)
    for event in events:
        if event.change == "placed" and after.placement is not None:
            p = after.placement
            key = (after.tenant_id, after.case_id, p.command_id)
            facts.placements[key] = PlacementRow(
                *key, p.agency_id, p.segment, after.currency, p.placed_on, p.overdue
            )


def _episodes(
    facts: KpiFacts,
    case: Case,
    events: Sequence[CaseEvent],
    commands: Sequence[CollectionCommand],
    fact: Fact | None,
) -> None:
    episodes = facts.episodes.setdefault((case.tenant_id, case.case_id), [])

    def current() -> Episode:
        if not episodes:
            episodes.append(Episode(None, case.debtor_id, case.currency))
        return episodes[-1]

    for event in events:
        if event.change == "opened":
            episodes.append(Episode(event.version, case.debtor_id, case.currency, event.business_date))
        elif event.change == "placed":
            current().placed = True
        elif event.change == "closed":
            closing = current()
            closing.closed_on = event.business_date
            closing.closed_by_payment = (
                fact is not None
                and isinstance(fact.data, ReceivableBalance)
                and fact.data.cause_type in PAYMENT_CAUSES
            )
    # A decision executing a ladder step after the due date sets the case's `executed_on` to its day,
    # and the ladder's commands come after any other of the decision (courtesy reminders, recalls,
    # tasks outside the ladder), which leave that date as it was.
    executed = [c for c in commands if c.business_date == case.executed_on]
    if executed:
        reached = current()
        reached.last_step, reached.last_step_on = executed[-1].step, executed[-1].business_date
    if not episodes:
        del facts.episodes[(case.tenant_id, case.case_id)]


def _promises(facts: KpiFacts, before: Case, after: Case, events: Sequence[CaseEvent]) -> None:
    old, new = before.promise, after.promise
    if old is not None and (new is None or new.promise_id != old.promise_id):
        changes = {e.change: e.business_date for e in events}
        day = next(iter(changes.values()), after.as_of or old.promised_date)
        if "promise_kept" in changes:
            outcome, day = "kept", changes["promise_kept"]
        elif "promise_broken" in changes:
            outcome, day = "broken", changes["promise_broken"]
        elif new is not None or (after.plan is not None and after.plan != before.plan):
            outcome = "superseded"
        else:
            outcome = "dropped"
        _promise(facts, after, old, outcome, day)
    if new is not None and (old is None or new != old):
        _promise(facts, after, new, None, None)


def _promise(facts: KpiFacts, case: Case, p: Promise, outcome: str | None, day: dt.date | None) -> None:
    key = (case.tenant_id, case.case_id, p.promise_id)
    facts.promises[key] = PromiseRow(
        *key, case.debtor_id, case.currency, p.amount, p.recorded_on, p.promised_date, outcome, day
    )


def _disputes(facts: KpiFacts, before: Case, after: Case, fact: Fact) -> None:
    data = fact.data
    if not isinstance(data, DisputeChanged):
        return
    item = before.items.get(data.invoice_id) or after.items.get(data.invoice_id)
    if item is None:
        return  # the invoice is not one of this case's: the dispute is the case of its currency's
    key = (after.tenant_id, after.case_id, data.dispute_id)
    day = data.recorded.business_date
    if fact.type == DISPUTE_OPENED:
        facts.disputes[key] = DisputeRow(
            *key, after.debtor_id, after.currency, data.invoice_id, data.reason, item.outstanding, day
        )
        facts.resolved.pop(key, None)
    else:
        facts.resolved[key] = day


def _recoveries(facts: KpiFacts, before: Case, fact: Fact) -> None:
    placement, data = before.placement, fact.data
    if placement is None:
        return
    key = (before.tenant_id, before.case_id, placement.command_id)
    if isinstance(data, ReceivableBalance):
        item = before.items.get(data.invoice_id)
        placed_item = item is not None and item.due_date < placement.placed_on
        if placed_item and data.cause_type in PAYMENT_CAUSES and data.change.amount_minor:
            recovery = f"{data.cause_id}:{data.invoice_id}"
            facts.recoveries[(*key, LEDGER, recovery)] = RecoveryRow(
                *key, LEDGER, recovery, data.effective_date, -data.change.amount_minor
            )
    elif (
        isinstance(data, AgencyOutcome)
        and data.kind == "recovered"
        and data.agency_id == placement.agency_id
        and data.amount_recovered is not None
        and data.amount_recovered.currency == before.currency
    ):
        facts.recoveries[(*key, AGENCY, data.outcome_id)] = RecoveryRow(
            *key, AGENCY, data.outcome_id, data.recorded.business_date, data.amount_recovered.amount_minor
        )


# --- figures --------------------------------------------------------------------------------------


def rate(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None when the denominator is zero."""
    return float(Fraction(numerator, denominator)) if denominator else None


def average(total: int, count: int) -> float | None:
    return float(Fraction(total, count)) if count else None


def months_to(as_of: dt.date, months: int) -> list[str]:
    """The `months` calendar months ending with that of `as_of`, oldest first, as "YYYY-MM"."""
    index = as_of.year * 12 + as_of.month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - months + 1, index + 1)]


def first_day(month: str) -> dt.date:
    year, number = month.split("-")
    return dt.date(int(year), int(number), 1)


def fee(recovered_minor: int, fee_rate: Decimal | None) -> int | None:
    """The agency's fee on what it recovered: the rate times the recovery, rounded half up to a
    minor unit; None when the policy gives the agency no fee rate."""
    if fee_rate is None:
        return None
    return int((Decimal(recovered_minor) * fee_rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class MonthCounts:
    promises_made: int = 0
    promises_due: int = 0
    promises_kept: int = 0
    cases_closed: int = 0
    cured: int = 0
    cure_days: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per last step reached: (sum of days to cure, cured cases)."""


def month_figures(month: str, counts: MonthCounts) -> dict[str, object]:
    return {
        "month": month,
        "promises_made": counts.promises_made,
        "promises_due": counts.promises_due,
        "promises_kept": counts.promises_kept,
        "promise_kept_rate": rate(counts.promises_kept, counts.promises_due),
        "cases_closed": counts.cases_closed,
        "cured": counts.cured,
        "cure_rate": rate(counts.cured, counts.cases_closed),
        "days_to_cure_by_step": {
            step: float(Fraction(days, cases)) for step, (days, cases) in sorted(counts.cure_days.items())
        },
    }


@dataclass(frozen=True)
class AgencyCounts:
    agency_id: str
    segment: str
    currency: str
    placed_cases: int
    placed_minor: int
    recovered_minor: int
    reported_minor: int
    recovered_cases: int
    """Placements the ledger shows recovered in full."""
    recovery_days: int
    """Their days from placement to the payment that completed the recovery, summed."""


def agency_figures(counts: AgencyCounts, fee_rate: Decimal | None) -> dict[str, object]:
    return {
        "agency_id": counts.agency_id,
        "segment": counts.segment,
        "currency": counts.currency,
        "placed_cases": counts.placed_cases,
        "placed_minor": counts.placed_minor,
        "recovered_minor": counts.recovered_minor,
        "reported_minor": counts.reported_minor,
        "difference_minor": counts.reported_minor - counts.recovered_minor,
        "recovery_rate": rate(counts.recovered_minor, counts.placed_minor),
        "average_days_to_recover": average(counts.recovery_days, counts.recovered_cases),
        "fees_minor": fee(counts.recovered_minor, fee_rate),
    }
