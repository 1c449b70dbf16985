"""Properties of the dunning decider over random debtors, payments, disputes, promises, plans, holds,
contact outcomes, time zones, consents, caps, quiet hours and send windows.

Each scenario is run day by day the way the shell runs it: a day's facts through `evolve`, then
`decide` when the case is due, with the notifier's outcome of each command arriving the next day.
Beside the case, the run keeps its own plain record of what should hold (open disputes, holds,
promises, balances) to check the decisions against."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import given as for_all
from hypothesis import strategies as st

from contracts.channels import CHANNELS
from contracts.collections import (
    KEPT_WHILE_HELD,
    CaseEvent,
    CollectionCommand,
    CommandCancelled,
    ContactOutcome,
    HoldKind,
)
from contracts.policy import DEBTOR_FACING, DunningPolicy, PolicyPublished
from services.dunning.domain import (
    Case,
    DebtorFacts,
    Fact,
    decide,
    dump_case,
    evolve,
    load_case,
    load_case_json,
    new_case,
)

from .dunning_world import DEFAULT, Books, dispute, hold, plan, profile, promise, result

START = dt.date(2024, 1, 1)
DAYS = 300
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/St_Johns",
)
HOLD_KINDS: tuple[HoldKind, ...] = ("manual", "insolvency", "paused")
OUTCOMES: tuple[ContactOutcome | None, ...] = (
    None,
    "delivered",
    "delivered",
    "attempted",
    "skipped",
    "failed",
)


# --- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """Something that happens on a day, resolved against the books when it happens."""

    day: int
    kind: str
    invoice: int = 0
    share: float = 1.0
    offset: int = 0
    amount: int = 0
    hold_kind: HoldKind = "manual"


@dataclass(frozen=True)
class Scenario:
    invoices: tuple[tuple[int, int, int], ...]  # (issue day, days to due, amount)
    intents: tuple[Intent, ...]
    outcomes: tuple[ContactOutcome | None, ...]
    policy: PolicyPublished
    debtor: DebtorFacts
    settle_on: int | None = None


def _minutes(n: int) -> str:
    return f"{n // 60:02d}:{n % 60:02d}"


@st.composite
def times_of_day(draw: st.DrawFn) -> dict[str, object]:
    """Quiet hours and a send window clear of them, at quarter-hour steps."""
    quarter = 15
    if draw(st.booleans()):  # quiet hours over midnight, the window between them
        quiet_end = draw(st.integers(0, 40)) * quarter
        quiet_start = draw(st.integers(quiet_end // quarter + 2, 95)) * quarter
        start = draw(st.integers(quiet_end // quarter, quiet_start // quarter - 1)) * quarter
        end = draw(st.integers(start // quarter + 1, quiet_start // quarter)) * quarter
    else:  # quiet hours within a day, the window after them
        quiet_start = draw(st.integers(0, 80)) * quarter
        quiet_end = draw(st.integers(quiet_start // quarter + 1, 90)) * quarter
        start = draw(st.integers(quiet_end // quarter, 94)) * quarter
        end = draw(st.integers(start // quarter + 1, 95)) * quarter
    return {
        "quiet_hours": {"start": _minutes(quiet_start), "end": _minutes(quiet_end)},
        "send_window": {"start": _minutes(start), "end": _minutes(end)},
    }


@st.composite
def policies(draw: st.DrawFn) -> PolicyPublished:
    raw = DEFAULT.model_dump(mode="json")
    raw.update(draw(times_of_day()))
    raw["contact_caps"] = draw(
        st.lists(
            st.fixed_dictionaries({"max_contacts": st.integers(1, 4), "period_days": st.integers(1, 40)}),
            max_size=3,
        )
    )
    raw["min_days_between_steps"] = draw(st.integers(0, 10))
    raw["tiers"]["segment_shifts"] = {"high": draw(st.integers(-20, 0)), "low": draw(st.integers(0, 20))}
    raw["agency"]["recall_after_days"] = draw(st.integers(5, 60))
    return PolicyPublished(version=1, effective_from=START, document=DunningPolicy.model_validate(raw))


@st.composite
def debtors(draw: st.DrawFn) -> DebtorFacts:
    consent = draw(st.none() | st.lists(st.sampled_from(CHANNELS), unique=True))
    fields: dict[str, object] = {"timezone": draw(st.sampled_from(ZONES))}
    if consent is not None:
        fields["consented_channels"] = consent
    return DebtorFacts(
        profile=profile(**fields), segment=draw(st.sampled_from((None, "low", "medium", "high")))
    )


day_numbers = st.integers(0, DAYS - 1)
invoice_numbers = st.integers(0, 3)
intents = st.one_of(
    st.builds(
        Intent, day=day_numbers, kind=st.just("pay"), invoice=invoice_numbers, share=st.floats(0.05, 1.0)
    ),
    st.builds(Intent, day=day_numbers, kind=st.just("pay"), invoice=invoice_numbers, share=st.just(1.0)),
    st.builds(Intent, day=day_numbers, kind=st.just("reverse"), invoice=invoice_numbers),
    st.builds(Intent, day=day_numbers, kind=st.just("write_off"), invoice=invoice_numbers),
    st.builds(Intent, day=day_numbers, kind=st.sampled_from(("dispute", "resolve")), invoice=invoice_numbers),
    st.builds(
        Intent,
        day=day_numbers,
        kind=st.just("promise"),
        offset=st.integers(0, 30),
        amount=st.integers(1, 3_000_000),
    ),
    st.builds(
        Intent,
        day=day_numbers,
        kind=st.just("plan"),
        offset=st.integers(1, 4),
        amount=st.integers(1, 1_000_000),
    ),
    st.builds(
        Intent,
        day=day_numbers,
        kind=st.sampled_from(("hold", "release")),
        hold_kind=st.sampled_from(HOLD_KINDS),
        offset=st.integers(0, 40),
    ),
)


@st.composite
def scenarios(draw: st.DrawFn, *, settle: bool = False) -> Scenario:
    invoices = draw(
        st.lists(
            st.tuples(st.integers(0, 150), st.integers(0, 45), st.integers(1_000, 3_000_000)),
            min_size=1,
            max_size=4,
        )
    )
    return Scenario(
        invoices=tuple(invoices),
        intents=tuple(draw(st.lists(intents, max_size=14))),
        outcomes=tuple(draw(st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=8))),
        policy=draw(policies()),
        debtor=draw(debtors()),
        settle_on=draw(st.integers(20, DAYS - 30)) if settle else None,
    )


# --- running a scenario --------------------------------------------------------------------------


@dataclass
class Seen:
    """What the run's own record says about a decision day, before deciding."""

    day: dt.date
    open_items: dict[str, int]
    due_dates: dict[str, dt.date]
    disputed: set[str]
    held: bool


