"""Policy what-if on a sample of the debtors: the same debtors on every run, figures scaled to the
tenant, and margins that hold the tenant's true figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
from collections import Counter

import pytest

from services.dunning.replay import simulate
from services.dunning.simulation import (
    DebtorTally,
    Report,
    Tally,
    Window,
    report_json,
    report_table,
    sampled,
)

WINDOW = Window(dt.date(2025, 2, 1), dt.date(2025, 3, 31))
NOTICE = ("formal_notice", "formal_notice", "letter")


def tally(notices: int, contacts: int, placed: int = 0) -> Tally:
    return Tally(commands=Counter({NOTICE: notices}), contacts=Counter({contacts: 1}), placed=placed)


def population(size: int, seed: int) -> dict[str, DebtorTally]:
    """Debtors whose candidate sends a formal notice more often than the published policy."""
    rng = random.Random(seed)
    debtors = {}
    for n in range(size):
        current = rng.choice((0, 0, 1, 1, 2))
        candidate = current + rng.choice((0, 1, 1))
        debtors[f"D-{n}"] = DebtorTally(
            current=tally(current, current + 1, placed=rng.random() < 0.05),
            candidate=tally(candidate, candidate + 1, placed=rng.random() < 0.08),
            in_scope=True,
        )
    return debtors


def report_of(debtors: dict[str, DebtorTally], fraction: float) -> Report:
    report = Report("acme", WINDOW, [1], 2, sample=fraction)
    for debtor in sorted(debtors):
        if sampled("acme", debtor, fraction):
            report.add(debtors[debtor])
    return report


def test_a_sample_is_the_same_debtors_every_time_and_about_its_fraction() -> None:
    keys = [f"D-{n}" for n in range(20_000)]
    chosen = [k for k in keys if sampled("acme", k, 0.1)]
    assert chosen == [k for k in keys if sampled("acme", k, 0.1)]
    assert 1_800 <= len(chosen) <= 2_200
    assert all(sampled("acme", k, 1.0) for k in keys[:100])
    assert chosen != [k for k in keys if sampled("other", k, 0.1)], "another tenant, another sample"


def test_without_a_sample_the_report_is_exact_and_has_no_margins() -> None:
    debtors = population(500, seed=1)
    report = report_json(report_of(debtors, 1.0))
    [notices] = report["commands"]
    assert notices["current"] == sum(t.current.commands[NOTICE] for t in debtors.values())
    assert "margin" not in notices and "sample" not in report


def test_estimates_are_the_sample_scaled_with_the_horvitz_thompson_margin() -> None:
    debtors = {"A": population(1, 1)["D-0"], "B": population(2, 2)["D-1"]}
    report = Report("acme", WINDOW, [1], 2, sample=0.5)
    for t in debtors.values():
        report.add(t)
    [notices] = report_json(report)["commands"]
    values = [t.current.commands[NOTICE] for t in debtors.values()]
    assert notices["current"] == round(sum(values) / 0.5)
    assert notices["margin"]["current"] == round(1.96 * math.sqrt(0.5 / 0.25 * sum(v * v for v in values)))


def test_the_tenants_true_figures_lie_within_the_margins_of_a_five_percent_sample() -> None:
    debtors = population(40_000, seed=7)
    exact = report_json(report_of(debtors, 1.0))
    estimate = report_json(report_of(debtors, 0.05))

    assert estimate["sample"]["debtors_replayed"] < 2_400
    for figure in ("current", "candidate", "difference"):
        true, guess = exact["commands"][0][figure], estimate["commands"][0][figure]
        assert abs(guess - true) <= estimate["commands"][0]["margin"][figure], (figure, true, guess)
        assert estimate["commands"][0]["margin"][figure] < 0.1 * max(abs(true), 1)
    placed = estimate["agency_placements"]
    assert (
        abs(placed["difference"] - exact["agency_placements"]["difference"]) <= placed["margin"]["difference"]
    )
    assert abs(estimate["debtors"] - 40_000) < 0.1 * 40_000


def test_the_table_says_it_is_an_estimate_and_shows_the_margin() -> None:
    text = report_table(report_json(report_of(population(2_000, seed=3), 0.1)))
    assert "estimated from a 10% sample" in text
    assert "± 95 %" in text


def test_the_shell_replays_only_the_sampled_debtors_of_the_log() -> None:
    from tests.unit.test_dunning_simulation import earlier_notice, recorded_log

    log = recorded_log()
    window = Window(dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    fraction = 0.556  # between the hashes of acme:D-1 (0.5541) and acme:D-2 (0.5576)
    assert [d for d in ("D-1", "D-2") if sampled("acme", d, fraction)] == ["D-1"]

    report = asyncio.run(simulate(log, "acme", earlier_notice(), window, sample=fraction))

    assert (report.sample, report.debtors) == (fraction, 1)
    assert report.current.commands[("formal_notice", "formal_notice", "email")] == 1
    assert report_json(report)["debtors"] == round(1 / fraction)
    with pytest.raises(ValueError, match="fraction"):
        asyncio.run(simulate(log, "acme", earlier_notice(), window, sample=0))
