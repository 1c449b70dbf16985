"""Policy what-if: the versions in force per business day (`Calendar`), worked out once and shared by
every debtor of a replay, and the days a replay decides.

The worked example of test_dunning_simulation: one invoice of 2,000.00 EUR due on 2025-01-10 under the
default ladder, formal notice 15 days after the due date (2025-01-25)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from contracts.policy import DunningPolicy, PolicyPublished
from services.dunning.domain import Fact
from services.dunning.simulation import (
    Calendar,
    Day,
    DebtorTally,
    Input,
    Window,
    business_days,
    candidate_version,
    interleave,
    interleave_days,
    replay_debtor,
)

from .dunning_world import DEFAULT, POLICY, Books, dispute, hold, promise

DUE = dt.date(2025, 1, 10)
AMOUNT = 200_000
FORMAL_NOTICE = ("formal_notice", "formal_notice", "email")


def days(first: str, last: str) -> Iterator[dt.date]:
    on, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    while on <= end:
        yield on
        on += dt.timedelta(days=1)


def earlier_notice() -> DunningPolicy:
    raw = DEFAULT.model_dump(mode="json")
    for step in raw["steps"]:
        if step["name"] == "formal_notice":
            step["days"] = 9
    return DunningPolicy.model_validate(raw)


EARLIER_FROM_0116 = PolicyPublished(version=2, effective_from=dt.date(2025, 1, 16), document=earlier_notice())
"""A second published version, in force from 2025-01-16: the formal notice 9 days after the due date."""


def history(*extra: tuple[str, Callable[[Books], Fact]]) -> list[Input | Day]:
    """The invoice issued, every business day from 2025-01-01 to 2025-03-31, and facts recorded during
    their day."""
    books = Books()
    out: list[Input | Day] = [books.issue("INV-1", AMOUNT, DUE)]
    during = dict(extra)
    for on in days("2025-01-01", "2025-03-31"):
        out.append(Day(on))
        if on.isoformat() in during:
            out.append(during[on.isoformat()](books))
    return out


def replayed(
    steps: list[Input | Day],
    versions: list[PolicyPublished],
    window: Window,
    calendar: Calendar | None = None,
    debtor: str = "D-1",
) -> DebtorTally:
    candidate = candidate_version(versions, DEFAULT, window.start)
    return replay_debtor("acme", debtor, steps, versions, candidate, window, calendar=calendar)


def test_a_version_published_mid_history_plans_the_open_case_again_on_its_first_day() -> None:
    # Version 2 from 01-16 brings the formal notice forward to 01-19; the candidate (the default
    # ladder, as version 3 from the window's start) keeps it on 01-25.
    versions = [POLICY, EARLIER_FROM_0116]
    to_0119 = replayed(history(), versions, Window(dt.date(2025, 1, 13), dt.date(2025, 1, 19)))
    assert to_0119.current.commands[FORMAL_NOTICE] == 1
    assert to_0119.candidate.commands[FORMAL_NOTICE] == 0

    to_0118 = replayed(history(), versions, Window(dt.date(2025, 1, 13), dt.date(2025, 1, 18)))
    assert to_0118.current.commands[FORMAL_NOTICE] == 0

    # Issued on 01-19, so not again on 01-25 where version 1 had planned it.
    to_0125 = replayed(history(), versions, Window(dt.date(2025, 1, 20), dt.date(2025, 1, 25)))
    assert to_0125.current.commands[FORMAL_NOTICE] == 0
    # Under version 1 alone it is.
    assert (
        replayed(history(), [POLICY], Window(dt.date(2025, 1, 20), dt.date(2025, 1, 25))).current.commands[
            FORMAL_NOTICE
        ]
        == 1
    )


def test_debtors_sharing_a_calendar_tally_as_each_would_alone() -> None:
    histories = [
        history(),
        history(("2025-01-20", lambda b: b.pay("INV-1", AMOUNT, "2025-01-20"))),
        history(("2025-01-12", lambda b: promise(50_000, "2025-01-31", "2025-01-12"))),
        history(("2025-01-14", lambda _: dispute("INV-1", "2025-01-14"))),
        history(("2025-01-17", lambda _: hold("paused", "2025-01-17", until="2025-02-10"))),
        history(("2025-02-01", lambda b: b.pay("INV-1", 50_000, "2025-02-01"))),
    ]
    versions = [POLICY, EARLIER_FROM_0116]
    window = Window(dt.date(2025, 1, 13), dt.date(2025, 3, 15))
    shared = Calendar.of(versions, candidate_version(versions, DEFAULT, window.start))
    for n, steps in enumerate(histories):
        alone = replayed(steps, versions, window, debtor=f"D-{n}")
        assert replayed(steps, versions, window, shared, debtor=f"D-{n}") == alone
    # The histories differ in what they issue: the comparison above is not between empty tallies.
    tallies = [replayed(steps, versions, window) for steps in histories]
    assert len({tuple(sorted(t.current.commands.items())) for t in tallies}) > 3


def test_days_in_order_once_interleave_as_the_days_given_in_any_order() -> None:
    books = Books()
    records = [(2_000, books.issue("INV-1", AMOUNT, DUE)), (5_000, books.pay("INV-1", 1_000, "2025-01-03"))]
    given = [(4_000, dt.date(2025, 1, 3)), (1_000, dt.date(2025, 1, 1)), (3_000, dt.date(2025, 1, 2))]
    ordered = interleave_days(business_days(given), records)
    assert ordered == interleave(given, records)
    assert [s.business_date if isinstance(s, Day) else "fact" for s in ordered] == [
        dt.date(2025, 1, 1),
        "fact",
        dt.date(2025, 1, 2),
        dt.date(2025, 1, 3),
        "fact",
    ]
