"""The scalar types every contract shares, bounded to what PostgreSQL and the services can store and
compute with: text without control characters, business dates in a sane range, integers that fit
their columns.

PostgreSQL `text` cannot hold NUL and `jsonb` cannot hold \\u0000; other control characters break
letters, e-mail headers and logs. Dates are bounded so that date arithmetic (a due date plus the
ladder's days, a business date minus a look-back) stays within Python's and PostgreSQL's ranges.
The checks are patterns and bounds pydantic-core applies itself, so a batch of ten thousand events
is validated without a Python call per field.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field

_CONTROL = r"\x00-\x1f\x7f-\x9f"
_CONTROL_BUT_LINE_BREAKS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
LINE_PATTERN = rf"^[^{_CONTROL}]*$"
TEXT_PATTERN = rf"^[^{_CONTROL_BUT_LINE_BREAKS}]*$"
PATTERN_MEANINGS = {
    LINE_PATTERN: "must be one line of text without control characters (such as NUL)",
    TEXT_PATTERN: "must not contain control characters (such as NUL) other than tab and line breaks",
}
"""What a text pattern asks for, in words, for the error that names a field breaking it."""

Line = Annotated[
    str,
    Field(pattern=LINE_PATTERN, description="One line of text: no control characters"),
]
"""Names, references, who recorded something: no control character at all."""

Text = Annotated[
    str,
    Field(
        pattern=TEXT_PATTERN,
        description="Free text: no control characters but tab, line feed and carriage return",
    ),
]
"""Notes, reasons, descriptions: tab and line breaks allowed, no other control character."""

_FOREIGN_CONTROL = re.compile(f"[{_CONTROL_BUT_LINE_BREAKS}\ud800-\udfff]")  # and lone surrogates


def _printable(value: object) -> object:
    return _FOREIGN_CONTROL.sub("\ufffd", value) if isinstance(value, str) else value


QuotedText = Annotated[Text, BeforeValidator(_printable)]
"""Text a service quotes from another system (a mail server's or a gateway's error message): its
control characters (and lone surrogates) are replaced by U+FFFD instead of refusing the record that
reports it."""

Language = Annotated[
    str, Field(max_length=35, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47")
]

FIRST_DATE = dt.date(1900, 1, 1)
LAST_DATE = dt.date(2999, 12, 31)
MAX_DAYS = (LAST_DATE - FIRST_DATE).days
"""The most days two business dates can lie apart."""

BusinessDate = Annotated[
    dt.date,
    Field(
        ge=FIRST_DATE,
        le=LAST_DATE,
        json_schema_extra={"formatMinimum": FIRST_DATE.isoformat(), "formatMaximum": LAST_DATE.isoformat()},
    ),
]
"""A calendar date that matters to the business (issue, due, value, business date), 1900..2999."""

_FIRST_MOMENT = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_END_OF_TIME = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)
Timestamp = Annotated[
    AwareDatetime,
    Field(
        ge=_FIRST_MOMENT,
        lt=_END_OF_TIME,
        json_schema_extra={
            "formatMinimum": "1900-01-01T00:00:00Z",
            "formatExclusiveMaximum": "3000-01-01T00:00:00Z",
        },
    ),
]
"""A moment with its UTC offset, within the same centuries as business dates."""

MAX_INT32 = 2**31 - 1
"""PostgreSQL `integer`: versions, counts, attempts."""
MAX_INT64 = 2**63 - 1
"""PostgreSQL `bigint`: Kafka offsets."""

Version = Annotated[int, Field(ge=1, le=MAX_INT32)]
