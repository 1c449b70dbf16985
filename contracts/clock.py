"""Business time: the only way a date reaches a decision."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from contracts.envelope import EventData
from contracts.scalars import BusinessDate
from contracts.topics import CLOCK

BUSINESS_DAY_STARTED = "ar.businessday.started.v1"


class BusinessDayStarted(EventData):
    TYPES: ClassVar[tuple[str, ...]] = (BUSINESS_DAY_STARTED,)
    TOPIC: ClassVar[str] = CLOCK.name
    NEEDS_DEBTOR: ClassVar[bool] = False

    business_date: BusinessDate


def clock_event_id(tenant_id: str, business_date: dt.date) -> str:
    """Deterministic, so advancing the clock twice over the same day is a no-op downstream."""
    return f"clock:{tenant_id}:{business_date.isoformat()}"
