"""How a batch of journal, debtor and clock records changes the ledger's tables."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import receivables as facts
from contracts.clock import BusinessDayStarted
from contracts.envelope import Envelope
from contracts.money import Money
from contracts.registry import encode_event, make_event
from contracts.topics import CLOCK, DEBTORS, JOURNAL, RECEIVABLES
from services.ledger import store
from services.ledger.domain import BalanceChange, ChangeKind, DebtorLedger, evolve, initial_state
from services.runtime.consumer import Applied, Delivered
from services.runtime.log import Message

SOURCE = "arrears/ledger"
_FACT_NAMESPACE = uuid.UUID("5f0c8d3e-0a4b-4c1f-9a57-6c1f3c2d9e10")
FACT_TYPE: dict[ChangeKind, str] = {
    "opened": facts.RECEIVABLE_OPENED,
    "changed": facts.RECEIVABLE_CHANGED,
    "settled": facts.RECEIVABLE_SETTLED,
    "reopened": facts.RECEIVABLE_REOPENED,
    "written_off": facts.RECEIVABLE_WRITTEN_OFF,
    "cancelled": facts.RECEIVABLE_CANCELLED,
}


def recorded_at(delivered: Delivered) -> dt.datetime:
    """When Arrears accepted the record: the system-time axis of bitemporal aging."""
    return dt.datetime.fromtimestamp(delivered.record.timestamp_ms / 1000, dt.UTC)


def receivable_fact(cause: Envelope[Any], change: BalanceChange, at: dt.datetime) -> Message:
    invoice = change.invoice
    currency = invoice.currency
    event = make_event(
        FACT_TYPE[change.kind],
        facts.ReceivableBalance(
            invoice_id=invoice.invoice_id,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            amount=Money(amount_minor=invoice.amount, currency=currency),
            outstanding=Money(amount_minor=invoice.outstanding, currency=currency),
            change=Money(amount_minor=change.change, currency=currency),
            status=invoice.status,
            effective_date=change.effective_date,
            cause_type=cause.type,
            cause_id=cause.id,
        ),
        event_id=str(uuid.uuid5(_FACT_NAMESPACE, f"{cause.tenantid}|{cause.id}|{invoice.invoice_id}")),
        tenant_id=cause.tenantid,
        debtor_id=cause.debtorid,
        source=SOURCE,
        time=at,
        causation_id=cause.id,
        correlation_id=cause.correlationid or cause.id,
    )
    return Message(RECEIVABLES.name, event.key.encode(), encode_event(event))


class LedgerProjection:
    group_id = "ledger"
    topics: tuple[str, ...] = (JOURNAL.name, DEBTORS.name, CLOCK.name)

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        applied = Applied()
        business_dates: dict[str, dt.date] = {}
        journal = [d for d in batch if d.record.topic != CLOCK.name]
        for d in batch:
            if isinstance(d.event.data, BusinessDayStarted):
                day = d.event.data.business_date
                business_dates[d.event.tenantid] = max(day, business_dates.get(d.event.tenantid, day))

        keys = {(d.event.tenantid, d.event.debtorid or "") for d in journal}
        states = await store.load_ledgers(session, keys)
        changed: dict[store.DebtorKey, DebtorLedger] = {}
        movements: list[store.MovementRow] = []
        for d in journal:
            key = (d.event.tenantid, d.event.debtorid or "")
            transition = evolve(states.get(key) or initial_state(*key), d.event.data)
            if transition.rejection:
                applied.rejected.append((d, transition.rejection))
                continue
            states[key] = changed[key] = transition.state
            at = recorded_at(d)
            movements.extend(
                store.MovementRow(*key, m.invoice_id, m.currency, m.due_date, m.delta, m.effective_date, at)
                for m in transition.movements
            )
            applied.messages.extend(receivable_fact(d.event, c, at) for c in transition.changes)

        await store.save_ledgers(session, changed)
        await store.record_movements(session, movements)
        await store.advance_business_dates(session, business_dates)
        return applied
