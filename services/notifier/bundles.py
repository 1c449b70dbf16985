"""Commands that reach the debtor as one message (`CollectionCommand.bundle`), pure: which member leads
the message, under which key it is sent, and whether it may go yet.

Dunning bundles the messages a debtor's cases in several currencies send on the same business day on
the same channels. The notifier sends a bundle once, when every member it names has arrived, in the
words of its most severe member (by the order of the actions in the contract: a claim letter over a
formal notice over a reminder; among equals, the one with the oldest item), with a section per
member. Members cancelled or otherwise stopped by the last look are left out; each member gets its
own contact record, all naming the same Message-ID or letter file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from contracts.collections import ACTIONS, CollectionCommand

WAIT_FOR_MEMBERS = dt.timedelta(minutes=10)
"""How long a bundle waits for a member that has not arrived (they are published in one transaction,
so they arrive together or close behind one another) before it goes without it."""
RECHECK = dt.timedelta(seconds=1)
"""When a bundle waiting for a member looks again."""


def is_bundled(command: CollectionCommand) -> bool:
    return len(command.bundle) > 1


def severity(command: CollectionCommand) -> tuple[int, int]:
    """Higher is more severe: the action's place in the contract's order, then the oldest item."""
    return ACTIONS.index(command.action), max((i.days_past_due for i in command.items), default=0)


def most_severe(commands: Sequence[CollectionCommand]) -> CollectionCommand:
    """The member whose step's template the message uses (the first by command id among equals)."""
    return max(sorted(commands, key=lambda c: c.command_id), key=severity)


def message_key(
    command: CollectionCommand, carried: Collection[str], *, all_arrived: bool, sent_without: bool
) -> str:
    """The id the message of the `carried` members is sent under (its Message-ID, letter file,
    Idempotency-Key): the bundle's first command id, whichever members it carries, so that sending it
    again after a crash or a transient failure is the same message at the far end. A bundle that gave
    up waiting for a member goes under the first id it carries, and that member, arriving after its
    bundle was sent without it (`sent_without`), goes on its own under its own id."""
    if not is_bundled(command) or sent_without:
        return command.command_id
    return command.bundle[0] if all_arrived else min(carried)


def waiting_for(
    command: CollectionCommand, arrived: Collection[str], first_arrival: dt.datetime, now: dt.datetime
) -> list[str]:
    """The members not arrived yet that the bundle still waits for (none once it waited long enough
    since its first member arrived)."""
    missing = [m for m in command.bundle if m not in arrived]
    return missing if missing and now - first_arrival < WAIT_FOR_MEMBERS else []