@dataclass
class Trace:
    case: Case
    commands: list[CollectionCommand] = field(default_factory=list)
    cancellations: list[CommandCancelled] = field(default_factory=list)
    events: list[CaseEvent] = field(default_factory=list)
    decisions: list[tuple[Seen, list[CollectionCommand]]] = field(default_factory=list)
    unreached: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)


def run(scenario: Scenario, *, store: bool = False) -> Trace:
    books = Books()
    trace = Trace(new_case("acme", "D-1", "EUR"))
    doc = scenario.policy.document
    names = [f"I{n}" for n in range(len(scenario.invoices))]
    paid: dict[str, list[int]] = {name: [] for name in names}
    disputed: set[str] = set()
    holds: dict[str, dt.date | None] = {}
    # Until the promised date (plus grace) or the first instalment (plus grace), unless paid toward.
    promised: dt.date | None = None
    planned: dt.date | None = None
    replies: dict[dt.date, list[Fact]] = {}
    answered = 0
    settled = False

    for n in range(DAYS):
        today = START + dt.timedelta(days=n)
        facts: list[Fact] = list(replies.pop(today, []))
        if scenario.settle_on is not None and n >= scenario.settle_on:
            if not settled:
                facts += [books.pay(i, amount, on=today) for i, amount in books.outstanding().items()]
                settled = True
        else:
            for name, (issued, term, amount) in zip(names, scenario.invoices, strict=True):
                if issued == n:
                    due = today + dt.timedelta(days=term)
                    facts.append(books.issue(name, amount, due=due, issued=today))
            for intent in (i for i in scenario.intents if i.day == n):
                facts += _happen(intent, names, books, paid, today)
        for fact in facts:
            kind = fact.type
            if kind.startswith("ar.receivable.") and fact.data.change.amount_minor < 0:  # type: ignore[union-attr]
                promised = planned = None
            if kind == "ar.dispute.opened.v1":
                disputed.add(fact.data.invoice_id)  # type: ignore[union-attr]
            elif kind == "ar.dispute.resolved.v1":
                disputed.discard(fact.data.invoice_id)  # type: ignore[union-attr]
            elif kind == "ar.hold.placed.v1":
                holds[fact.data.hold_id] = fact.data.until  # type: ignore[union-attr]
            elif kind == "ar.hold.released.v1":
                holds.pop(fact.data.hold_id, None)  # type: ignore[union-attr]
            elif kind == "ar.promise.made.v1":
                promised = fact.data.promised_date + dt.timedelta(days=doc.promise_grace_days)  # type: ignore[union-attr]
            elif kind == "ar.plan.agreed.v1":
                first = fact.data.instalments[0].due_date  # type: ignore[union-attr]
                planned, promised = first + dt.timedelta(days=doc.plan_grace_days), None
            elif kind.startswith("ar.contact."):
                command_id = fact.data.command_id  # type: ignore[union-attr]
                outcome = fact.data.outcome  # type: ignore[union-attr]
                if outcome in ("delivered", "skipped", "failed"):
                    trace.finished.add(command_id)
                if outcome in ("skipped", "failed"):
                    trace.unreached.add(command_id)
            trace.case, events = evolve(trace.case, fact)
            trace.events += events
        if not books.outstanding():  # a case with nothing outstanding drops its promise and plan
            promised = planned = None
        next_action = trace.case.next_action_date
        if next_action is None or next_action > today:
            continue
        in_force = {h for h, until in holds.items() if until is None or today <= until}
        promise_holds = promised is not None and today <= promised
        plan_holds = planned is not None and today <= planned
        seen = Seen(
            today,
            books.outstanding(),
            {i: books.invoices[i][1] for i in books.invoices},
            set(disputed),
            bool(in_force) or promise_holds or plan_holds,
        )
        decision = decide(trace.case, today, scenario.policy, scenario.debtor)
        trace.case = decision.case
        if store:  # as JSON with its keys sorted, the way JSONB gives it back: no order to rely on
            stored = json.dumps(dump_case(decision.case), sort_keys=True)
            trace.case = load_case(json.loads(stored))
            assert load_case_json(stored) == trace.case  # the shell's fast path reads the same case
        trace.commands += decision.commands
        trace.cancellations += decision.cancellations
        trace.events += decision.events
        trace.decisions.append((seen, list(decision.commands)))
        for command in decision.commands:
            outcome = scenario.outcomes[answered % len(scenario.outcomes)]
            answered += 1
            if outcome is not None:
                permanent = outcome == "failed"
                replies.setdefault(today + dt.timedelta(days=1), []).append(
                    result(command, outcome, permanent=permanent)
                )
    return trace


