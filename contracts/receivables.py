"""Balance facts the ledger publishes after allocation, for dunning and scoring."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from contracts.envelope import EventData, Identifier
from contracts.money import Money
from contracts.scalars import BusinessDate
from contracts.topics import RECEIVABLES

ReceivableStatus = Literal["open", "settled", "written_off", "cancelled"]

RECEIVABLE_OPENED = "ar.receivable.opened.v1"
RECEIVABLE_CHANGED = "ar.receivable.changed.v1"
RECEIVABLE_SETTLED = "ar.receivable.settled.v1"
RECEIVABLE_REOPENED = "ar.receivable.reopened.v1"
RECEIVABLE_WRITTEN_OFF = "ar.receivable.writtenoff.v1"
RECEIVABLE_CANCELLED = "ar.receivable.cancelled.v1"


class ReceivableBalance(EventData):
    """One invoice's balance right after a change. `change` is signed: negative when it was paid down."""

    TYPES: ClassVar[tuple[str, ...]] = (
        RECEIVABLE_OPENED,
        RECEIVABLE_CHANGED,
        RECEIVABLE_SETTLED,
        RECEIVABLE_REOPENED,
        RECEIVABLE_WRITTEN_OFF,
        RECEIVABLE_CANCELLED,
    )
    TOPIC: ClassVar[str] = RECEIVABLES.name

    invoice_id: Identifier
    issue_date: BusinessDate
    due_date: BusinessDate
    amount: Money = Field(description="The invoice's total")
    outstanding: Money = Field(description="What is still owed after this change")
    change: Money = Field(description="Signed change of the outstanding amount")
    status: ReceivableStatus
    effective_date: BusinessDate = Field(description="Business date the change takes effect")
    cause_type: str = Field(
        max_length=200,
        pattern=r"^[a-z][a-z0-9_.]*$",
        description="Type of the journal event that caused the change",
    )
    cause_id: Identifier = Field(description="Id of the journal event that caused the change")
