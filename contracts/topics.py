"""The topic catalogue: every topic Arrears reads or writes, with its partition count and retention.

Keys are ``"{tenant_id}:{debtor_id}"`` so that all facts of one debtor are ordered in one partition;
the clock topic is keyed by tenant alone.
"""

from __future__ import annotations

from dataclasses import dataclass

FOREVER = -1


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    description: str
    retention_ms: int = FOREVER

    @property
    def dead_letter(self) -> str:
        return f"{self.name}.dlq"


JOURNAL = Topic(
    "ar.journal.v1",
    6,
    "The ERP's receivables journal: invoices, adjustments, cancellations, credit notes, payments, "
    "allocations, reversals and write-offs, one ordered stream per debtor.",
)
DEBTORS = Topic("ar.debtors.v1", 6, "Debtor master data: registrations and updates.")
CLOCK = Topic(
    "ar.clock.v1",
    6,
    "Business day started, per tenant (keyed by tenant: tenants spread over the members of a group). "
    "The only source of business time.",
)
RECEIVABLES = Topic(
    "ar.receivables.v1",
    6,
    "Balance facts after allocation: opened, changed, settled, re-opened, written off.",
)
CONTACTS = Topic("ar.contacts.v1", 6, "Contact attempts and outcomes, promises, disputes, payment plans.")
CASES = Topic("collections.cases.v1", 6, "Collection case events.")
COMMANDS = Topic("collections.commands.v1", 6, "Escalation commands for the notifier.")
SCORES = Topic("collections.scores.v1", 6, "Debtor risk scores and segments.")
POLICIES = Topic(
    "collections.policies.v1", 1, "Dunning policy versions per tenant, each in force from a business date."
)

ALL: tuple[Topic, ...] = (JOURNAL, DEBTORS, CLOCK, RECEIVABLES, CONTACTS, CASES, COMMANDS, SCORES, POLICIES)
DEAD_LETTER_PARTITIONS = 1


def catalogue() -> list[tuple[str, int, int]]:
    """(name, partitions, retention.ms) of every topic, dead-letter topics included."""
    rows = [(t.name, t.partitions, t.retention_ms) for t in ALL]
    rows += [(t.dead_letter, DEAD_LETTER_PARTITIONS, FOREVER) for t in ALL]
    return rows


def debtor_key(tenant_id: str, debtor_id: str) -> str:
    return f"{tenant_id}:{debtor_id}"


if __name__ == "__main__":
    for name, partitions, retention in catalogue():
        print(name, partitions, retention)