def _happen(
    intent: Intent, names: list[str], books: Books, paid: dict[str, list[int]], today: dt.date
) -> list[Fact]:
    name = names[intent.invoice % len(names)]
    known = name in books.invoices
    outstanding = books.outstanding().get(name, 0)
    match intent.kind:
        case "pay" if outstanding:
            amount = max(1, math.ceil(outstanding * intent.share))
            paid[name].append(amount)
            return [books.pay(name, amount, on=today)]
        case "reverse" if paid.get(name):
            return [books.reverse(name, paid[name].pop(), on=today)]
        case "write_off" if outstanding:
            return [books.write_off(name, on=today)]
        case "dispute" | "resolve" if known:
            return [dispute(name, on=today, opened=intent.kind == "dispute")]
        case "promise":
            return [promise(intent.amount, by=today + dt.timedelta(days=intent.offset), on=today)]
        case "plan":
            instalments = [
                (today + dt.timedelta(days=14 * (k + 1)), intent.amount) for k in range(intent.offset)
            ]
            return [plan(instalments, on=today)]
        case "hold":
            until = today + dt.timedelta(days=intent.offset) if intent.offset % 2 else None
            return [hold(intent.hold_kind, on=today, until=until, hold_id=f"H-{intent.hold_kind}")]
        case "release":
            return [hold(intent.hold_kind, on=today, placed=False, hold_id=f"H-{intent.hold_kind}")]
    return []


def property_test(
    strategy: st.SearchStrategy[Scenario],
) -> Callable[[Callable[[Scenario], None]], Callable[[], None]]:
    def wrap(test: Callable[[Scenario], None]) -> Callable[[], None]:
        wrapped: Callable[[], None] = settings(
            max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )(for_all(strategy)(test))
        return wrapped

    return wrap


