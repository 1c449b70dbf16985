"""Collections KPIs: what `observe` keeps of a case's moves, and the rates and averages made of it,
worked out by hand under the default policy (an invoice due 2013-01-10)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal

from services.dunning.domain import Fact, decide, evolve, new_case
from services.dunning.kpis import (
    AGENCY,
    LEDGER,
    AgencyCounts,
    KpiFacts,
    MonthCounts,
    agency_figures,
    fee,
    month_figures,
    months_to,
    observe,
)

from . import Day, day
from .dunning_world import DEBTOR, POLICY, Books, agency_outcome, dispute, plan, promise

CASE = f"{DEBTOR}:EUR"


def observed(facts: Mapping[str, Iterable[Fact]], until: Day) -> KpiFacts:
    """Every business day from the first fact's to `until`: that day's facts applied, then the case
    decided when due, as the consumer does, with every move observed."""
    by_day = {day(d): list(fs) for d, fs in facts.items()}
    kpi, case, current = KpiFacts(), new_case("acme", DEBTOR, "EUR"), min(by_day)
    while current <= day(until):
        for fact in by_day.get(current, []):
            after, events = evolve(case, fact)
            observe(kpi, case, after, events, fact=fact)
            case = after
        if case.next_action_date is not None and case.next_action_date <= current:
            decision = decide(case, current, POLICY)
            observe(kpi, case, decision.case, decision.events, decision.commands)
            case = decision.case
        current += dt.timedelta(days=1)
    return kpi


def test_a_case_paid_after_the_claim_letter_is_cured_and_counts_the_days_from_that_letter() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [books.issue("I-1", 50_000, "2013-01-10", "2012-12-11")],
            "2013-02-20": [books.pay("I-1", 50_000, "2013-02-20")],
        },
        "2013-02-25",
    )
    # 500.00 EUR is the small band (3 days later on every step): the claim letter is due 30 + 3 days
    # after 2013-01-10, on 2013-02-12; the payment on 2013-02-20 closes the case 8 days later.
    (episode,) = kpi.episodes[("acme", CASE)]
    assert (episode.opened_on, episode.closed_on) == (dt.date(2012, 12, 11), dt.date(2013, 2, 20))
    assert (episode.last_step, episode.last_step_on) == ("claim_letter", dt.date(2013, 2, 12))
    assert episode.closed_by_payment and not episode.placed


def test_a_step_passed_over_or_a_courtesy_reminder_is_not_the_step_a_case_is_cured_at() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [books.issue("I-1", 5_000, "2013-01-10", "2012-12-11")],
            "2013-02-01": [books.pay("I-1", 5_000, "2013-02-01")],
            "2013-02-08": [books.issue("I-2", 3_000, "2013-03-10", "2013-02-08")],
            "2013-03-08": [books.pay("I-2", 3_000, "2013-03-08")],
        },
        "2013-03-12",
    )
    # 50.00 EUR: the formal notice 15 + 3 days after 2013-01-10, on 2013-01-28, and the phone call of
    # that day passed over (below its 100.00 minimum); paid 4 days later. I-2 gets only its courtesy
    # reminder (on 2013-03-07) before it is paid, two days before it falls due.
    first, second = kpi.episodes[("acme", CASE)]
    assert (first.last_step, first.last_step_on, first.closed_on) == (
        "formal_notice",
        dt.date(2013, 1, 28),
        dt.date(2013, 2, 1),
    )
    assert (second.opened_on, second.last_step, second.closed_on) == (
        dt.date(2013, 2, 8),
        None,
        dt.date(2013, 3, 8),
    )
    assert second.closed_by_payment and not second.placed


def test_a_case_closed_by_a_write_off_is_closed_not_by_payment() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [books.issue("I-1", 50_000, "2013-01-10", "2012-12-11")],
            "2013-01-20": [books.write_off("I-1", "2013-01-20")],
        },
        "2013-01-25",
    )
    (episode,) = kpi.episodes[("acme", CASE)]
    assert episode.closed_on == dt.date(2013, 1, 20) and episode.closed_by_payment is False


def test_promises_kept_broken_and_superseded() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [books.issue("I-1", 90_000, "2013-01-10", "2012-12-11")],
            # 300.00 by Jan 25, paid in two parts: kept on the day the second part arrives
            "2013-01-15": [promise(30_000, "2013-01-25", "2013-01-15", "P-1")],
            "2013-01-20": [books.pay("I-1", 10_000, "2013-01-20")],
            "2013-01-24": [books.pay("I-1", 20_000, "2013-01-24")],
            # 200.00 by Feb 5, nothing paid: broken once the 3 grace days are over, on Feb 9
            "2013-02-01": [promise(20_000, "2013-02-05", "2013-02-01", "P-2")],
            # a promise replaced by a payment plan before its date
            "2013-02-20": [promise(20_000, "2013-03-01", "2013-02-20", "P-3")],
            "2013-02-22": [plan([("2013-03-10", 30_000), ("2013-04-10", 30_000)], "2013-02-22")],
        },
        "2013-02-25",
    )
    rows = {key[2]: row for key, row in kpi.promises.items()}
    assert (rows["P-1"].outcome, rows["P-1"].outcome_on) == ("kept", dt.date(2013, 1, 24))
    assert (rows["P-1"].made_on, rows["P-1"].due_on, rows["P-1"].amount_minor) == (
        dt.date(2013, 1, 15),
        dt.date(2013, 1, 25),
        30_000,
    )
    assert (rows["P-2"].outcome, rows["P-2"].outcome_on) == ("broken", dt.date(2013, 2, 9))
    assert (rows["P-3"].outcome, rows["P-3"].outcome_on) == ("superseded", dt.date(2013, 2, 22))


def test_a_dispute_is_kept_with_the_invoice_outstanding_when_opened_and_its_resolution() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [
                books.issue("I-1", 40_000, "2013-01-10", "2012-12-11"),
                books.issue("I-2", 70_000, "2013-01-12", "2012-12-13"),
            ],
            "2013-01-05": [books.pay("I-2", 15_000, "2013-01-05")],
            "2013-01-14": [dispute("I-2", "2013-01-14"), dispute("I-1", "2013-01-15")],
            "2013-01-30": [dispute("I-1", "2013-01-30", opened=False)],
        },
        "2013-02-01",
    )
    opened = {key[2]: (r.invoice_id, r.amount_minor, r.opened_on) for key, r in kpi.disputes.items()}
    assert opened == {
        "DS-I-2": ("I-2", 70_000 - 15_000, dt.date(2013, 1, 14)),
        "DS-I-1": ("I-1", 40_000, dt.date(2013, 1, 15)),
    }
    assert kpi.resolved == {("acme", CASE, "DS-I-1"): dt.date(2013, 1, 30)}


def test_a_placement_counts_the_ledger_payments_on_the_placed_invoices_and_what_the_agency_reports() -> None:
    books = Books()
    kpi = observed(
        {
            "2013-01-01": [
                books.issue("I-1", 500_000, "2013-01-10", "2012-12-11"),
                books.issue("I-2", 20_000, "2013-03-20", "2013-02-20"),
            ],
            "2013-04-02": [books.pay("I-1", 200_000, "2013-04-02"), books.pay("I-2", 20_000, "2013-04-02")],
            "2013-04-03": [books.reverse("I-1", 50_000, "2013-04-03")],
            "2013-04-05": [agency_outcome("agency-a", "2013-04-05", 180_000)],
        },
        "2013-04-10",
    )
    # 5,000.00 EUR is the medium band (no shift): placed 60 days after 2013-01-10, on 2013-03-11,
    # with the agency first in fallback order; I-2 was not overdue then, so its payment is not counted.
    ((key, placement),) = kpi.placements.items()
    assert (placement.agency_id, placement.placed_on, placement.placed_minor) == (
        "agency-a",
        dt.date(2013, 3, 11),
        500_000,
    )
    by_source: dict[str, int] = {}
    for recovery in kpi.recoveries.values():
        assert recovery.placement_id == key[2]
        by_source[recovery.source] = by_source.get(recovery.source, 0) + recovery.amount_minor
    assert by_source == {LEDGER: 200_000 - 50_000, AGENCY: 180_000}
    (episode,) = kpi.episodes[("acme", CASE)]
    assert episode.placed


def test_month_figures_divide_by_hand() -> None:
    counts = MonthCounts(
        promises_made=6,
        promises_due=4,
        promises_kept=3,
        cases_closed=8,
        cured=5,
        cure_days={"friendly_reminder": (3 + 7 + 10, 3), "claim_letter": (8 + 13, 2)},
    )
    figures = month_figures("2013-02", counts)
    assert figures["promise_kept_rate"] == 0.75  # 3 / 4
    assert figures["cure_rate"] == 0.625  # 5 / 8
    assert figures["days_to_cure_by_step"] == {"claim_letter": 10.5, "friendly_reminder": 20 / 3}


def test_rates_are_null_without_a_denominator() -> None:
    figures = month_figures("2013-02", MonthCounts(promises_made=2))
    assert figures["promise_kept_rate"] is None and figures["cure_rate"] is None
    assert figures["days_to_cure_by_step"] == {}


def test_agency_figures_by_hand() -> None:
    counts = AgencyCounts(
        "agency-a",
        "unscored",
        "EUR",
        placed_cases=3,
        placed_minor=250_000,
        recovered_minor=100_000,
        reported_minor=120_000,
        recovered_cases=2,
        recovery_days=20 + 40,
    )
    figures = agency_figures(counts, Decimal("0.15"))
    assert figures["difference_minor"] == 20_000  # the agency reports 200.00 more than the ledger saw
    assert figures["recovery_rate"] == 0.4  # 100,000 / 250,000
    assert figures["average_days_to_recover"] == 30.0  # (20 + 40) / 2
    assert figures["fees_minor"] == 15_000  # 15 % of 100,000
    empty = agency_figures(AgencyCounts("agency-b", "high", "EUR", 0, 0, 0, 0, 0, 0), None)
    assert empty["recovery_rate"] is None and empty["average_days_to_recover"] is None
    assert empty["fees_minor"] is None


def test_a_fee_is_rounded_half_up_to_a_minor_unit() -> None:
    assert fee(333, Decimal("0.125")) == 42  # 41.625
    assert fee(100, Decimal("0.125")) == 13  # 12.5


def test_months_run_to_the_month_of_the_date_across_a_year_end() -> None:
    assert months_to(dt.date(2013, 2, 15), 3) == ["2012-12", "2013-01", "2013-02"]
    assert months_to(dt.date(2013, 2, 15), 1) == ["2013-02"]
