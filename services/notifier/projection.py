"""How a batch of commands, case events, balances, contact records and debtor data changes the
notifier's tables. Commands become deliveries (once per command id, however often delivered);
everything else is what the last look reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.collections import (
    CaseEvent,
    CollectionCommand,
    CommandCancelled,
    ContactResult,
    DisputeChanged,
)
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.receivables import ReceivableBalance
from contracts.registry import encode_event, make_event
from contracts.topics import CASES, COMMANDS, CONTACTS, DEBTORS, RECEIVABLES
from services.notifier import store
from services.notifier.domain import next_send_time
from services.runtime.consumer import Applied, Delivered
from services.runtime.log import Message

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _upsert(session: AsyncSession, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    statement = pg_insert(table).values(rows)
    updates = {c: statement.excluded[c] for c in rows[0] if c not in keys}
    await session.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))


def _deferred(command: Envelope[Any], not_before: dt.datetime, now: dt.datetime) -> Message:
    data: CollectionCommand = command.data
    event = make_event(
        "ar.contact.deferred.v1",
        ContactResult(
            command_id=data.command_id, case_id=data.case_id, outcome="deferred", not_before=not_before
        ),
        event_id=f"contact:{data.command_id}:deferred",
        tenant_id=command.tenantid,
        debtor_id=command.debtorid,
        source="arrears/notifier",
        time=now,
        causation_id=command.id,
        correlation_id=command.correlationid or command.id,
    )
    return Message(CONTACTS.name, event.key.encode(), encode_event(event))


class NotifierProjection:
    group_id = "notifier"
    topics: tuple[str, ...] = (COMMANDS.name, CASES.name, RECEIVABLES.name, CONTACTS.name, DEBTORS.name)

    def __init__(self, *, honour_send_windows: bool = True, clock: Clock = _utcnow) -> None:
        self._honour_windows = honour_send_windows
        self._clock = clock

    def _first_attempt(self, command: CollectionCommand, now: dt.datetime) -> dt.datetime:
        if not self._honour_windows:
            return now
        return next_send_time(now, command.send_after, command.send_before)

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        deliveries: dict[tuple[str, str], dict[str, Any]] = {}
        cancelled: dict[tuple[str, str], dict[str, Any]] = {}
        balances: dict[tuple[str, str, str], dict[str, Any]] = {}
        cases: dict[tuple[str, str], dict[str, Any]] = {}
        disputes: dict[tuple[str, str, str], dict[str, Any]] = {}
        profiles: dict[tuple[str, str], dict[str, Any]] = {}
        # A delivery held for the debtor's send window is reported (ar.contact.deferred.v1), so that
        # the debtor's record shows why a letter has not gone out yet.
        deferred: list[Message] = []
        now = self._clock()
        for d in batch:
            event, data = d.event, d.event.data
            tenant, debtor = event.tenantid, event.debtorid or ""
            if isinstance(data, CollectionCommand):
                first_attempt = self._first_attempt(data, now)
                if first_attempt > now and (tenant, data.command_id) not in deliveries:
                    deferred.append(_deferred(event, first_attempt, now))
                deliveries.setdefault(
                    (tenant, data.command_id),
                    {
                        "tenant_id": tenant,
                        "command_id": data.command_id,
                        "debtor_id": debtor,
                        "case_id": data.case_id,
                        "action": data.action,
                        "command": encode_event(event),
                        "status": "pending",
                        "next_attempt_at": first_attempt,
                    },
                )
            elif isinstance(data, CommandCancelled):
                cancelled[(tenant, data.command_id)] = {
                    "tenant_id": tenant,
                    "command_id": data.command_id,
                    "reason": data.reason,
                }
            elif isinstance(data, ReceivableBalance):
                balances[(tenant, debtor, data.invoice_id)] = {
                    "tenant_id": tenant,
                    "debtor_id": debtor,
                    "invoice_id": data.invoice_id,
                    "outstanding": data.outstanding.amount_minor,
                }
            elif isinstance(data, CaseEvent):
                seen = cases.get((tenant, data.case_id))
                if seen is None or seen["version"] <= data.version:
                    cases[(tenant, data.case_id)] = {
                        "tenant_id": tenant,
                        "case_id": data.case_id,
                        "version": data.version,
                        "status": data.status,
                        "change": data.change,
                    }
            elif isinstance(data, DisputeChanged):
                disputes[(tenant, debtor, data.invoice_id)] = {
                    "tenant_id": tenant,
                    "debtor_id": debtor,
                    "invoice_id": data.invoice_id,
                    "open": event.type == "ar.dispute.opened.v1",
                }
            elif isinstance(data, DebtorProfile):
                profiles[(tenant, debtor)] = {
                    "tenant_id": tenant,
                    "debtor_id": debtor,
                    "profile": data.model_dump(mode="json"),
                }

        if deliveries:
            await session.execute(
                pg_insert(store.deliveries).values(list(deliveries.values())).on_conflict_do_nothing()
            )
        if cancelled:
            await session.execute(
                pg_insert(store.cancellations).values(list(cancelled.values())).on_conflict_do_nothing()
            )
            pending, cancellation = store.deliveries.c, store.cancellations.c
            await session.execute(
                update(store.deliveries)
                .where(
                    pending.tenant_id == cancellation.tenant_id,
                    pending.command_id == cancellation.command_id,
                    pending.status == "pending",
                    tuple_(cancellation.tenant_id, cancellation.command_id).in_(list(cancelled)),
                )
                .values(status="cancelled", reason=cancellation.reason)
            )
        await _upsert(
            session, store.item_balances, list(balances.values()), ["tenant_id", "debtor_id", "invoice_id"]
        )
        await self._upsert_cases(session, list(cases.values()))
        await _upsert(
            session, store.disputes, list(disputes.values()), ["tenant_id", "debtor_id", "invoice_id"]
        )
        await _upsert(session, store.addressees, list(profiles.values()), ["tenant_id", "debtor_id"])
        return Applied(messages=deferred)

    async def _upsert_cases(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        statement = pg_insert(store.case_states).values(rows)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "case_id"],
                set_={
                    "version": statement.excluded.version,
                    "status": statement.excluded.status,
                    "change": statement.excluded.change,
                },
                where=store.case_states.c.version <= statement.excluded.version,
            )
        )
