"""One message per debtor and day: the contact commands of a debtor's cases bundled together.

A debtor's cases are per currency, so a debtor owing in two currencies whose cases escalate on the
same business day would hear from us twice that day. `bundle` marks the debtor-facing messages
(e-mail, letter, text message: not call tasks, not agency or ERP webhooks) that more than one case
issued for the same business day on the same channels (an agency handover notice: naming the same
agency) as one bundle: each member names the command ids of all members, sorted, and the notifier
sends them as one message. Every case keeps its own command and its pending state; the ids are those
of the commands, so a replay bundles alike. The contact caps count the message once: only its
first member stays among its case's contacts (`Case.contacts`; caps count a debtor's contacts
across cases).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from contracts.channels import Channel
from contracts.collections import CollectionCommand
from contracts.policy import DEBTOR_FACING
from services.dunning.domain.case import Decision, replace

MESSAGE_CHANNELS: frozenset[Channel] = frozenset({"email", "letter", "sms", "messenger"})
"""Channels a message reaches the debtor on (a call is a task for a collector, one per case)."""

BUNDLE_LIMIT = 64
"""The most commands one message carries (the contract's bound); a larger group goes one by one."""

BundleKey = tuple[dt.date, tuple[Channel, ...], str | None]


def bundle_key(command: CollectionCommand) -> BundleKey | None:
    """What commands of one debtor must share to go as one message: the day, the channels and the
    agency a handover notice names (a message names one); None: the command is no message to the
    debtor."""
    if command.action not in DEBTOR_FACING or not command.channels:
        return None
    if not MESSAGE_CHANNELS.issuperset(command.channels):
        return None
    return command.business_date, tuple(command.channels), command.agency_id


def bundle(decisions: Sequence[Decision]) -> list[Decision]:
    """The decisions of one debtor's cases on one business day, with the commands that go to the debtor
    as one message marked as a bundle (`CollectionCommand.bundle`). A group of one case's commands
    alone is left as it is."""
    groups: dict[BundleKey, list[CollectionCommand]] = defaultdict(list)
    for decision in decisions:
        for command in decision.commands:
            key = bundle_key(command)
            if key is not None:
                groups[key].append(command)
    members: dict[str, list[str]] = {}
    for commands in groups.values():
        ids = sorted({c.command_id for c in commands})
        if len({c.case_id for c in commands}) > 1 and len(ids) <= BUNDLE_LIMIT:
            members.update((command_id, ids) for command_id in ids)
    if not members:
        return list(decisions)
    return [_bundled(decision, members) for decision in decisions]


def _bundled(decision: Decision, members: dict[str, list[str]]) -> Decision:
    """The decision with its commands' bundles set, and the members after a bundle's first dropped
    from the case's contacts: the debtor receives one message."""
    counted_elsewhere = {
        c.command_id
        for c in decision.commands
        if c.command_id in members and members[c.command_id][0] != c.command_id
    }
    case = decision.case
    if counted_elsewhere:
        case = replace(case, contacts={k: v for k, v in case.contacts.items() if k not in counted_elsewhere})
    return dataclasses.replace(
        decision,
        case=case,
        commands=tuple(
            c.model_copy(update={"bundle": members[c.command_id]}) if c.command_id in members else c
            for c in decision.commands
        ),
    )
