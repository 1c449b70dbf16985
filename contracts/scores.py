"""What scoring publishes: a debtor's risk score and segment, when either changes materially."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from contracts.envelope import EventData
from contracts.money import Money
from contracts.scalars import MAX_DAYS, BusinessDate, Line, Version
from contracts.topics import SCORES

SCORE_CHANGED = "collections.score.changed.v1"

Segment = Literal["low", "medium", "high"]
PROBABILITY_PATTERN = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$"


class ScoreChanged(EventData):
    """A debtor's score in one currency as of a business date. Segments have fixed meanings in the
    probability of paying late: low below 0.3, medium below 0.6, high from 0.6."""

    TYPES: ClassVar[tuple[str, ...]] = (SCORE_CHANGED,)
    TOPIC: ClassVar[str] = SCORES.name

    as_of: BusinessDate = Field(description="Business date the score was computed for")
    score: int = Field(
        ge=0, le=100, description="Probability, in per cent, that the next invoice is paid late"
    )
    probability_late: str = Field(
        pattern=PROBABILITY_PATTERN, description="Probability that the next invoice is paid late, a decimal"
    )
    segment: Segment
    previous_segment: Segment | None = Field(default=None, description="None: the debtor's first score")
    expected_days_to_settle: int = Field(ge=0, le=MAX_DAYS)
    open: Money = Field(description="Open balance in the score's currency")
    overdue: Money = Field(description="Overdue balance in the score's currency")
    oldest_days_past_due: int = Field(ge=0, le=MAX_DAYS)
    reasons: list[Annotated[Line, Field(max_length=200)]] = Field(
        default_factory=list, max_length=8, description="Why, in words a collector understands"
    )
    model_kind: Literal["gradient-boosting", "scorecard"]
    model_version: Version | None = Field(default=None, description="None: the built-in scorecard")
    recommended_credit_limit: Money | None = Field(
        default=None,
        description="Usual monthly billing x terms factor x (1 - probability_late), rounded down;"
        " None without an invoice in the last year",
    )
    write_off_proposed: bool = Field(
        default=False,
        description="The overdue debt in this currency is proposed for write-off: its expected recovery"
        " is below the cost of the next action, or it is older than the maximum age",
    )
    write_off_reasons: list[Annotated[Line, Field(max_length=300)]] = Field(
        default_factory=list, max_length=4, description="Why it is proposed for write-off"
    )
