"""The fault tests' harness, which lives in the `chaos` package (`python -m chaos` runs it on its
own): `arrears serve ledger` subprocesses started, stopped, killed with SIGKILL and restarted on the
same port; a poster that retries each batch until it is answered 202; a readiness probe; and the
check of what the ledger applied. Re-exported here under the names the tests import."""

from __future__ import annotations

from chaos.checks import (
    LEDGER_GROUP,
    LEDGER_TOPICS,
    Findings,
    aging,
    check_applied,
    events_in_log,
    ledger_backlog,
    statements,
    wait_caught_up,
)
from chaos.poster import Attempt, Event, Poster, ReadinessProbe, readyz, wait_ready
from chaos.processes import (
    REPO,
    LedgerProcess,
    Ledgers,
    ServiceProcess,
    Steps,
    arrears_command,
    create_database,
    kafka_sh,
    now,
    reset_topics,
)
from chaos.workload import InvoiceBook, InvoiceSpec, debtor_event

__all__ = [
    "LEDGER_GROUP",
    "LEDGER_TOPICS",
    "REPO",
    "Attempt",
    "Event",
    "Findings",
    "InvoiceBook",
    "InvoiceSpec",
    "LedgerProcess",
    "Ledgers",
    "Poster",
    "ReadinessProbe",
    "ServiceProcess",
    "Steps",
    "aging",
    "arrears_command",
    "check_applied",
    "create_database",
    "debtor_event",
    "events_in_log",
    "kafka_sh",
    "ledger_backlog",
    "now",
    "readyz",
    "reset_topics",
    "statements",
    "wait_caught_up",
    "wait_ready",
]
