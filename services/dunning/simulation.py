"""Policy what-if: a candidate dunning policy replayed over a tenant's recorded history, beside the
versions that were in force, as pure functions.

Given one debtor's recorded inputs (balance facts and contact records as `Fact`s, debtor profiles and
scores) with the tenant's business days between them, in the order dunning met them, `replay_debtor`
moves the debtor's cases as the dunning consumer does (`evolve_debtor`; the debtors a run of facts
touched are decided on the current business date, and on each business day the cases that are due,
every open case on the first day of a version) with the published versions, up to the first day of
the window. From there two replays go on side by side: one with the versions in force on each day,
one with the candidate, which takes effect on the window's first day as a newly published version
would (every open case is planned again under it). Each replay tallies what it would have issued on
the window's days; `merge` adds the debtors' tallies up into the report.

What a replay cannot know: how a debtor would have reacted to a command that was never sent. The
recorded facts (payments, promises, disputes, delivery outcomes) are replayed as they happened under
the policy that was in force, whichever policy is deciding. The payments counted after a command are
the recorded ones, so they say when money came in after each policy would have chased, not what the
candidate would have made the debtor pay. Agency choice ranks agencies without the tenant's recorded
performance (a debtor is replayed alone), so a placement's agency may differ; whether a case is
placed does not depend on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.journal import DebtorProfile
from contracts.policy import DunningPolicy, PolicyPublished, policy_in_force
from contracts.receivables import ReceivableBalance
from contracts.scores import ScoreChanged
from services.dunning.domain import PAYMENT_CAUSES, Case, DebtorFacts, Decision, Fact, decide_debtor, is_due
from services.dunning.domain.debtor import evolve_debtor, opened_case

CURRENT = "current"
CANDIDATE = "candidate"
DIFFERENCE = "difference"
SAMPLE_CAVEAT = (
    "Estimated from a sample of the debtors (the same debtors on every run): each figure is the "
    "sample's scaled to the tenant, with the half-width of its 95 % confidence interval as its margin."
)
DEFAULT_PAID_WITHIN = 14
NO_CHANNEL = "none"
CAVEATS = (
    "The recorded facts (payments, promises, disputes, delivery outcomes) are replayed as they happened "
    "under the policy that was in force: how a debtor would have reacted to a command that was never "
    "sent is unknown.",
    "Paid within N days counts the recorded payments 1 to N days after a command of each policy; it is "
    "not what the candidate would have collected.",
    "Agencies are ranked without the tenant's recorded performance: which agency gets a case may differ, "
    "whether a case is placed does not.",
)


@dataclass(frozen=True)
class Day:
    """A business day the tenant's clock started."""

    business_date: dt.date


Input = Fact | DebtorProfile | ScoreChanged
"""What dunning learns about a debtor: a case fact, its master data, a score."""


