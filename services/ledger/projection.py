"""How a batch of journal, debtor and clock records changes the ledger's tables."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import receivables as facts
from contracts.clock import BusinessDayStarted
from contracts.envelope import Envelope
from contracts.money import Money
from contracts.registry import make_event
from contracts.topics import CLOCK, DEBTORS, JOURNAL, RECEIVABLES
from services.ledger import store
from services.ledger.domain import (
    BalanceChange,
    ChangeKind,
    DebtorLedger,
    LedgerEvent,
    Transition,
    evolve,
    initial_state,
)
from services.ledger.kpi_sales import sales_changes
from services.ledger.state_codec import needs_archive, with_archive
from services.runtime.committed_cache import CommittedCache
from services.runtime.consumer import Applied, Delivered
from services.runtime.ids import uuid5_text
from services.runtime.log import Message, Record

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
    """The balance fact of one change, formatted directly: the same bytes as
    `encode_event(make_event(...))` of the contracts (a unit test checks), without building and
    dumping pydantic models per fact (the values come from the ledger's own validated state)."""
    invoice = change.invoice
    currency = invoice.currency
    tenant_id = cause.tenantid
    debtor_id = cause.debtorid
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": uuid5_text(_FACT_NAMESPACE, f"{tenant_id}|{cause.id}|{invoice.invoice_id}"),
        "source": SOURCE,
        "type": FACT_TYPE[change.kind],
        "time": at,
        "datacontenttype": "application/json",
        "tenantid": tenant_id,
    }
    if debtor_id is not None:
        envelope["debtorid"] = debtor_id
    envelope["causationid"] = cause.id
    envelope["correlationid"] = cause.correlationid or cause.id
    envelope["data"] = {
        "invoice_id": invoice.invoice_id,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "amount": {"amount_minor": invoice.amount, "currency": currency},
        "outstanding": {"amount_minor": invoice.outstanding, "currency": currency},
        "change": {"amount_minor": change.change, "currency": currency},
        "status": invoice.status,
        "effective_date": change.effective_date,
        "cause_type": cause.type,
        "cause_id": cause.id,
    }
    key = f"{tenant_id}:{debtor_id}" if debtor_id else tenant_id
    return Message(RECEIVABLES.name, key.encode(), orjson.dumps(envelope, option=orjson.OPT_UTC_Z))


