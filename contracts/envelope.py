"""The one envelope of every event and command (CloudEvents 1.0 attribute names plus extensions)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.money import check_currency
from contracts.scalars import Line, Timestamp

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)]
TenantId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
MAX_CASE_ID = 128
DebtorId = Annotated[str, Field(min_length=1, max_length=MAX_CASE_ID - 4, pattern=IDENTIFIER_PATTERN)]
"""A debtor's id: an identifier short enough that "{debtor id}:{currency}", its case id, is one too."""


def _check_case_currency(case_id: str) -> str:
    check_currency(case_id[-3:])  # the pattern has made sure it ends with ":" and three letters
    return case_id


CaseId = Annotated[
    str,
    Field(
        min_length=5,
        max_length=MAX_CASE_ID,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*:[A-Z]{3}$",
        description='A collection case: "{debtor id}:{ISO 4217 currency}"',
        examples=["C-1042:EUR"],
    ),
    AfterValidator(_check_case_currency),
]


class Fragment(BaseModel):
    """An immutable part of an event's data; unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventData(Fragment):
    """Base of every event's `data`. Subclasses name their CloudEvents `type` and their topic."""

    TYPES: ClassVar[tuple[str, ...]]
    TOPIC: ClassVar[str]
    NEEDS_DEBTOR: ClassVar[bool] = True


D = TypeVar("D", bound=EventData)


class Envelope(BaseModel, Generic[D]):
    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: Identifier = Field(description="Unique per tenant; posting the same id twice is a no-op")
    source: Line = Field(min_length=1, max_length=256, description="URI-reference of the producer")
    type: str = Field(max_length=200, description="Schema name and major version, e.g. ar.invoice.issued.v1")
    time: Timestamp = Field(description="When the occurrence happened, as the producer saw it")
    subject: Line | None = Field(default=None, max_length=256)
    datacontenttype: str = Field(default="application/json", pattern=r"^application/json$")
    tenantid: TenantId
    debtorid: DebtorId | None = None
    causationid: Line | None = Field(default=None, max_length=256)
    correlationid: Line | None = Field(default=None, max_length=256)
    data: D

    @property
    def key(self) -> str:
        return f"{self.tenantid}:{self.debtorid}" if self.debtorid else self.tenantid


AnyEnvelope = Envelope[Any]


def envelope_time(value: datetime) -> datetime:
    """Envelope times are kept to the millisecond, like Kafka timestamps."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