@dataclass(frozen=True)
class Window:
    start: dt.date
    end: dt.date
    paid_within: int = DEFAULT_PAID_WITHIN

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("the window ends before it starts")
        if self.paid_within < 0:
            raise ValueError("paid within is a number of days, not negative")

    def holds(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


def candidate_version(
    versions: Sequence[PolicyPublished], document: DunningPolicy, start: dt.date
) -> PolicyPublished:
    """The candidate as a version published after every recorded one, in force from `start`."""
    version = max((v.version for v in versions), default=0) + 1
    return PolicyPublished(version=version, effective_from=start, document=document)


def interleave(
    days: Sequence[tuple[int, dt.date]], records: Iterable[tuple[int, Input]]
) -> list[Input | Day]:
    """A debtor's records (with the time the log took each, in the order dunning met them) and the
    tenant's business days (with the time each started) in one sequence: a record taken before a day
    started was applied before that day was decided (the business-day watermark makes sure of it)."""
    return interleave_days(business_days(days), records)


def business_days(days: Iterable[tuple[int, dt.date]]) -> list[tuple[int, Day]]:
    """The tenant's business days in the order they started, each with the time it started: sorted
    once and shared by every debtor's `interleave_days`."""
    return [(ms, Day(day)) for ms, day in sorted(days, key=lambda d: (d[0], d[1]))]


def interleave_days(
    ordered: Sequence[tuple[int, Day]], records: Iterable[tuple[int, Input]]
) -> list[Input | Day]:
    """`interleave` with the days already in order (`business_days`)."""
    out: list[Input | Day] = []
    next_day, last = 0, len(ordered)
    for taken_ms, item in records:
        while next_day < last and ordered[next_day][0] <= taken_ms:
            out.append(ordered[next_day][1])
            next_day += 1
        out.append(item)
    out.extend(day for _, day in ordered[next_day:])
    return out


class Schedule:
    """The version in force on each business day (`policy_in_force`) of one list of versions,
    looked up once per day and shared by the replays of every debtor."""

    def __init__(self, versions: Sequence[PolicyPublished]) -> None:
        self.versions = list(versions)
        self._on: dict[dt.date, PolicyPublished | None] = {}

    def on(self, day: dt.date) -> PolicyPublished | None:
        try:
            return self._on[day]
        except KeyError:
            policy = self._on[day] = policy_in_force(self.versions, day)
            return policy


@dataclass(frozen=True)
class Calendar:
    """The schedules of a what-if: the published versions, and the same with the candidate."""

    published: Schedule
    with_candidate: Schedule

    @classmethod
    def of(cls, versions: Sequence[PolicyPublished], candidate: PolicyPublished) -> Calendar:
        return cls(Schedule(versions), Schedule([*versions, candidate]))


@dataclass
class Tally:
    """What one policy would have issued to one debtor, or to many once merged."""

    commands: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(step, action, preferred channel) -> commands."""
    contacts: Counter[int] = field(default_factory=Counter)
    """Debtor contacts per debtor -> debtors."""
    placed: int = 0
    """Cases placed with an agency."""
    legal: int = 0
    """Cases taken to legal action."""
    paid: Counter[str] = field(default_factory=Counter)
    """Currency -> minor units paid 1 to N days after a command of the policy."""

    def add(self, other: Tally) -> None:
        self.commands.update(other.commands)
        self.contacts.update(other.contacts)
        self.placed += other.placed
        self.legal += other.legal
        self.paid.update(other.paid)


@dataclass(frozen=True)
class Payment:
    case_id: str
    currency: str
    paid_on: dt.date
    amount: int


@dataclass
class _Replay:
    """One policy's replay of one debtor: the cases as dunning would hold them, and what it issued."""

    tenant: str
    debtor: str
    schedule: Schedule
    window: Window
    cases: dict[str, Case] = field(default_factory=dict)
    today: dt.date | None = None
    applied: int = 0
    profile: DebtorProfile | None = None
    segments: dict[str, str] = field(default_factory=dict)
    proposed: set[str] = field(default_factory=set)
    touched: bool = False
    commands: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    contacts: int = 0
    placed: set[str] = field(default_factory=set)
    legal: set[str] = field(default_factory=set)
    chased: dict[str, list[dt.date]] = field(default_factory=dict)
    """Case id -> business dates of the policy's commands on it in the window."""
    next_action: dt.date | None = None
    """The earliest next action date of the cases, kept while `next_action_known`: on a day that
    starts no new version, a case is due only when this date has come (`is_due`)."""
    next_action_known: bool = True

    def fork(self, schedule: Schedule) -> _Replay:
        return _Replay(
            self.tenant,
            self.debtor,
            schedule,
            self.window,
            dict(self.cases),
            self.today,
            self.applied,
            self.profile,
            dict(self.segments),
            set(self.proposed),
            self.touched,
            next_action=self.next_action,
            next_action_known=self.next_action_known,
        )

    def take(self, item: Input) -> None:
        match item:
            case Fact():
                if (opened := opened_case(self.tenant, self.debtor, self.cases, item)) is not None:
                    self.cases[opened.case_id] = opened
                for _, after, _ in evolve_debtor(self.cases, item):
                    self.cases[after.case_id] = after
                self.next_action_known = False
                self.touched = True
            case DebtorProfile():
                self.profile = item
            case ScoreChanged():
                currency = item.open.currency
                self.segments[currency] = item.segment
                if item.write_off_proposed:
                    self.proposed.add(currency)
                    self.touched = True
                else:
                    self.proposed.discard(currency)

    def decide_touched(self) -> None:
        """The debtor a run of facts touched, decided on the tenant's business date, as the consumer
        decides the debtors of a batch."""
        if not self.touched:
            return
        self.touched = False
        policy = self.schedule.on(self.today) if self.today else None
        if self.today is not None and policy is not None:
            self._decide(self.today, policy)

    def day(self, day: dt.date) -> None:
        if self.touched:
            self.decide_touched()
        if self.today is not None and day <= self.today:
            return  # a day started before decides nothing new
        self.today = day
        policy = self.schedule.on(day)
        if policy is None:
            return
        if policy.version != self.applied:
            if any(is_due(c, day, policy) for c in self.cases.values()):
                self._decide(day, policy)
            self.applied = policy.version
            return
        # No new version: a case is due when its next action date has come.
        if not self.next_action_known:
            self.next_action = min(
                (c.next_action_date for c in self.cases.values() if c.next_action_date is not None),
                default=None,
            )
            self.next_action_known = True
        if self.next_action is not None and self.next_action <= day:
            self._decide(day, policy)

    def _decide(self, day: dt.date, policy: PolicyPublished) -> None:
        facts = DebtorFacts(
            profile=self.profile, segments=dict(self.segments), write_off_proposed=frozenset(self.proposed)
        )
        decisions = decide_debtor([self.cases[c] for c in sorted(self.cases)], day, policy, facts)
        self.next_action_known = False
        counted = self.window.holds(day)
        for decision in decisions:
            self.cases[decision.case.case_id] = decision.case
            if counted and decision.commands:
                self._count(day, decision)

    def _count(self, day: dt.date, decision: Decision) -> None:
        case = decision.case
        for command in decision.commands:
            channel = command.channels[0] if command.channels else NO_CHANNEL
            self.commands[(command.step, command.action, channel)] += 1
            if command.command_id in case.contacts:
                self.contacts += 1
            if command.action == "place_with_agency":
                self.placed.add(case.case_id)
            elif command.action == "start_legal_action":
                self.legal.add(case.case_id)
            self.chased.setdefault(case.case_id, []).append(day)

    def tally(self, payments: Sequence[Payment], paid_within: int) -> Tally:
        paid: Counter[str] = Counter()
        for p in payments:
            dates = self.chased.get(p.case_id, ())
            if any(1 <= (p.paid_on - chased).days <= paid_within for chased in dates):
                paid[p.currency] += p.amount
        return Tally(
            commands=Counter(self.commands),
            contacts=Counter({self.contacts: 1}),
            placed=len(self.placed),
            legal=len(self.legal),
            paid=paid,
        )


@dataclass
class DebtorTally:
    """Both policies' tallies of one debtor; `in_scope` when it had an open case in the window."""

    current: Tally
    candidate: Tally
    in_scope: bool


def payment_of(debtor: str, fact: Fact) -> Payment | None:
    """The payment a balance fact records (a reversal is a negative one), on its effective date."""
    data = fact.data
    if (
        not isinstance(data, ReceivableBalance)
        or data.cause_type not in PAYMENT_CAUSES
        or not data.change.amount_minor
    ):
        return None
    currency = data.outstanding.currency
    return Payment(f"{debtor}:{currency}", currency, data.effective_date, -data.change.amount_minor)


def replay_debtor(
    tenant: str,
    debtor: str,
    steps: Iterable[Input | Day],
    versions: Sequence[PolicyPublished],
    candidate: PolicyPublished,
    window: Window,
    *,
    calendar: Calendar | None = None,
) -> DebtorTally:
    """Replay one debtor's inputs (`interleave`) under the published `versions`, and from the window's
    first business day on under the `candidate` (`candidate_version`) beside them; `calendar` (of the
    same versions and candidate) is the versions in force per day, shared by many debtors."""
    calendar = calendar or Calendar.of(versions, candidate)
    current = _Replay(tenant, debtor, calendar.published, window)
    forked: _Replay | None = None
    payments: list[Payment] = []
    in_scope = False
    ended = False
    for step in steps:
        sides = [current] if forked is None else [current, forked]
        if isinstance(step, Day):
            if ended or step.business_date > window.end:
                for side in sides:
                    side.decide_touched()
                ended = True
                continue
            if forked is None and step.business_date >= window.start:
                current.decide_touched()
                forked = current.fork(calendar.with_candidate)
                sides = [current, forked]
            for side in sides:
                side.day(step.business_date)
            if not in_scope and window.holds(step.business_date):
                in_scope = any(c.items for c in current.cases.values())
            continue
        if isinstance(step, Fact) and (payment := payment_of(debtor, step)) is not None:
            payments.append(payment)
        if ended:
            continue
        for side in sides:
            side.take(step)
    for side in [current] if forked is None else [current, forked]:
        if not ended:
            side.decide_touched()
    if forked is None:
        forked = current.fork(Schedule([]))
    return DebtorTally(
        current=current.tally(payments, window.paid_within),
        candidate=forked.tally(payments, window.paid_within),
        in_scope=in_scope,
    )


def sampled(tenant: str, debtor: str, fraction: float) -> bool:
    """Whether the debtor is in a what-if's sample of `fraction` of the tenant's debtors: a stable
    hash of its key under the fraction, so a sample is the same debtors on every run."""
    if fraction >= 1:
        return True
    digest = hashlib.blake2b(f"{tenant}:{debtor}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def _figures(tally: Tally) -> dict[str, int]:
    """One side's figures of one debtor, by the name `report_json` gives each its margin under."""
    figures = {
        f"commands|{step}|{action}|{channel}": n for (step, action, channel), n in tally.commands.items()
    }
    figures["contacts"] = sum(k * n for k, n in tally.contacts.items())
    figures["placed"] = tally.placed
    figures["legal"] = tally.legal
    figures.update({f"paid|{currency}": amount for currency, amount in tally.paid.items()})
    return figures


@dataclass
class Report:
    """Both policies' tallies over the debtors in scope; with a `sample` below 1, over the sampled
    debtors (`sampled`), with the sums of squares of each debtor's figures that the margins of the
    estimates for the whole tenant need (`squares`: (side, figure) -> sum)."""

    tenant: str
    window: Window
    current_versions: list[int]
    candidate_version: int
    debtors: int = 0
    current: Tally = field(default_factory=Tally)
    candidate: Tally = field(default_factory=Tally)
    sample: float = 1.0
    squares: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, tally: DebtorTally) -> None:
        if not tally.in_scope:
            return
        self.debtors += 1
        self.current.add(tally.current)
        self.candidate.add(tally.candidate)
        if self.sample < 1:
            a, b = _figures(tally.current), _figures(tally.candidate)
            for name in a.keys() | b.keys():
                x, y = a.get(name, 0), b.get(name, 0)
                self.squares[(CURRENT, name)] += x * x
                self.squares[(CANDIDATE, name)] += y * y
                self.squares[(DIFFERENCE, name)] += (y - x) ** 2

    def merge(self, other: Report) -> None:
        self.debtors += other.debtors
        self.current.add(other.current)
        self.candidate.add(other.candidate)
        self.squares.update(other.squares)


def merge(reports: Iterable[Report]) -> Report:
    merged: Report | None = None
    for report in reports:
        if merged is None:
            merged = Report(
                report.tenant,
                report.window,
                report.current_versions,
                report.candidate_version,
                sample=report.sample,
            )
        merged.merge(report)
    if merged is None:
        raise ValueError("nothing to merge")
    return merged


def _contacts(report: Report, tally: Tally) -> dict[str, Any]:
    debtors = sum(tally.contacts.values())
    total = sum(k * n for k, n in tally.contacts.items())
    return {
        "total": _estimate(report, total),
        "mean": round(total / debtors, 3) if debtors else 0.0,
        "max": max(tally.contacts, default=0),
        "distribution": {str(k): _estimate(report, tally.contacts[k]) for k in sorted(tally.contacts)},
    }


def _estimate(report: Report, value: int) -> int:
    """A sampled figure as an estimate for the whole tenant (itself without a sample)."""
    return value if report.sample >= 1 else round(value / report.sample)


def _margin(report: Report, side: str, figure: str) -> int:
    """Half the width of the 95 % confidence interval of an estimate (Bernoulli sampling of debtors,
    Horvitz-Thompson: variance (1 - p) / p^2 times the sum of the sampled debtors' squares)."""
    p = report.sample
    return round(1.96 * math.sqrt((1 - p) / (p * p) * report.squares[(side, figure)]))


def _side(report: Report, a: int, b: int, figure: str) -> dict[str, Any]:
    side: dict[str, Any] = {
        CURRENT: _estimate(report, a),
        CANDIDATE: _estimate(report, b),
        DIFFERENCE: _estimate(report, b) - _estimate(report, a),
    }
    if report.sample < 1:
        side["margin"] = {s: _margin(report, s, figure) for s in (CURRENT, CANDIDATE, DIFFERENCE)}
    return side


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON: per step and channel the commands of each policy and the difference,
    contacts per debtor, agency placements, legal actions and the payments after commands."""
    current, candidate = report.current, report.candidate
    keys = sorted(set(current.commands) | set(candidate.commands))
    currencies = sorted(set(current.paid) | set(candidate.paid))
    return {
        "tenant": report.tenant,
        "from": report.window.start.isoformat(),
        "to": report.window.end.isoformat(),
        "paid_within_days": report.window.paid_within,
        "current_versions": report.current_versions,
        "candidate_version": report.candidate_version,
        "debtors": _estimate(report, report.debtors),
        **(
            {"sample": {"fraction": report.sample, "debtors_replayed": report.debtors}}
            if report.sample < 1
            else {}
        ),
        "commands": [
            {
                "step": step,
                "action": action,
                "channel": channel,
                **_side(
                    report,
                    current.commands[k],
                    candidate.commands[k],
                    f"commands|{step}|{action}|{channel}",
                ),
            }
            for k in keys
            for step, action, channel in [k]
        ],
        "contacts_per_debtor": {CURRENT: _contacts(report, current), CANDIDATE: _contacts(report, candidate)},
        "agency_placements": _side(report, current.placed, candidate.placed, "placed"),
        "legal_actions": _side(report, current.legal, candidate.legal, "legal"),
        "paid_within": [
            {"currency": c, **_side(report, current.paid[c], candidate.paid[c], f"paid|{c}")}
            for c in currencies
        ],
        "caveats": list(CAVEATS) + ([SAMPLE_CAVEAT] if report.sample < 1 else []),
    }


def report_table(report: dict[str, Any]) -> str:
    """The JSON report (`report_json`) as text tables for people."""
    sample = report.get("sample")
    rows = [("step", "action", "channel", CURRENT, CANDIDATE, DIFFERENCE, *(("± 95 %",) if sample else ()))]
    rows += [
        (
            c["step"],
            c["action"],
            c["channel"],
            str(c[CURRENT]),
            str(c[CANDIDATE]),
            f"{c[DIFFERENCE]:+d}",
            *((str(c["margin"][DIFFERENCE]),) if sample else ()),
        )
        for c in report["commands"]
    ]
    contacts = report["contacts_per_debtor"]
    lines = [
        f"Policy what-if for {report['tenant']}, business days {report['from']} to {report['to']}: "
        f"versions {', '.join(map(str, report['current_versions'])) or 'none'} as published "
        f"(current) against the candidate (as version {report['candidate_version']}), "
        f"{report['debtors']} debtor(s) with an open case in the window"
        + (
            f" (estimated from a {sample['fraction']:.0%} sample: {sample['debtors_replayed']} replayed)."
            if sample
            else "."
        ),
        "",
        *_aligned(rows),
        "",
        *_aligned(
            [
                ("", CURRENT, CANDIDATE),
                *(
                    (label, str(contacts[CURRENT][key]), str(contacts[CANDIDATE][key]))
                    for label, key in (
                        ("contacts", "total"),
                        ("contacts per debtor", "mean"),
                        ("most", "max"),
                    )
                ),
                *(
                    (label, str(report[key][CURRENT]), str(report[key][CANDIDATE]))
                    for label, key in (
                        ("agency placements", "agency_placements"),
                        ("legal actions", "legal_actions"),
                    )
                ),
                *(
                    (
                        f"paid within {report['paid_within_days']} days ({p['currency']}, minor)",
                        str(p[CURRENT]),
                        str(p[CANDIDATE]),
                    )
                    for p in report["paid_within"]
                ),
            ]
        ),
        "",
        "contacts per debtor (contacts: debtors): "
        + "; ".join(
            f"{side} " + ", ".join(f"{k}: {n}" for k, n in contacts[side]["distribution"].items())
            for side in (CURRENT, CANDIDATE)
        ),
        "",
        *report["caveats"],
    ]
    return "\n".join(lines)


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(_cell(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _cell(text: str, width: int) -> str:
    """Figures to the right, words to the left."""
    return text.rjust(width) if text.lstrip("+-").replace(".", "", 1).isdigit() else text.ljust(width)
