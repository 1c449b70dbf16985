"""Parameter and body types of the APIs, stricter than pydantic's lax parsing where a lax reading
would take a wrong request for another one: a date is a `YYYY-MM-DD` string (never a number, which
pydantic would read as seconds since 1970), between 1900-01-01 and 2999-12-31 like every business date;
a moment has its UTC offset and lies in the same centuries; whole numbers are JSON integers (never
`true`) and fit PostgreSQL `bigint`."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StrictInt
from pydantic_core import PydanticCustomError

from contracts.scalars import FIRST_DATE, LAST_DATE, MAX_INT64

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|z|[+-]\d{2}:?\d{2})")


_FIRST_MOMENT = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_END_OF_TIME = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)
_RANGE = f"between {FIRST_DATE} and {LAST_DATE}"


def _iso_date(value: object) -> object:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value
    raise PydanticCustomError("date_format", "give a date as YYYY-MM-DD, e.g. 2026-06-30")


def _in_range(value: dt.date) -> dt.date:
    if not FIRST_DATE <= value <= LAST_DATE:
        raise PydanticCustomError("date_range", f"{value} is not {_RANGE}")
    return value


def _iso_moment(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _ISO_MOMENT.fullmatch(value):
        return value
    raise PydanticCustomError(
        "datetime_format", "give a moment in ISO 8601 with its offset, e.g. 2026-06-30T23:59:59Z"
    )


def _moment_in_range(value: dt.datetime) -> dt.datetime:
    if not _FIRST_MOMENT <= value < _END_OF_TIME:
        raise PydanticCustomError("datetime_range", f"{value.isoformat()} is not {_RANGE}")
    return value


IsoDate = Annotated[
    dt.date,
    BeforeValidator(_iso_date),
    AfterValidator(_in_range),
    Field(
        json_schema_extra={"formatMinimum": FIRST_DATE.isoformat(), "formatMaximum": LAST_DATE.isoformat()},
    ),
]
"""A date as `YYYY-MM-DD`, 1900-01-01..2999-12-31."""

IsoMoment = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_moment),
    AfterValidator(_moment_in_range),
    Field(
        json_schema_extra={
            "formatMinimum": "1900-01-01T00:00:00Z",
            "formatExclusiveMaximum": "3000-01-01T00:00:00Z",
        },
    ),
]
"""A moment in ISO 8601 with its UTC offset, 1900..2999."""

Count = Annotated[StrictInt, Field(ge=0, le=MAX_INT64)]
"""A whole number that PostgreSQL `bigint` holds: a cursor, an offset."""
