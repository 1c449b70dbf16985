"""Policy what-if: a candidate policy replayed over a recorded history beside the published versions.

The worked example: one invoice of 2,000.00 EUR (a medium amount: no shift of the ladder, no score)
falling due on 2025-01-10, under the default ladder: courtesy reminder 3 days before (01-07), friendly
reminder 1 day after (01-11), formal notice and phone call 15 days after (01-25), claim letter after 30
(02-09), final demand and credit hold after 45 (02-24), agency placement after 60 (03-11)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

from contracts.clock import BusinessDayStarted, clock_event_id
from contracts.policy import DunningPolicy
from contracts.registry import encode_event, make_event
from contracts.topics import catalogue
from services.dunning.replay import simulate
from services.dunning.simulation import (
    Day,
    DebtorTally,
    Input,
    Window,
    candidate_version,
    replay_debtor,
    report_json,
    report_table,
)
from services.runtime.log import Message
from services.runtime.memory_log import InProcessLog

from .dunning_world import DEFAULT, POLICY, Books

DUE = dt.date(2025, 1, 10)
AMOUNT = 200_000


def days(first: str, last: str) -> Iterator[dt.date]:
    on, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    while on <= end:
        yield on
        on += dt.timedelta(days=1)


def document(**changes: Any) -> DunningPolicy:
    raw = DEFAULT.model_dump(mode="json")
    raw.update(changes)
    return DunningPolicy.model_validate(raw)


def earlier_notice() -> DunningPolicy:
    """The default ladder with the formal notice 9 days after the due date instead of 15."""
    ladder = DEFAULT.model_dump(mode="json")["steps"]
    for step in ladder:
        if step["name"] == "formal_notice":
            step["days"] = 9
    return document(steps=ladder)


def no_agency() -> DunningPolicy:
    ladder = [s for s in DEFAULT.model_dump(mode="json")["steps"] if s["name"] != "agency_placement"]
    return document(steps=ladder)


def history(*paid: tuple[str, int], until: str = "2025-03-31") -> list[Input | Day]:
    """The invoice issued on 2024-12-11, every business day from 2025-01-01 to `until`, and the
    payments (business date, minor units) posted during their day."""
    books = Books()
    out: list[Input | Day] = [books.issue("INV-1", AMOUNT, DUE)]
    payments = dict(paid)
    for on in days("2025-01-01", until):
        out.append(Day(on))
        if on.isoformat() in payments:
            out.append(books.pay("INV-1", payments[on.isoformat()], on))
    return out


def when_replayed(
    steps_: list[Input | Day], candidate: DunningPolicy, start: str, end: str, paid_within: int = 14
) -> DebtorTally:
    window = Window(dt.date.fromisoformat(start), dt.date.fromisoformat(end), paid_within)
    published = candidate_version([POLICY], candidate, window.start)
    return replay_debtor("acme", "D-1", steps_, [POLICY], published, window)


def test_a_candidate_with_an_earlier_formal_notice_issues_it_on_its_day() -> None:
    # 9 days after 2025-01-10 is 2025-01-19; the published ladder waits until 2025-01-25.
    on_the_day = when_replayed(history(), earlier_notice(), "2025-01-13", "2025-01-19")
    assert on_the_day.candidate.commands[("formal_notice", "formal_notice", "email")] == 1
    assert on_the_day.current.commands[("formal_notice", "formal_notice", "email")] == 0

    a_day_before = when_replayed(history(), earlier_notice(), "2025-01-13", "2025-01-18")
    assert a_day_before.candidate.commands[("formal_notice", "formal_notice", "email")] == 0

    published = when_replayed(history(), earlier_notice(), "2025-01-25", "2025-01-25")
    assert published.current.commands[("formal_notice", "formal_notice", "email")] == 1


def test_the_current_side_issues_what_the_published_ladder_says_in_the_window() -> None:
    # 2025-01-13 to 2025-01-31: formal notice and phone call on 01-25, nothing else.
    tally = when_replayed(history(), DEFAULT, "2025-01-13", "2025-01-31")
    assert dict(tally.current.commands) == {
        ("formal_notice", "formal_notice", "email"): 1,
        ("phone_call", "schedule_call", "call"): 1,
    }
    assert tally.in_scope
    # The same document as a candidate decides the same.
    assert tally.candidate.commands == tally.current.commands


def test_a_candidate_without_the_agency_step_places_no_case() -> None:
    # The placement is due on 2025-03-11, 60 days after the due date.
    tally = when_replayed(history(), no_agency(), "2025-03-01", "2025-03-31")
    assert tally.current.placed == 1
    assert tally.current.commands[("agency_placement", "place_with_agency", "webhook")] == 1
    assert tally.candidate.placed == 0
    assert tally.candidate.commands[("agency_placement", "place_with_agency", "webhook")] == 0


def test_paid_within_n_days_counts_a_payment_n_days_after_a_command_and_not_n_plus_one() -> None:
    # The last command in the window 01-13..01-31 is of 01-25: 14 days later is 02-08.
    counted = when_replayed(history(("2025-02-08", 5_000)), DEFAULT, "2025-01-13", "2025-01-31")
    assert counted.current.paid == {"EUR": 5_000}
    assert counted.candidate.paid == {"EUR": 5_000}

    too_late = when_replayed(history(("2025-02-09", 5_000)), DEFAULT, "2025-01-13", "2025-01-31")
    assert too_late.current.paid == {}

    within_seven = when_replayed(history(("2025-02-01", 5_000)), DEFAULT, "2025-01-13", "2025-01-31", 7)
    assert within_seven.current.paid == {"EUR": 5_000}


def test_contacts_are_the_debtor_contacts_of_the_window() -> None:
    # In 2025-01-13..2025-02-28: formal notice and phone call (01-25), claim letter (02-09) and final
    # demand (02-24) reach the debtor; the credit hold request (02-24) goes to the ERP.
    tally = when_replayed(history(), DEFAULT, "2025-01-13", "2025-02-28")
    assert tally.current.contacts == {4: 1}
    assert tally.current.commands[("credit_hold", "request_credit_hold", "webhook")] == 1


# --- the shell over a log in memory -----------------------------------------------------------------

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z in ms


def message(
    tenant: str, debtor: str | None, data: Any, event_id: str, at_ms: int, event_type: str = ""
) -> Message:
    """The record the log took at `at_ms` (milliseconds since the epoch)."""
    event = make_event(
        event_type or data.TYPES[0],
        data,
        event_id=event_id,
        tenant_id=tenant,
        debtor_id=debtor,
        source="tests",
        time=dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC),
    )
    return Message(data.TOPIC, event.key.encode(), encode_event(event), timestamp_ms=at_ms)


def recorded_log() -> InProcessLog:
    """Tenant acme: D-1 with the worked example's invoice, D-2 with an invoice of the same amount due
    a month later; tenant other: the worked example's invoice under the same debtor id."""
    log = InProcessLog()
    records: list[Message] = []
    for tenant in ("acme", "other"):
        records.append(message(tenant, None, POLICY, f"p-{tenant}", T0))
    for tenant, debtor, due in (
        ("acme", "D-1", DUE),
        ("acme", "D-2", dt.date(2025, 2, 10)),
        ("other", "D-1", DUE),
    ):
        fact = Books().issue("INV-1", AMOUNT, due)
        records.append(message(tenant, debtor, fact.data, f"{tenant}-{debtor}-inv", T0 + 1, fact.type))
    for n, on in enumerate(days("2025-01-01", "2025-03-31")):
        for tenant in ("acme", "other"):
            at = T0 + 10 + n * 86_400_000
            records.append(
                message(
                    tenant,
                    None,
                    BusinessDayStarted(business_date=on),
                    clock_event_id(tenant, on),
                    at,
                )
            )
    asyncio.run(log.publish(records))
    return log


