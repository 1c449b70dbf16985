"""How a batch of balance facts, contact records, business days, debtor data and policies changes the
collection cases, and what dunning publishes because of it.

Per batch, in one transaction (the consumer loop's): policies, debtors and business dates are
stored; every fact is applied to the cases of its debtor (`evolve`); the debtors touched are decided
on their tenant's business date; then, for every business day the batch starts, every case whose
next action date has come is decided, in set-based chunks. Commands, cancellations and case events go
to the outbox; the timeline and the agency feed get a row for each.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import BusinessDayStarted
from contracts.collections import (
    AgencyOutcome,
    CaseEvent,
    CollectionCommand,
    CommandCancelled,
    InputRef,
    case_type,
)
from contracts.collections import command_type as command_type_of
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.policy import PolicyPublished, policy_in_force
from contracts.registry import encode_event, make_event
from contracts.topics import CASES, CLOCK, COMMANDS, CONTACTS, DEBTORS, POLICIES, RECEIVABLES
from services.dunning import store
from services.dunning.agencies import (
    AgencyKey,
    AgencyPerformance,
    AgencyRecord,
    record_placement,
    record_recovery,
)
from services.dunning.domain import (
    Case,
    DebtorFacts,
    Decision,
    agency_key,
    cancellation_id,
    case_event_id,
    currency_of,
    decide_debtor,
    dump_case,
    evolve,
    fact_of,
    load_case,
    new_case,
)
from services.runtime.consumer import Applied, Delivered
from services.runtime.log import Message

SOURCE = "arrears/dunning"
DUE_CHUNK = 2_000
CASE_FACTS = (RECEIVABLES.name, CONTACTS.name)
DebtorKey = tuple[str, str]


def _ref(d: Delivered) -> InputRef:
    return InputRef(
        topic=d.record.topic, partition=d.record.partition, offset=d.record.offset, event_id=d.event.id
    )


def _encode(case: Case) -> bytes:
    return orjson.dumps(dump_case(case))


def _decode(raw: bytes) -> Case:
    return load_case(orjson.loads(raw))


@dataclass
class _Batch:
    """The cases a batch works on, by debtor, and everything it will write."""

    cases: dict[DebtorKey, dict[str, Case]] = field(default_factory=dict)
    changed: set[tuple[str, str, str]] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    feed: list[dict[str, Any]] = field(default_factory=list)
    performance: dict[str, dict[AgencyKey, AgencyRecord]] = field(default_factory=dict)
    performance_changed: set[str] = field(default_factory=set)

    def put(self, case: Case) -> None:
        self.cases.setdefault((case.tenant_id, case.debtor_id), {})[case.case_id] = case
        self.changed.add((case.tenant_id, case.debtor_id, case.case_id))


class DunningProjection:
    group_id = "dunning"
    topics: tuple[str, ...] = (RECEIVABLES.name, CONTACTS.name, CLOCK.name, DEBTORS.name, POLICIES.name)

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        work = _Batch()
        days: dict[str, list[tuple[dt.date, InputRef]]] = defaultdict(list)
        facts: list[Delivered] = []
        profiles: dict[DebtorKey, dict[str, Any]] = {}
        policies: list[tuple[str, PolicyPublished]] = []
        for d in batch:
            data = d.event.data
            if isinstance(data, BusinessDayStarted):
                days[d.event.tenantid].append((data.business_date, _ref(d)))
            elif isinstance(data, DebtorProfile):
                profiles[(d.event.tenantid, d.event.debtorid or "")] = data.model_dump(mode="json")
            elif isinstance(data, PolicyPublished):
                policies.append((d.event.tenantid, data))
            elif d.record.topic in CASE_FACTS:
                facts.append(d)

        await _store_policies(session, policies)
        await _store_debtors(session, profiles)
        tenants = {d.event.tenantid for d in facts} | set(days)
        today = await _business_dates(session, tenants)
        versions = await _policies(session, tenants)

        await self._load_debtors(session, work, {(d.event.tenantid, d.event.debtorid or "") for d in facts})
        touched: set[DebtorKey] = set()
        for d in facts:
            self._apply_fact(work, d)
            touched.add((d.event.tenantid, d.event.debtorid or ""))
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant, debtor in sorted(touched):
            by_tenant[tenant].append(debtor)
        for tenant, debtors in by_tenant.items():
            day = today.get(tenant)
            policy = policy_in_force(versions.get(tenant, []), day) if day else None
            if day is not None and policy is not None:
                await self._decide_debtors(session, work, tenant, day, policy, debtors, None)

        for tenant, started in sorted(days.items()):
            for day, tick in sorted(started, key=lambda s: s[0]):
                if today.get(tenant) is not None and day <= today[tenant]:
                    continue  # a day started before (a repeated clock event) decides nothing new
                today[tenant] = day
                await self._decide_due(session, work, tenant, day, versions.get(tenant, []), tick)

        await _store_business_dates(session, today, tenants)
        await self._save(session, work)
        return Applied(messages=work.messages)

    # --- facts ----------------------------------------------------------------------------------

    async def _load_debtors(self, session: AsyncSession, work: _Batch, keys: Iterable[DebtorKey]) -> None:
        wanted = [k for k in keys if k not in work.cases]
        if not wanted:
            return
        for start in range(0, len(wanted), DUE_CHUNK):
            chunk = wanted[start : start + DUE_CHUNK]
            rows = await session.execute(
                select(store.cases.c.state).where(
                    tuple_(store.cases.c.tenant_id, store.cases.c.debtor_id).in_(chunk)
                )
            )
            for key in chunk:
                work.cases.setdefault(key, {})
            for row in rows:
                case = _decode(row.state)
                work.cases[(case.tenant_id, case.debtor_id)][case.case_id] = case

    def _apply_fact(self, work: _Batch, d: Delivered) -> None:
        tenant, debtor = d.event.tenantid, d.event.debtorid or ""
        fact = fact_of(d.event, _ref(d))
        currency = currency_of(fact)
        cases = work.cases.setdefault((tenant, debtor), {})
        if currency is not None and f"{debtor}:{currency}" not in cases:
            cases[f"{debtor}:{currency}"] = new_case(tenant, debtor, currency)
        for case_id in sorted(cases):
            case = cases[case_id]
            after, events = evolve(case, fact)
            if after is case:
                continue
            work.put(after)
            self._publish_events(work, after, events)
        if (
            isinstance(fact.data, AgencyOutcome)
            and fact.data.kind == "recovered"
            and fact.data.amount_recovered
        ):
            placed = cases.get(fact.data.case_id)
            key = agency_key(placed) if placed else None
            if key is not None and key.agency_id == fact.data.agency_id:
                performance = work.performance.get(tenant, {})
                work.performance[tenant] = dict(
                    record_recovery(performance, key, fact.data.amount_recovered.amount_minor)
                )
                work.performance_changed.add(tenant)

    # --- decisions ------------------------------------------------------------------------------

    async def _decide_due(
        self,
        session: AsyncSession,
        work: _Batch,
        tenant: str,
        day: dt.date,
        versions: list[PolicyPublished],
        tick: InputRef,
    ) -> None:
        """Every case of the tenant whose next action date has come, chunk by chunk, debtor by debtor."""
        policy = policy_in_force(versions, day)
        if policy is None:
            return
        # Cases this batch already holds are judged by their state in memory, the rest by the table.
        in_memory = {
            debtor
            for (t, debtor), cases in work.cases.items()
            if t == tenant
            and any(c.next_action_date is not None and c.next_action_date <= day for c in cases.values())
        }
        await self._decide_debtors(session, work, tenant, day, policy, sorted(in_memory), tick)
        t = store.cases
        after = ""
        while True:
            debtors = list(
                (
                    await session.scalars(
                        select(t.c.debtor_id)
                        .where(t.c.tenant_id == tenant, t.c.next_action_date <= day, t.c.debtor_id > after)
                        .group_by(t.c.debtor_id)
                        .order_by(t.c.debtor_id)
                        .limit(DUE_CHUNK)
                    )
                ).all()
            )
            fresh = [debtor for debtor in debtors if (tenant, debtor) not in work.cases]
            await self._load_debtors(session, work, [(tenant, debtor) for debtor in fresh])
            await self._decide_debtors(session, work, tenant, day, policy, fresh, tick)
            if len(debtors) < DUE_CHUNK:
                return
            after = debtors[-1]

    async def _decide_debtors(
        self,
        session: AsyncSession,
        work: _Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        debtors: Sequence[str],
        tick: InputRef | None,
    ) -> None:
        profiles = await _profiles(session, tenant, debtors)
        for debtor in debtors:
            cases = work.cases.get((tenant, debtor), {})
            facts = DebtorFacts(
                profile=profiles.get(debtor), agencies=await self._performance(session, work, tenant)
            )
            for decision in decide_debtor([cases[c] for c in sorted(cases)], day, policy, facts, tick=tick):
                self._publish_decision(work, decision, day, tick)

    async def _performance(self, session: AsyncSession, work: _Batch, tenant: str) -> AgencyPerformance:
        if tenant not in work.performance:
            p = store.agency_performance
            rows = await session.execute(select(p).where(p.c.tenant_id == tenant))
            work.performance[tenant] = {
                AgencyKey(r.agency_id, r.segment, r.currency, r.band): AgencyRecord(
                    r.placements, r.placed_minor, r.recovered_minor
                )
                for r in rows
            }
        return work.performance[tenant]

    # --- what is published ------------------------------------------------------------------------

    def _publish_decision(
        self, work: _Batch, decision: Decision, day: dt.date, tick: InputRef | None
    ) -> None:
        case = decision.case
        if not (decision.commands or decision.cancellations or decision.events) and not _moved(work, case):
            return
        work.put(case)
        for command in decision.commands:
            self._publish_command(work, case, command)
        for cancellation in decision.cancellations:
            self._publish_cancellation(work, case, cancellation)
        self._publish_events(work, case, list(decision.events))

    def _envelope(self, event_type: str, data: Any, event_id: str, case: Case, cause: str | None) -> Message:
        event: Envelope[Any] = make_event(
            event_type,
            data,
            event_id=event_id,
            tenant_id=case.tenant_id,
            debtor_id=case.debtor_id,
            source=SOURCE,
            time=_business_time(data),
            causation_id=cause,
        )
        topic = COMMANDS.name if isinstance(data, CollectionCommand | CommandCancelled) else CASES.name
        return Message(topic, event.key.encode(), encode_event(event))

    def _publish_command(self, work: _Batch, case: Case, command: CollectionCommand) -> None:
        cause = command.inputs[-1].event_id if command.inputs else None
        work.messages.append(
            self._envelope(command_type_of(command.action), command, command.command_id, case, cause)
        )
        work.timeline.append(
            _timeline_row(
                case,
                command.business_date,
                f"command.{command.action}",
                command.command_id,
                {
                    "step": command.step,
                    "channels": command.channels,
                    "items": [i.invoice_id for i in command.items],
                    "total_minor": command.total.amount_minor,
                    "penalty_minor": command.penalty.amount_minor if command.penalty else None,
                    "discount_minor": command.discount.amount_minor if command.discount else None,
                    "deadline": command.deadline.isoformat() if command.deadline else None,
                    "policy_version": command.policy_version,
                    "inputs": [i.model_dump(mode="json") for i in command.inputs],
                },
            )
        )
        if command.action in ("place_with_agency", "recall_from_agency") and command.agency_id:
            kind = "placed" if command.action == "place_with_agency" else "recalled"
            work.feed.append(_feed_row(case, command.agency_id, kind, command.business_date))

    def _publish_cancellation(self, work: _Batch, case: Case, cancellation: CommandCancelled) -> None:
        event_id = cancellation_id(case.tenant_id, cancellation.command_id)
        work.messages.append(
            self._envelope("collections.command.cancelled.v1", cancellation, event_id, case, None)
        )
        work.timeline.append(
            _timeline_row(
                case,
                cancellation.business_date,
                "command.cancelled",
                event_id,
                {"command_id": cancellation.command_id, "reason": cancellation.reason},
            )
        )

    def _publish_events(self, work: _Batch, case: Case, events: list[CaseEvent]) -> None:
        for event in events:
            event_id = case_event_id(case.tenant_id, event)
            cause = event.inputs[-1].event_id if event.inputs else None
            work.messages.append(self._envelope(case_type(event.change), event, event_id, case, cause))
            work.timeline.append(
                _timeline_row(
                    case,
                    event.business_date,
                    event.change,
                    event_id,
                    {
                        "version": event.version,
                        "status": event.status,
                        "step": event.step,
                        "overdue_minor": event.overdue.amount_minor,
                        "detail": event.detail,
                        "policy_version": event.policy_version,
                        "inputs": [i.model_dump(mode="json") for i in event.inputs],
                    },
                )
            )
            if event.change == "placed" and event.agency_id:
                key = agency_key(case)
                if key is not None:
                    tenant = case.tenant_id
                    performance = work.performance.get(tenant, {})
                    work.performance[tenant] = dict(
                        record_placement(performance, key, event.overdue.amount_minor)
                    )
                    work.performance_changed.add(tenant)
            elif case.placement is not None and event.change not in ("placed", "recalled", "note"):
                work.feed.append(_feed_row(case, case.placement.agency_id, "updated", event.business_date))

    # --- writes ---------------------------------------------------------------------------------

    async def _save(self, session: AsyncSession, work: _Batch) -> None:
        rows = []
        for tenant, debtor, case_id in sorted(work.changed):
            case = work.cases[(tenant, debtor)][case_id]
            items = case.open_items()
            rows.append(
                {
                    "tenant_id": tenant,
                    "case_id": case_id,
                    "debtor_id": debtor,
                    "currency": case.currency,
                    "status": case.status,
                    "step": case.step,
                    "overdue_minor": case.overdue(case.as_of) if case.as_of else 0,
                    "oldest_due_date": items[0].due_date if items else None,
                    "next_action_date": case.next_action_date,
                    "agency_id": case.placement.agency_id if case.placement else None,
                    "version": case.version,
                    "state": _encode(case),
                }
            )
        for start in range(0, len(rows), 1_000):
            chunk = rows[start : start + 1_000]
            statement = pg_insert(store.cases).values(chunk)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["tenant_id", "case_id"],
                    set_={c: statement.excluded[c] for c in chunk[0] if c not in ("tenant_id", "case_id")}
                    | {"updated_at": func.now()},
                )
            )
        for start in range(0, len(work.timeline), 2_000):
            await session.execute(pg_insert(store.timeline).values(work.timeline[start : start + 2_000]))
        if work.feed:
            await session.execute(pg_insert(store.agency_feed).values(work.feed))
        for tenant in sorted(work.performance_changed):
            await _store_performance(session, tenant, work.performance[tenant])


def _moved(work: _Batch, case: Case) -> bool:
    known = work.cases.get((case.tenant_id, case.debtor_id), {}).get(case.case_id)
    return known != case


def _business_time(data: Any) -> dt.datetime:
    """Envelope time of what dunning publishes: midnight UTC of the business date it was decided on,
    so a replay publishes byte-identical records."""
    day: dt.date = data.business_date
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _timeline_row(
    case: Case, day: dt.date, kind: str, event_id: str, entry: dict[str, Any]
) -> dict[str, Any]:
    return {
        "tenant_id": case.tenant_id,
        "case_id": case.case_id,
        "business_date": day,
        "kind": kind,
        "event_id": event_id,
        "entry": entry,
    }


def _feed_row(case: Case, agency_id: str, kind: str, day: dt.date) -> dict[str, Any]:
    """What an agency sees of a case: the debt, the debtor's contact data is added by the API."""
    return {
        "tenant_id": case.tenant_id,
        "agency_id": agency_id,
        "case_id": case.case_id,
        "kind": kind,
        "entry": {
            "business_date": day.isoformat(),
            "debtor_id": case.debtor_id,
            "currency": case.currency,
            "overdue_minor": case.overdue(day),
            "items": [
                {
                    "invoice_id": i.invoice_id,
                    "issue_date": i.issue_date.isoformat(),
                    "due_date": i.due_date.isoformat(),
                    "outstanding_minor": i.outstanding,
                }
                for i in case.open_items()
            ],
        },
    }