# --- the properties ------------------------------------------------------------------------------


@property_test(scenarios())
def test_never_contacts_a_held_item_or_a_held_case(scenario: Scenario) -> None:
    trace = run(scenario)
    for seen, commands in trace.decisions:
        for command in commands:
            if command.step in KEPT_WHILE_HELD or command.action == "recall_from_agency":
                continue  # a task for our own team or word to the agency: no contact with the debtor
            listed = {i.invoice_id for i in command.items}
            assert not listed & seen.disputed, (seen.day, command.step, listed & seen.disputed)
            assert not seen.held, (seen.day, command.step)


@property_test(scenarios())
def test_never_exceeds_the_contact_caps(scenario: Scenario) -> None:
    trace = run(scenario)
    cancelled = {c.command_id for c in trace.cancellations}
    contacts = sorted(
        c.business_date
        for c in trace.commands
        if c.action in DEBTOR_FACING and c.command_id not in cancelled and c.command_id not in trace.unreached
    )
    for cap in scenario.policy.document.contact_caps:
        for first in contacts:
            window = [c for c in contacts if first <= c < first + dt.timedelta(days=cap.period_days)]
            assert len(window) <= cap.max_contacts, (cap, window)


@property_test(scenarios())
def test_never_sends_in_quiet_hours(scenario: Scenario) -> None:
    trace = run(scenario)
    doc = scenario.policy.document
    assert doc.quiet_hours is not None and scenario.debtor.profile is not None
    zone = ZoneInfo(scenario.debtor.profile.timezone)
    for command in trace.commands:
        if command.action not in DEBTOR_FACING:
            assert command.send_after is None and command.send_before is None
            continue
        after, before = command.send_after, command.send_before
        assert after is not None and before is not None and after < before
        assert after.astimezone(zone).date() >= command.business_date
        moment = after
        while moment < before:
            local = moment.astimezone(zone).time()
            assert not doc.quiet_hours.contains(local), (command.step, moment, local)
            assert doc.send_window.start <= local < doc.send_window.end, (command.step, moment, local)
            moment += dt.timedelta(minutes=10)


@property_test(scenarios(settle=True))
def test_always_stops_after_full_payment(scenario: Scenario) -> None:
    trace = run(scenario)
    assert scenario.settle_on is not None
    settled = START + dt.timedelta(days=scenario.settle_on)
    assert [c.step for c in trace.commands if c.business_date >= settled] == []
    cancelled = {c.command_id for c in trace.cancellations}
    issued = {c.command_id for c in trace.commands}
    assert issued - cancelled - trace.finished == set()
    assert trace.case.status == "closed" and trace.case.pending == {} and trace.case.next_action_date is None


@property_test(scenarios())
def test_replaying_the_same_facts_gives_the_same_decisions(scenario: Scenario) -> None:
    first, again, stored = run(scenario), run(scenario), run(scenario, store=True)
    for other in (again, stored):
        assert other.commands == first.commands
        assert other.cancellations == first.cancellations
        assert other.events == first.events
    assert len({c.command_id for c in first.commands}) == len(first.commands)


@property_test(scenarios())
def test_one_command_per_step_listing_every_overdue_item(scenario: Scenario) -> None:
    trace = run(scenario)
    ladder = {s.name: s for s in scenario.policy.document.steps}
    for seen, commands in trace.decisions:
        steps = [c.step for c in commands]
        assert len(steps) == len(set(steps)), steps
        for command in commands:
            assert command.total.amount_minor == sum(i.outstanding.amount_minor for i in command.items)
            if command.step in KEPT_WHILE_HELD:  # the disputed item, or every item for the administrator
                continue
            listed = {i.invoice_id for i in command.items}
            if command.step in ladder and ladder[command.step].days <= 0:
                assert all(seen.due_dates[i] >= seen.day for i in listed)
                continue
            overdue = {i for i in seen.open_items if seen.due_dates[i] < seen.day and i not in seen.disputed}
            if command.action == "recall_from_agency":
                assert overdue <= listed
            else:
                assert listed == overdue, (seen.day, command.step)


@property_test(scenarios())
def test_a_case_is_placed_with_one_agency_at_a_time(scenario: Scenario) -> None:
    trace = run(scenario)
    placed: str | None = None
    for event in trace.events:
        if event.change == "placed":
            assert placed is None, (event.business_date, placed, event.agency_id)
            placed = event.agency_id
        elif event.change in ("recalled", "closed"):
            placed = None
