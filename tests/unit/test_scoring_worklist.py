"""The worklist: probability of payment times amount at stake, less the cost of the next action."""

from __future__ import annotations

import datetime as dt

import numpy as np

from services.scoring.model import DebtorScore, segment_of
from services.scoring.worklist import (
    ACTIONS,
    ActionCosts,
    Candidate,
    bucket_of_days,
    bucket_places,
    candidate,
    rank,
)

AS_OF = dt.date(2024, 6, 30)


def score(debtor: str, p_late: float, overdue: int, days_past_due: int) -> DebtorScore:
    return DebtorScore(
        tenant_id="t1",
        debtor_id=debtor,
        currency="EUR",
        as_of=AS_OF,
        score=round(100 * p_late),
        p_late=p_late,
        segment=segment_of(p_late),
        expected_days_to_settle=40.0,
        reasons=("pays 20 % of invoices late",),
        open_minor=overdue,
        overdue_minor=overdue,
        oldest_days_past_due=days_past_due,
        invoices=(),
        model_kind="scorecard",
    )


SCORES = [
    score("X", 0.2, 100_000, 10),  # 0.8 * 100 000 - reminder 50 = 79 950
    score("Y", 0.7, 300_000, 45),  # 0.3 * 300 000 - call 500 = 89 500
    score("Z", 0.1, 1_000, 100),  # 0.9 * 1 000 - agency 5 000 = -4 100
    score("W", 0.5, 0, 0),  # nothing overdue: no action
]


def candidates() -> list[Candidate]:
    return [c for s in SCORES if (c := candidate(s, ActionCosts())) is not None]


def test_ranked_by_expected_recovery_less_cost() -> None:
    items = rank(candidates())
    assert [(i.rank, i.candidate.debtor_id, i.expected_value_minor) for i in items] == [
        (1, "Y", 89_500),
        (2, "X", 79_950),
        (3, "Z", -4_100),
    ]
    assert [i.candidate.action for i in items] == ["call", "reminder", "agency"]
    assert items[0].candidate.reasons[0] == "EUR 3000.00 overdue, oldest 45 days past due"


def test_filters() -> None:
    assert [i.candidate.debtor_id for i in rank(candidates(), segments=["low"])] == ["X", "Z"]
    assert [i.candidate.debtor_id for i in rank(candidates(), buckets=["31-60", "default"])] == ["Y", "Z"]
    assert rank(candidates(), currencies=["USD"]) == []
    assert [i.candidate.debtor_id for i in rank(candidates(), limit=1)] == ["Y"]


def test_a_costlier_action_can_reorder() -> None:
    costs = ActionCosts({"reminder": 50, "call": 20_000, "claim_letter": 1_500, "agency": 5_000})
    items = rank([c for s in SCORES if (c := candidate(s, costs)) is not None])
    assert [(i.candidate.debtor_id, i.expected_value_minor) for i in items][:2] == [
        ("X", 79_950),
        ("Y", 70_000),
    ]


def test_filtered_by_the_collector_who_last_worked_the_debtor() -> None:
    assigned = {"X": "anna", "Y": "ben", "Z": "anna"}
    found = [c for s in SCORES if (c := candidate(s, ActionCosts(), assigned.get(s.debtor_id))) is not None]
    assert [i.candidate.debtor_id for i in rank(found, collectors=["anna"])] == ["X", "Z"]
    assert [i.candidate.debtor_id for i in rank(found, collectors=["ben", "anna"])] == ["Y", "X", "Z"]
    assert rank(found, collectors=["carla"]) == []


def test_buckets_of_many_days_at_once_are_those_of_each() -> None:
    days = np.arange(1, 400)
    actions = list(ACTIONS)
    assert [actions[p] for p in bucket_places(days).tolist()] == [bucket_of_days(d) for d in days.tolist()]
