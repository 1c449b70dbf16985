"""Choosing a collection agency by past recovery for the kind of case, with a fallback order."""

from __future__ import annotations

from contracts.policy import AgencyRules, Tiers
from services.dunning.agencies import (
    ANY_BAND,
    AgencyKey,
    AgencyPerformance,
    AgencyRecord,
    amount_band,
    choose_agency,
    record_placement,
    record_recovery,
)
from services.dunning.policies import default_policy

RULES = AgencyRules.model_validate(
    {
        "agencies": [
            {"agency_id": "A"},
            {"agency_id": "B"},
            {"agency_id": "C", "currencies": ["USD"]},
            {"agency_id": "D", "segments": ["high"]},
        ],
        "fallback": ["B", "A"],
        "min_placements": 3,
    }
)


def choose(
    performance: AgencyPerformance, segment: str = "high", currency: str = "EUR", **kw: object
) -> str | None:
    return choose_agency(RULES, performance, segment=segment, currency=currency, band="medium", **kw)  # type: ignore[arg-type]


def history(*records: tuple[str, int, int, int]) -> AgencyPerformance:
    return {
        AgencyKey(a, "high", "EUR", "medium"): AgencyRecord(n, placed, got) for a, n, placed, got in records
    }


def test_without_history_the_fallback_order_decides_then_the_listed_order() -> None:
    assert choose({}) == "B"
    assert choose({}, exclude={"B"}) == "A"
    assert choose({}, exclude={"B", "A"}) == "D"
    assert choose({}, exclude={"B", "A", "D"}) is None


def test_the_best_recovery_rate_with_enough_placements_wins() -> None:
    assert choose(history(("A", 3, 1_000, 700), ("B", 5, 1_000, 600))) == "A"
    assert choose(history(("A", 2, 1_000, 900), ("B", 5, 1_000, 600))) == "B"  # A has too few placements
    assert (
        choose(history(("A", 3, 1_000, 600), ("D", 3, 2_000, 1_200))) == "A"
    )  # a tie goes by fallback order


def test_history_of_another_segment_currency_or_band_does_not_count() -> None:
    other = {
        AgencyKey("A", "low", "EUR", "medium"): AgencyRecord(10, 1_000, 1_000),
        AgencyKey("A", "high", "USD", "medium"): AgencyRecord(10, 1_000, 1_000),
        AgencyKey("A", "high", "EUR", "large"): AgencyRecord(10, 1_000, 1_000),
    }
    assert choose(other) == "B"


def test_agencies_serve_only_their_currencies_and_segments() -> None:
    assert choose({}, segment="low", exclude={"B", "A"}) is None
    assert choose({}, segment="low", currency="USD", exclude={"B", "A"}) == "C"


def test_the_record_adds_placements_and_recoveries() -> None:
    key = AgencyKey("A", "high", "EUR", "medium")
    performance = record_placement({}, key, 1_000)
    performance = record_placement(performance, key, 3_000)
    performance = record_recovery(performance, key, 1_000)
    assert performance[key] == AgencyRecord(2, 4_000, 1_000)
    assert str(performance[key].recovery_rate) == "1/4"


def test_amount_bands_per_currency() -> None:
    tiers = default_policy().tiers
    assert [amount_band(tiers, "EUR", a) for a in (0, 99_999, 100_000, 1_000_000)] == [
        "small",
        "small",
        "medium",
        "large",
    ]
    assert amount_band(tiers, "JPY", 10**9) == ANY_BAND
    assert amount_band(Tiers(), "EUR", 5) == ANY_BAND