def test_a_tenants_other_debtors_count_apart_and_other_tenants_not_at_all() -> None:
    log = recorded_log()
    window = Window(dt.date(2025, 1, 13), dt.date(2025, 1, 31))
    report = asyncio.run(simulate(log, "acme", earlier_notice(), window))
    # D-1: formal notice 01-25 (current) and 01-19 (candidate); D-2 (due 02-10): its courtesy
    # reminder on 02-07 falls after the window, so nothing. Tenant other's D-1 is not counted.
    assert report.debtors == 2
    assert report.current.commands[("formal_notice", "formal_notice", "email")] == 1
    assert report.candidate.commands[("formal_notice", "formal_notice", "email")] == 1
    assert report.current_versions == [1]
    assert report.candidate_version == 2


def test_the_live_state_is_untouched() -> None:
    log = recorded_log()
    before = {(t, p): list(log.records(t, p)) for t, count, _ in catalogue() for p in range(count)}
    window = Window(dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    asyncio.run(simulate(log, "acme", no_agency(), window))
    after = {(t, p): list(log.records(t, p)) for t, count, _ in catalogue() for p in range(count)}
    assert after == before
    assert sum(len(records) for records in after.values()) == 2 + 3 + 2 * 90


def test_the_table_shows_each_policy_and_the_difference() -> None:
    window = Window(dt.date(2025, 1, 13), dt.date(2025, 1, 19))
    report = asyncio.run(simulate(recorded_log(), "acme", earlier_notice(), window))
    table = report_table(report_json(report)).splitlines()
    notice = next(line.split() for line in table if line.startswith("formal_notice"))
    assert notice == ["formal_notice", "formal_notice", "email", "0", "1", "+1"]
    assert any("how a debtor would have reacted" in line for line in table)