# --- small tables -----------------------------------------------------------------------------------


async def _store_policies(session: AsyncSession, policies: list[tuple[str, PolicyPublished]]) -> None:
    for tenant, policy in policies:
        await session.execute(
            pg_insert(store.policies)
            .values(
                tenant_id=tenant,
                version=policy.version,
                effective_from=policy.effective_from,
                document=policy.model_dump(mode="json"),
            )
            .on_conflict_do_nothing()
        )


async def _policies(session: AsyncSession, tenants: Iterable[str]) -> dict[str, list[PolicyPublished]]:
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    rows = await session.execute(
        select(store.policies.c.tenant_id, store.policies.c.document).where(
            store.policies.c.tenant_id.in_(wanted)
        )
    )
    found: dict[str, list[PolicyPublished]] = defaultdict(list)
    for row in rows:
        found[row.tenant_id].append(PolicyPublished.model_validate(row.document))
    return found


async def _store_debtors(session: AsyncSession, profiles: dict[DebtorKey, dict[str, Any]]) -> None:
    if not profiles:
        return
    statement = pg_insert(store.debtors).values(
        [{"tenant_id": t, "debtor_id": d, "profile": p} for (t, d), p in sorted(profiles.items())]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "debtor_id"], set_={"profile": statement.excluded.profile}
        )
    )


