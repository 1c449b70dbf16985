"""Whom to call first: debtors ranked by what the next action is expected to recover, less its cost.

    value = probability of payment * amount at stake - cost of the action

The amount at stake is what the debtor has overdue; the next action follows the bucket of its oldest
overdue invoice (a reminder, a call, a claim letter, an agency placement); the probability of
payment is the debtor's probability of paying as agreed from its score (1 - probability of paying
late). Ties go to the larger amount, then to the debtor id, so the order is total.

Filters: segment, bucket, currency and collector. A debtor's collector is whoever last recorded an
agreement, dispute, hold or note with it (`recorded_by` on ar.contacts.v1): dunning assigns no
collector to a case, so the one who last worked the debtor is the one its row goes to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from contracts.money import format_major
from services.scoring.model import DebtorScore

ACTIONS: dict[str, str] = {"1-30": "reminder", "31-60": "call", "61-90": "claim_letter", "default": "agency"}


@dataclass(frozen=True)
class ActionCosts:
    """Cost of each action in minor units of the debt's currency."""

    costs: dict[str, int] = field(
        default_factory=lambda: {"reminder": 50, "call": 500, "claim_letter": 1_500, "agency": 5_000}
    )

    def of(self, action: str) -> int:
        return self.costs[action]


@dataclass(frozen=True)
class Candidate:
    tenant_id: str
    debtor_id: str
    currency: str
    segment: str
    bucket: str
    amount_at_stake_minor: int
    p_pay: float
    action: str
    cost_minor: int
    reasons: tuple[str, ...]
    collector: str | None = None


@dataclass(frozen=True)
class WorklistItem:
    rank: int
    candidate: Candidate
    expected_value_minor: int


def bucket_of_days(days_past_due: int) -> str:
    if days_past_due > 90:
        return "default"
    return ("1-30", "31-60", "61-90")[(days_past_due - 1) // 30]


def bucket_places(days_past_due: np.ndarray) -> np.ndarray:
    """`bucket_of_days` of many days past due (each at least 1) at once, as places in `ACTIONS`."""
    places: np.ndarray = np.clip((days_past_due - 1) // 30, 0, len(ACTIONS) - 1)
    return places


def candidate(
    score: DebtorScore, costs: ActionCosts = ActionCosts(), collector: str | None = None
) -> Candidate | None:
    """What the debtor's next action would be; None when nothing is overdue."""
    if score.overdue_minor <= 0 or score.oldest_days_past_due <= 0:
        return None
    bucket = bucket_of_days(score.oldest_days_past_due)
    action = ACTIONS[bucket]
    overdue = f"{score.currency} {format_major(score.overdue_minor, score.currency)} overdue"
    return Candidate(
        tenant_id=score.tenant_id,
        debtor_id=score.debtor_id,
        currency=score.currency,
        segment=score.segment,
        bucket=bucket,
        amount_at_stake_minor=score.overdue_minor,
        p_pay=round(1.0 - score.p_late, 4),
        action=action,
        cost_minor=costs.of(action),
        reasons=(f"{overdue}, oldest {score.oldest_days_past_due} days past due", *score.reasons),
        collector=collector,
    )


def expected_value(c: Candidate) -> int:
    return round(c.p_pay * c.amount_at_stake_minor) - c.cost_minor


def rank(
    candidates: Iterable[Candidate],
    *,
    segments: Sequence[str] = (),
    buckets: Sequence[str] = (),
    currencies: Sequence[str] = (),
    collectors: Sequence[str] = (),
    limit: int | None = None,
) -> list[WorklistItem]:
    """The candidates that pass the filters (an empty filter passes all), best first."""
    chosen = [
        c
        for c in candidates
        if (not segments or c.segment in segments)
        and (not buckets or c.bucket in buckets)
        and (not currencies or c.currency in currencies)
        and (not collectors or c.collector in collectors)
    ]
    chosen.sort(key=lambda c: (-expected_value(c), -c.amount_at_stake_minor, c.tenant_id, c.debtor_id))
    return [
        WorklistItem(rank=i + 1, candidate=c, expected_value_minor=expected_value(c))
        for i, c in enumerate(chosen[:limit] if limit is not None else chosen)
    ]