def receivable_fact_event(cause: Envelope[Any], change: BalanceChange, at: dt.datetime) -> Envelope[Any]:
    """The same fact as a contracts envelope (what `receivable_fact` formats directly)."""
    invoice = change.invoice
    currency = invoice.currency
    return make_event(
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


DEFAULT_STATE_CACHE = 10_000
"""Decoded debtor states kept between batches (about 30 KB of objects each for a 9 KB state)."""


class LedgerProjection:
    """Applies a batch to the ledger's tables.

    Decoded debtor states are kept between batches (`CommittedCache`: committed state only), so a
    debtor touched by consecutive batches is not decoded from its JSON again. Each cached state
    carries the version of its row (the transaction that wrote it), and a batch uses it only while
    the row still has that version: a debtor's journal and master-data partitions may belong to
    different members of the group, which both write its state, so a row can change without this
    member losing a partition."""

    group_id = "ledger"
    topics: tuple[str, ...] = (JOURNAL.name, DEBTORS.name, CLOCK.name)

    def __init__(self, state_cache_size: int = DEFAULT_STATE_CACHE) -> None:
        self.cache: CommittedCache[store.DebtorKey, tuple[DebtorLedger, store.Version]] = CommittedCache(
            state_cache_size
        )
        self._versions: dict[store.DebtorKey, store.Version] = {}
        self.batch_committed = self.cache.batch_committed
        self.batch_failed = self.cache.batch_failed
        self.partitions_changed = self.cache.partitions_changed

    async def _states(
        self, session: AsyncSession, events: Mapping[store.DebtorKey, list[LedgerEvent]]
    ) -> dict[store.DebtorKey, DebtorLedger]:
        """The stored states of the debtors the events are for, with their versions: from the cache
        where the row still has the cached version, the rest decoded from the database; whole where
        the events need it, else as partial as the cache or the row's working part has them."""
        keys = events.keys()
        cached = self.cache.lookup(keys)
        loaded, versions = await store.load_ledger_versions(
            session, keys, {key: version for key, (_, version) in cached.items()}
        )
        states = loaded
        for key, (state, version) in cached.items():
            if key not in loaded and versions.get(key) == version:
                states[key] = state
        self.cache.count(hits=len(states) - len(loaded), misses=len(loaded))
        self._versions = versions
        partial = [key for key, state in states.items() if needs_archive(state, events[key])]
        archives = await store.load_archives(session, {key: versions[key] for key in partial})
        for key in partial:
            states[key] = with_archive(states[key], archives[key])
        return states

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        applied = Applied()
        business_dates: dict[str, dt.date] = {}
        journal = [d for d in batch if d.record.topic != CLOCK.name]
        for d in batch:
            if isinstance(d.event.data, BusinessDayStarted):
                day = d.event.data.business_date
                business_dates[d.event.tenantid] = max(day, business_dates.get(d.event.tenantid, day))

        events: dict[store.DebtorKey, list[LedgerEvent]] = {}
        for d in journal:
            events.setdefault((d.event.tenantid, d.event.debtorid or ""), []).append(d.event.data)
        states = await self._states(session, events)
        changed: dict[store.DebtorKey, DebtorLedger] = {}
        movements: list[store.MovementRow] = []
        sales: list[tuple[store.SaleKey, int]] = []
        outcomes: list[store.Outcome] = []
        messages = applied.messages
        for d in journal:
            event = d.event
            key = (event.tenantid, event.debtorid or "")
            before = states.get(key) or initial_state(*key)
            transition = evolve(before, event.data, event_id=event.id)
            outcomes.extend(_outcomes(event, transition))
            if transition.rejection:
                applied.rejected.append((d, transition.rejection))
                continue
            if transition.state is states.get(key):
                continue  # nothing changed (a repeated business id)
            states[key] = changed[key] = transition.state
            if not transition.movements and not transition.changes:
                continue
            at = recorded_at(d)
            movements.extend(
                store.MovementRow(*key, m.invoice_id, m.currency, m.due_date, m.delta, m.effective_date, at)
                for m in transition.movements
            )
            messages.extend(receivable_fact(event, c, at) for c in transition.changes)
            sales.extend(
                ((key[0], c.invoice.currency, day), amount)
                for c in transition.changes
                for day, amount in sales_changes(before.invoices.get(c.invoice.invoice_id), c.invoice)
            )

        versions = {**self._versions, **await store.save_ledgers(session, changed, self._versions)}
        await store.record_movements(session, movements, sales)
        await store.record_outcomes(session, outcomes)
        await store.advance_business_dates(session, business_dates)
        for key, state in states.items():
            if key in versions:
                self.cache.stage(key, (state, versions[key]))
        return applied

    async def dead_lettered(self, session: AsyncSession, dead: list[tuple[Record, str]]) -> None:
        """Every event that goes to the dead-letter topic is rejected, with the reason, in the
        tenant's rejection feed (the domain's rejections and records no projection could apply)."""
        outcomes = []
        for record, reason in dead:
            identity = _identity(record.value)
            if identity is not None:
                tenant_id, event_id, event_type = identity
                outcomes.append(store.Outcome(tenant_id, event_id, "rejected", reason, event_type))
        await store.record_outcomes(session, outcomes)


def _outcomes(event: Envelope[Any], transition: Transition) -> list[store.Outcome]:
    """What this event's transition decided beyond a plain application: the event parked, and the
    parked events it released, applied or rejected. (Its own rejection is dead-lettered.)"""
    tenant_id = event.tenantid
    found = [
        store.Outcome(tenant_id, event_id, "rejected" if reason else "applied", reason)
        for event_id, reason in transition.resolved
    ]
    if transition.parked:
        found.append(
            store.Outcome(tenant_id, event.id, "parked", "waiting for what it refers to", event.type)
        )
    return found


def _identity(value: bytes) -> tuple[str, str, str | None] | None:
    """(tenant, event id, type) of a record, if it has them: a record that failed its contract may not."""
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict):
        return None
    tenant_id, event_id, event_type = envelope.get("tenantid"), envelope.get("id"), envelope.get("type")
    if not isinstance(tenant_id, str) or not isinstance(event_id, str):
        return None
    return tenant_id, event_id, event_type if isinstance(event_type, str) else None
