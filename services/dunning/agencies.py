"""Choosing a collection agency for a case by past recovery, and keeping that record.

Performance is kept per agency, risk segment, currency and amount band: how many cases were placed,
how much was placed and how much the agency recovered. An agency's recovery rate for a kind of case
is recovered / placed, compared exactly (fractions, not floats).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction

from contracts.policy import AgencyRules, Tiers

UNSCORED = "unscored"
"""The segment of a debtor without a risk score."""

ANY_BAND = "any"
"""The amount band of a currency the policy gives no bands for."""


@dataclass(frozen=True)
class AgencyKey:
    agency_id: str
    segment: str
    currency: str
    band: str


@dataclass(frozen=True)
class AgencyRecord:
    placements: int = 0
    placed_minor: int = 0
    recovered_minor: int = 0

    @property
    def recovery_rate(self) -> Fraction:
        return Fraction(self.recovered_minor, self.placed_minor) if self.placed_minor else Fraction(0)


AgencyPerformance = Mapping[AgencyKey, AgencyRecord]


def amount_band(tiers: Tiers, currency: str, amount_minor: int) -> str:
    """The name of the amount band `amount_minor` of `currency` falls in."""
    bands = tiers.amount_bands.get(currency)
    if not bands:
        return ANY_BAND
    reached = [b for b in bands if b.from_minor <= amount_minor] or bands[:1]
    return reached[-1].name


def record_placement(performance: AgencyPerformance, key: AgencyKey, amount_minor: int) -> AgencyPerformance:
    """The performance after a case of `amount_minor` was placed with the agency."""
    record = performance.get(key, AgencyRecord())
    placed = replace(
        record, placements=record.placements + 1, placed_minor=record.placed_minor + amount_minor
    )
    return {**performance, key: placed}


def record_recovery(performance: AgencyPerformance, key: AgencyKey, amount_minor: int) -> AgencyPerformance:
    """The performance after the agency recovered `amount_minor` on a case of that kind."""
    record = performance.get(key, AgencyRecord())
    return {**performance, key: replace(record, recovered_minor=record.recovered_minor + amount_minor)}


def choose_agency(
    rules: AgencyRules,
    performance: AgencyPerformance,
    *,
    segment: str,
    currency: str,
    band: str,
    exclude: Collection[str] = (),
) -> str | None:
    """The agency to place a case with, or None when no agency may take it.

    Eligible: agencies serving the currency and the segment, not in `exclude` (those the case was
    placed with before). Among those with at least `rules.min_placements` placements of this
    segment, currency and band, the best recovery rate wins (ties: fallback order); without such
    history, the first eligible agency in fallback order."""
    eligible = [
        a
        for a in rules.order()
        if a.agency_id not in exclude
        and (not a.currencies or currency in a.currencies)
        and (not a.segments or segment in a.segments)
    ]
    proven = [
        (performance[key].recovery_rate, -rank, a.agency_id)
        for rank, a in enumerate(eligible)
        if (key := AgencyKey(a.agency_id, segment, currency, band)) in performance
        and performance[key].placements >= rules.min_placements
    ]
    if proven:
        return max(proven)[2]
    return eligible[0].agency_id if eligible else None
