"""Deterministic ids of commands, cancellations and case events: the same on every replay."""

from __future__ import annotations

import datetime as dt
import uuid

from contracts.collections import CaseEvent
from services.dunning.domain.case import Case
from services.runtime.ids import uuid5_text

_IDS = uuid.UUID("8f5b8f5e-4a0e-4c1e-9a57-3f1f0c2d6a11")


def command_id(case: Case, step: str, business_date: dt.date, *parts: str) -> str:
    """Deterministic: the same case, round, step and date give the same id on every replay."""
    name = "|".join((case.tenant_id, case.case_id, str(case.round), step, business_date.isoformat(), *parts))
    return uuid5_text(_IDS, name)


def cancellation_id(tenant_id: str, cancelled_command_id: str) -> str:
    """Envelope id of the cancellation of a command."""
    return uuid5_text(_IDS, f"{tenant_id}|cancel|{cancelled_command_id}")


def case_event_id(tenant_id: str, event: CaseEvent) -> str:
    """Envelope id of a case event: one per case and version."""
    return uuid5_text(_IDS, f"{tenant_id}|{event.case_id}|{event.version}")


def posting_id(case: Case, kind: str, invoice_id: str, *parts: str) -> str:
    """Id of a journal entry dunning posts for the ledger (a discount, a write-off): the same on every
    replay, and the envelope's id too, so the ledger applies it once."""
    return uuid5_text(_IDS, "|".join((case.tenant_id, case.case_id, kind, invoice_id, *parts)))
