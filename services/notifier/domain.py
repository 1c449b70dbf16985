"""The notifier's decisions, pure: the last look before a send, the channel to use, when to retry,
and when a send window opens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from contracts.channels import Channel
from contracts.collections import KEPT_WHILE_HELD, CollectionCommand
from services.notifier.rendering import Addressee

DEBTOR_FACING: frozenset[str] = frozenset({"send_reminder", "formal_notice", "claim_letter", "schedule_call"})


@dataclass(frozen=True)
class CaseSeen:
    """The latest case event the notifier has seen for a case."""

    version: int
    status: str
    change: str


@dataclass(frozen=True)
class Situation:
    """What the notifier knows now about everything a command concerns."""

    outstanding: Mapping[str, int]  # invoice id -> outstanding minor units, as the ledger last said
    disputed: frozenset[str]  # invoice ids with an open dispute
    case: CaseSeen | None
    cancelled_because: str | None


def last_look(command: CollectionCommand, now: Situation) -> str | None:
    """Why the command must not be executed any more, or None to go ahead."""
    if now.cancelled_because is not None:
        return f"cancelled: {now.cancelled_because}"
    case = now.case
    if case is not None and case.version > command.case_version:
        if case.status == "closed":
            return "the case was closed after the command was decided"
        if case.status == "held" and command.step not in KEPT_WHILE_HELD:
            return f"the case was put on hold after the command was decided ({case.change})"
    if command.action not in DEBTOR_FACING:
        return None
    paid = [
        i.invoice_id
        for i in command.items
        if now.outstanding.get(i.invoice_id, i.outstanding.amount_minor) < i.outstanding.amount_minor
    ]
    if paid:
        return f"paid since the command was decided: {', '.join(sorted(paid))}"
    disputed = sorted(i.invoice_id for i in command.items if i.invoice_id in now.disputed)
    if disputed:
        return f"disputed since the command was decided: {', '.join(disputed)}"
    return None


def usable_channels(command: CollectionCommand, addressee: Addressee | None) -> list[Channel]:
    """The command's channels in its order of preference, less those the debtor cannot be reached on."""
    usable: list[Channel] = []
    for channel in command.channels:
        if channel == "email" and not (addressee and addressee.email):
            continue
        if channel in ("sms", "messenger") and not (addressee and addressee.phone):
            continue
        if channel == "letter" and not (addressee and addressee.postal_address):
            continue
        usable.append(channel)
    return usable


def address_wanted(command: CollectionCommand, addressee: Addressee | None) -> bool:
    """Whether the command could have gone out as a letter but for the debtor's postal address."""
    return "letter" in command.channels and not (addressee and addressee.postal_address)


def retry_delay(attempt: int, base_s: float = 30.0, cap_s: float = 3600.0) -> dt.timedelta:
    """Exponential back-off after the `attempt`-th transient failure (1-based)."""
    return dt.timedelta(seconds=min(cap_s, base_s * 2 ** (attempt - 1)))


def next_send_time(
    now: dt.datetime, send_after: dt.datetime | None, send_before: dt.datetime | None
) -> dt.datetime:
    """`now` if it falls inside the command's send window (repeated daily), else the window's next opening.

    The window is the one computed for the business date; a command executed later (after an outage or
    when the business date runs behind) is sent inside the same local hours of a later day.
    """
    if send_after is None:
        return now
    if now < send_after:
        return send_after
    if send_before is None or send_before <= send_after:
        return now
    days = (now - send_after) // dt.timedelta(days=1)
    opening = send_after + dt.timedelta(days=days)
    closing = send_before + dt.timedelta(days=days)
    return now if opening <= now < closing else opening + dt.timedelta(days=1)
