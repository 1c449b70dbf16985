"""A new version of the policy, one given / when / then at a time: on its first business day every
open case is planned again under it, so that a case escalates on the new schedule, not on the date
the old version had planned.

The standard debtor owes invoice I1 of 5,000.00 EUR, due on 2024-03-01. Under version 1 (the default
policy) the case is placed with an agency on 2024-04-30 (60 days) and goes to legal action on
2024-06-29 (120 days); version 2 takes legal action at 100 days, on 2024-06-09."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from contracts.policy import PolicyPublished, policy_in_force
from services.dunning.domain import Case, Fact, decide, due_cases, evolve, is_due, new_case, opens_case

from . import Day, day
from .dunning_world import (
    DEBTOR,
    DEFAULT,
    POLICY,
    Books,
    Run,
    agency_outcome,
    hold,
    note,
    plan,
    policy,
    promise,
    result,
)

AMOUNT = 500_000


def version(number: int, effective_from: Day, **changes: Any) -> PolicyPublished:
    """The default policy with top-level fields replaced, as version `number` in force from a date."""
    return policy(**changes).model_copy(update={"version": number, "effective_from": day(effective_from)})


def legal_action_after(days: int) -> list[dict[str, Any]]:
    """The default ladder with legal action that many days past due."""
    steps = [s.model_dump(mode="json") for s in DEFAULT.steps]
    for step in steps:
        if step["name"] == "legal_action":
            step["days"] = days
    return steps


def owing() -> tuple[Books, dict[str, list[Fact]]]:
    books = Books()
    return books, {"2024-01-31": [books.issue("I1", AMOUNT, due="2024-03-01", issued="2024-01-31")]}


def run_days(
    facts: Mapping[str, Iterable[Fact]],
    until: Day,
    versions: Sequence[PolicyPublished],
    *,
    start: Day | None = None,
    case: Case | None = None,
) -> Run:
    """Every business day from `start` to `until`, the way the shell decides: apply the day's facts,
    then decide the case if it is due, by its next action date or, on the first day of the version in
    force, as an open case to plan again."""
    by_day: dict[dt.date, list[Fact]] = {}
    for d, fs in facts.items():
        by_day.setdefault(day(d), []).extend(fs)
    current = day(start) if start else min(by_day)
    run = Run(case or new_case("acme", DEBTOR, "EUR"))
    applied = run.case.planned_under
    while current <= day(until):
        for fact in by_day.get(current, []):
            run.case, events = evolve(run.case, fact)
            run.events.extend(events)
        in_force = policy_in_force(list(versions), current)
        if in_force is None:
            current += dt.timedelta(days=1)
            continue
        new_version = in_force if in_force.version != applied else None
        applied = in_force.version
        if due_cases([run.case], current, new_version):
            decision = decide(run.case, current, in_force)
            run.case = decision.case
            run.commands.extend(decision.commands)
            run.events.extend(decision.events)
            run.decisions.append((current, decision))
        current += dt.timedelta(days=1)
    return run


def placed_under_version_1() -> Run:
    """Given: the case placed with an agency under version 1, legal action planned for 2024-06-29."""
    _, facts = owing()
    run = run_days(facts, "2024-05-31", [POLICY])
    assert run.case.placement is not None and run.case.planned_under == POLICY.version
    assert run.case.next_action_date == day("2024-06-29")
    return run


def test_an_open_case_is_due_on_the_first_business_day_of_a_new_version() -> None:
    case = placed_under_version_1().case
    new = version(2, "2024-06-01", steps=legal_action_after(100))

    assert due_cases([case], day("2024-06-01"), POLICY) == []
    assert due_cases([case], day("2024-06-01"), new) == [case]


def test_a_new_version_plans_the_next_action_again_and_the_case_escalates_on_its_schedule() -> None:
    given = placed_under_version_1()
    new = version(2, "2024-06-01", steps=legal_action_after(100))

    run = run_days({}, "2024-07-15", [POLICY, new], start="2024-06-01", case=given.case)

    first, replanned = run.decisions[0]
    assert first == day("2024-06-01") and replanned.commands == ()
    assert replanned.case.next_action_date == day("2024-06-09")
    assert replanned.case.planned_under == 2
    on_the_day = [(c.business_date, c.action, c.policy_version) for c in run.commands]
    assert on_the_day == [
        (day("2024-06-09"), "recall_from_agency", 2),
        (day("2024-06-09"), "start_legal_action", 2),
        (day("2024-06-09"), "formal_notice", 2),  # the debtor is told of the legal action
    ]


def test_a_step_the_new_version_has_already_reached_is_taken_on_its_first_day() -> None:
    given = placed_under_version_1()
    new = version(2, "2024-06-15", steps=legal_action_after(100))

    run = run_days({}, "2024-06-30", [POLICY, new], start="2024-06-01", case=given.case)

    assert [(c.business_date, c.step, c.policy_version) for c in run.commands] == [
        (day("2024-06-15"), "agency_recall", 2),
        (day("2024-06-15"), "legal_action", 2),
        (day("2024-06-15"), "legal_action_notice", 2),
    ]


def test_a_version_published_after_its_effective_date_applies_on_the_next_business_day() -> None:
    case = placed_under_version_1().case
    late = version(2, "2024-05-01", steps=legal_action_after(100))

    assert is_due(case, day("2024-06-01"), late)
    decision = decide(case, day("2024-06-01"), late)
    assert decision.case.next_action_date == day("2024-06-09")


def test_once_planned_under_the_version_in_force_a_case_is_due_by_its_date_alone() -> None:
    case = placed_under_version_1().case
    new = version(2, "2024-06-01", steps=legal_action_after(100))

    replanned = decide(case, day("2024-06-01"), new).case

    assert not is_due(replanned, day("2024-06-01"), new)
    assert not is_due(replanned, day("2024-06-08"), new)
    assert is_due(replanned, day("2024-06-09"), new)
    again = decide(replanned, day("2024-06-01"), new)
    assert (again.commands, again.cancellations, again.events) == ((), (), ())


def test_a_held_case_is_planned_again_too() -> None:
    # Given a promise to pay by 2024-03-20 under version 1 (three days of grace: due again on 03-24)
    _, facts = owing()
    facts["2024-03-05"] = [promise(AMOUNT, by="2024-03-20", on="2024-03-05")]
    run = run_days(facts, "2024-03-10", [POLICY])
    assert run.case.status == "held" and run.case.next_action_date == day("2024-03-24")
    # When version 2 without grace days is in force from 2024-03-11
    strict = version(2, "2024-03-11", promise_grace_days=0)
    after = run_days({}, "2024-03-25", [POLICY, strict], start="2024-03-11", case=run.case)
    # Then the promise is broken the day after its date, not three days later
    assert [d for d, _ in after.decisions][:2] == [day("2024-03-11"), day("2024-03-21")]
    assert "promise_broken" in [e.change for e in after.decisions[1][1].events]


def test_a_closed_case_is_not_planned_again() -> None:
    books, facts = owing()
    facts["2024-03-10"] = [books.pay("I1", AMOUNT, on="2024-03-10")]
    run = run_days(facts, "2024-03-12", [POLICY])
    assert run.case.status == "closed"

    assert not is_due(run.case, day("2024-04-01"), version(2, "2024-04-01"))


def test_only_a_balance_fact_opens_a_case() -> None:
    books, _ = owing()
    assert opens_case(books.issue("I2", AMOUNT, due="2024-04-01"))
    recorded_only = [
        note("called", on="2024-03-02"),
        hold("manual", on="2024-03-02", currency="EUR"),
        promise(AMOUNT, by="2024-03-20", on="2024-03-02"),
        plan([("2024-03-20", AMOUNT)], on="2024-03-02"),
        agency_outcome("agency-a", on="2024-03-02"),
    ]
    assert not any(opens_case(fact) for fact in recorded_only)
    command = placed_under_version_1().command("agency_placement")
    assert not opens_case(result(command, "failed", permanent=True))
