"""Month ends and the monthly periods that receivables KPIs and roll rates are measured over. Pure."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass


def month_end_of(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)


def month_ends(as_of: dt.date, months: int) -> list[dt.date]:
    """The last `months` + 1 month ends on or before `as_of`, oldest first."""
    ends = []
    day = as_of if month_end_of(as_of) == as_of else as_of.replace(day=1) - dt.timedelta(days=1)
    for _ in range(months + 1):
        ends.append(day)
        day = day.replace(day=1) - dt.timedelta(days=1)
    return ends[::-1]


@dataclass(frozen=True)
class Period:
    """A calendar month, or its first part when it ends on an as-of date inside it."""

    start: dt.date
    end: dt.date

    @property
    def month(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def closing_dates(as_of: dt.date, months: int) -> list[dt.date]:
    """The month end before the first of `months` months, then each month's closing date: its last
    day, and `as_of` for the month holding it. Oldest first, `months` + 1 dates."""
    ends = month_ends(month_end_of(as_of), months)
    ends[-1] = as_of
    return ends


def periods(as_of: dt.date, months: int) -> list[Period]:
    """The `months` months up to the one holding `as_of`, that one through `as_of`; oldest first."""
    closings = closing_dates(as_of, months)
    return [
        Period(opening + dt.timedelta(days=1), closing) for opening, closing in itertools.pairwise(closings)
    ]