async def _profiles(session: AsyncSession, tenant: str, debtors: Sequence[str]) -> dict[str, DebtorProfile]:
    if not debtors:
        return {}
    rows = await session.execute(
        select(store.debtors.c.debtor_id, store.debtors.c.profile).where(
            and_(store.debtors.c.tenant_id == tenant, store.debtors.c.debtor_id.in_(list(debtors)))
        )
    )
    return {r.debtor_id: DebtorProfile.model_validate(r.profile) for r in rows}


async def _business_dates(session: AsyncSession, tenants: Iterable[str]) -> dict[str, dt.date]:
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    rows = await session.execute(
        select(store.business_dates.c.tenant_id, store.business_dates.c.business_date).where(
            store.business_dates.c.tenant_id.in_(wanted)
        )
    )
    return {r.tenant_id: r.business_date for r in rows}


async def _store_business_dates(session: AsyncSession, dates: dict[str, dt.date], tenants: set[str]) -> None:
    rows = [{"tenant_id": t, "business_date": d} for t, d in sorted(dates.items()) if t in tenants]
    if not rows:
        return
    statement = pg_insert(store.business_dates).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "business_date": func.greatest(
                    store.business_dates.c.business_date, statement.excluded.business_date
                )
            },
        )
    )


async def _store_performance(session: AsyncSession, tenant: str, performance: AgencyPerformance) -> None:
    rows = [
        {
            "tenant_id": tenant,
            "agency_id": k.agency_id,
            "segment": k.segment,
            "currency": k.currency,
            "band": k.band,
            "placements": r.placements,
            "placed_minor": r.placed_minor,
            "recovered_minor": r.recovered_minor,
        }
        for k, r in sorted(performance.items(), key=lambda kv: (kv[0].agency_id, kv[0].segment, kv[0].band))
    ]
    if not rows:
        return
    statement = pg_insert(store.agency_performance).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "agency_id", "segment", "currency", "band"],
            set_={c: statement.excluded[c] for c in ("placements", "placed_minor", "recovered_minor")},
        )
    )
