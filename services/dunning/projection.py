"""How a batch of balance facts, contact records, business days, debtor data and policies changes the
collection cases, and what dunning publishes because of it.

Per batch, in the consumer loop's transaction: policies, debtors and business dates are
stored; every fact is applied to the cases of its debtor (`evolve`); the debtors touched are decided
on their tenant's business date; then, for every business day the batch starts, every case whose
next action date has come is decided, in set-based chunks. Commands, cancellations and case events go
to the outbox; the timeline and the agency feed get a row for each.

A business day is evaluated chunk by chunk (`DUE_CHUNK` debtors), one chunk in memory at a time.
The debtors the batch itself wrote (facts, profiles) are decided in the batch's transaction; every
other chunk in a short transaction of its own that commits its cases, timeline, feed, outbox records
and agency placements at once, so a day's commands are published while it is still being decided;
the clock record's offset and the business date commit last, with the batch (`_decide_slice` says
why this keeps the exactly-once effect). Bulk writes go through the session's asyncpg connection
with one array per column (`unnest`) or COPY: no statement compiled per chunk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, select, update
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
from contracts.scores import ScoreChanged
from contracts.topics import CASES, CLOCK, COMMANDS, CONTACTS, DEBTORS, POLICIES, RECEIVABLES, SCORES
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
    is_due,
    load_case_json,
    new_case,
    opens_case,
)
from services.runtime.committed_cache import CommittedCache
from services.runtime.consumer import Applied, Delivered
from services.runtime.database import driver_connection
from services.runtime.log import Message
from services.runtime.outbox import write_outbox

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
    return load_case_json(raw)


@dataclass
class _Batch:
    """The cases a batch works on, by debtor, and everything it will write."""

    cases: dict[DebtorKey, dict[str, Case]] = field(default_factory=dict)
    changed: set[tuple[str, str, str]] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    feed: list[dict[str, Any]] = field(default_factory=list)
    performance: dict[str, dict[AgencyKey, AgencyRecord]] = field(default_factory=dict)
    """Each tenant's agency records as they stand (shared by a day's slices)."""
    performance_added: dict[str, dict[AgencyKey, AgencyRecord]] = field(default_factory=dict)
    """What this transaction adds to them (placements, recoveries): written as increments."""
    written: set[DebtorKey] = field(default_factory=set)
    """Debtors whose rows this transaction wrote or whose profile it stored."""
    versions: dict[tuple[str, str], str] = field(default_factory=dict)
    """The version (`xmin`) of each case row this transaction read or wrote, by (tenant, case id).
    A case is written only while its row still has that version, and a case without one only while
    it still has no row (`_save`); what the consumer batch leaves behind is cached with it."""
    caches: bool = False
    """The consumer batch's own (not a day's slice): what it leaves behind is cached."""

    def count(self, tenant: str, key: AgencyKey, updated: AgencyPerformance) -> None:
        """Take the tenant's agency records after a placement or recovery of kind `key`."""
        before = self.performance.get(tenant, {}).get(key, AgencyRecord())
        after = updated[key]
        added = self.performance_added.setdefault(tenant, {})
        so_far = added.get(key, AgencyRecord())
        added[key] = AgencyRecord(
            so_far.placements + after.placements - before.placements,
            so_far.placed_minor + after.placed_minor - before.placed_minor,
            so_far.recovered_minor + after.recovered_minor - before.recovered_minor,
        )
        self.performance[tenant] = dict(updated)

    def hold(self, tenant: str, debtors: Iterable[str], rows: Iterable[tuple[bytes, str]]) -> None:
        """The stored cases of the tenant's `debtors` (none for a debtor without rows), from their
        encoded states and their rows' versions."""
        for debtor in debtors:
            self.cases[(tenant, debtor)] = {}
        for state, version in rows:
            case = _decode(state)
            self.cases[(tenant, case.debtor_id)][case.case_id] = case
            _remember(self, case, version)

    def put(self, case: Case) -> None:
        self.cases.setdefault((case.tenant_id, case.debtor_id), {})[case.case_id] = case
        self.changed.add((case.tenant_id, case.debtor_id, case.case_id))


DEFAULT_CASE_CACHE = 10_000
"""Debtors whose decoded cases are kept between batches."""
CachedCases = dict[str, tuple[Case, str]]
"""A debtor's cases by case id, each with the version of its row."""


class DunningProjection:
    """Applies a batch to the dunning tables.

    The decoded cases of debtors the batches touch are kept between batches (`CommittedCache`:
    committed state only), each with the version of its row; a batch uses a cached case only while
    its row still has that version (a day's slices, and other members of the group, write rows
    too). A day's slices neither read nor fill the cache: a business day reads every due case once."""

    group_id = "dunning"
    business_clock = CLOCK.name
    topics: tuple[str, ...] = (
        RECEIVABLES.name,
        CONTACTS.name,
        CLOCK.name,
        DEBTORS.name,
        POLICIES.name,
        SCORES.name,
    )

    def __init__(self, case_cache_size: int = DEFAULT_CASE_CACHE) -> None:
        self.cache: CommittedCache[DebtorKey, CachedCases] = CommittedCache(case_cache_size)
        self.batch_committed = self.cache.batch_committed
        self.batch_failed = self.cache.batch_failed
        self.partitions_changed = self.cache.partitions_changed

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        work = _Batch(caches=True)
        days: dict[str, list[tuple[dt.date, InputRef]]] = defaultdict(list)
        facts: list[Delivered] = []
        profiles: dict[DebtorKey, dict[str, Any]] = {}
        segments: dict[tuple[str, str, str], tuple[str, bool]] = {}
        # Debtors scoring now proposes for write-off: decided in this batch, so that the proposal
        # takes effect on the tenant's business date, not on the next date their cases are due.
        proposed: set[DebtorKey] = set()
        policies: list[tuple[str, PolicyPublished]] = []
        for d in batch:
            data = d.event.data
            if isinstance(data, BusinessDayStarted):
                days[d.event.tenantid].append((data.business_date, _ref(d)))
            elif isinstance(data, DebtorProfile):
                profiles[(d.event.tenantid, d.event.debtorid or "")] = data.model_dump(mode="json")
            elif isinstance(data, ScoreChanged):
                key = (d.event.tenantid, d.event.debtorid or "")
                segments[(*key, data.open.currency)] = (data.segment, data.write_off_proposed)
                if data.write_off_proposed:
                    proposed.add(key)
            elif isinstance(data, PolicyPublished):
                policies.append((d.event.tenantid, data))
            elif d.record.topic in CASE_FACTS:
                facts.append(d)

        await _store_policies(session, policies)
        await _store_debtors(session, profiles)
        await _store_segments(session, segments)
        work.written.update(profiles)
        tenants = {d.event.tenantid for d in facts} | set(days) | {t for t, _ in proposed}
        today = await _business_dates(session, tenants)
        versions = await _policies(session, tenants)
        applied = await _applied_policies(session, set(days), versions)

        keys = {(d.event.tenantid, d.event.debtorid or "") for d in facts}
        await self._load_debtors(session, work, keys | proposed)
        # A recovery adds to the agency's record: start from the stored records, not from none.
        for tenant in sorted({d.event.tenantid for d in facts if isinstance(d.event.data, AgencyOutcome)}):
            await self._performance(session, work, tenant)
        touched: set[DebtorKey] = set(proposed)
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
                policy = policy_in_force(versions.get(tenant, []), day)
                if policy is None:
                    continue
                # The first business day of a version plans every open case again under it.
                replan = policy.version != applied.get(tenant, 0)
                await self._decide_due(session, work, tenant, day, policy, replan, tick)
                applied[tenant] = policy.version

        await _store_business_dates(session, today, tenants)
        await _store_applied_policies(session, {t: applied.get(t, 0) for t in days})
        await self._save(session, work)
        await self._save_performance(session, work)
        return Applied(messages=work.messages)

    # --- facts ----------------------------------------------------------------------------------

    async def _load_debtors(self, session: AsyncSession, work: _Batch, keys: Iterable[DebtorKey]) -> None:
        """The cases of the debtors: cached ones whose rows still have the cached version, the rest
        decoded from their rows."""
        wanted = [k for k in keys if k not in work.cases]
        if not wanted:
            return
        cached = self.cache.lookup(wanted)
        connection = await driver_connection(session)
        for start in range(0, len(wanted), DUE_CHUNK):
            chunk = wanted[start : start + DUE_CHUNK]
            known = [
                (tenant, case_id, version)
                for tenant, debtor in chunk
                for case_id, (_, version) in cached.get((tenant, debtor), {}).items()
            ]
            rows = await connection.fetch(
                _LOAD_CASES,
                [t for t, _ in chunk],
                [d for _, d in chunk],
                [t for t, _, _ in known],
                [c for _, c, _ in known],
                [v for _, _, v in known],
            )
            for key in chunk:
                work.cases.setdefault(key, {})
            decoded = 0
            for row in rows:
                key = (row["tenant_id"], row["debtor_id"])
                if row["state"] is None:
                    case = cached[key][row["case_id"]][0]
                else:
                    case = _decode(row["state"])
                    decoded += 1
                work.cases[key][case.case_id] = case
                _remember(work, case, row["version"])
            self.cache.count(hits=len(rows) - decoded, misses=decoded)

    async def _load_tenant_debtors(
        self, session: AsyncSession, work: _Batch, tenant: str, debtors: Sequence[str]
    ) -> None:
        """The cases of debtors of one tenant that the batch does not hold yet (by the debtor index)."""
        wanted = [d for d in debtors if (tenant, d) not in work.cases]
        if not wanted:
            return
        connection = await driver_connection(session)
        rows = await connection.fetch(
            f"SELECT state, xmin::text AS version FROM {_CASES}"
            " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
            tenant,
            wanted,
        )
        work.hold(tenant, wanted, ((row["state"], row["version"]) for row in rows))

    def _apply_fact(self, work: _Batch, d: Delivered) -> None:
        tenant, debtor = d.event.tenantid, d.event.debtorid or ""
        fact = fact_of(d.event, _ref(d))
        currency = currency_of(fact)
        cases = work.cases.setdefault((tenant, debtor), {})
        if currency is not None and f"{debtor}:{currency}" not in cases and opens_case(fact):
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
                work.count(
                    tenant, key, record_recovery(performance, key, fact.data.amount_recovered.amount_minor)
                )

    # --- decisions ------------------------------------------------------------------------------

    async def _decide_due(
        self,
        session: AsyncSession,
        work: _Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        replan: bool,
        tick: InputRef,
    ) -> None:
        """Every case of the tenant that is due (`is_due`), chunk by chunk, debtor by debtor: those whose
        next action date has come and, on the first business day of a policy version (`replan`), every
        open case not decided under it, so that it is planned again under this version."""
        # Every open case was decided under the version by the end of its first business day.
        new_version = policy if replan else None
        # Cases this batch already holds are judged by their state in memory, the rest by the table.
        in_memory = {
            debtor
            for (t, debtor), cases in work.cases.items()
            if t == tenant and any(is_due(c, day, new_version) for c in cases.values())
        }
        await self._decide_debtors(session, work, tenant, day, policy, sorted(in_memory), tick)
        # Written and dropped: from here on the table holds every case as this batch left it, so the
        # cases due are read from it once, and decided chunk by chunk in debtor order.
        await self._flush(session, work, feed=False)
        connection = await driver_connection(session)
        due = [r["debtor_id"] for r in await connection.fetch(_REPLANNED if replan else _DUE, tenant, day)]
        # Debtors this batch wrote (or gave a profile) are decided in its transaction; every other
        # chunk in a transaction of its own, committed at once (see `_decide_slice`).
        mine = [debtor for debtor in due if (tenant, debtor) in work.written]
        for start in range(0, len(mine), DUE_CHUNK):
            chunk = mine[start : start + DUE_CHUNK]
            await self._load_tenant_debtors(session, work, tenant, chunk)
            chunk = _due_debtors(work, tenant, chunk, day, new_version)
            await self._decide_debtors(session, work, tenant, day, policy, chunk, tick)
            await self._flush(session, work, feed=False)
        others = [debtor for debtor in due if (tenant, debtor) not in work.written]
        chunks = [others[start : start + DUE_CHUNK] for start in range(0, len(others), DUE_CHUNK)]
        # Each chunk's rows are read while the chunk before it is decided (another connection: the
        # database works while Python decides). They are committed rows no other slice changes.
        reading = asyncio.create_task(_read_chunk(session, tenant, chunks[0])) if chunks else None
        try:
            for index, chunk in enumerate(chunks):
                assert reading is not None
                read = await reading
                reading = None
                if index + 1 < len(chunks):
                    reading = asyncio.create_task(_read_chunk(session, tenant, chunks[index + 1]))
                    await asyncio.sleep(0)  # let it send its query before deciding starts
                await self._decide_slice(session, work, tenant, day, policy, new_version, chunk, tick, read)
        finally:
            if reading is not None:  # a slice failed: the batch fails and the read is not wanted
                reading.cancel()

    async def _decide_slice(
        self,
        session: AsyncSession,
        work: _Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        new_version: PolicyPublished | None,
        debtors: Sequence[str],
        tick: InputRef,
        read: _Chunk,
    ) -> None:
        """Decide a chunk of a business day's debtors in a transaction of its own and commit it: their
        cases, timeline, feed, outbox records and the agency placements they add, all or nothing.

        Why this keeps the consumer's exactly-once effect: a case decided on `day` is no longer due
        on it (its next action date is later, or none, and it was decided under the version in force:
        `is_due`), so a slice commits cases that no evaluation of `day` picks again, together with
        everything they published. The clock record's offset, its event id, the tenant's business
        date and the version it was decided under commit in the batch's transaction, after every
        slice; if that transaction fails or the process dies first, the record comes again and
        decides exactly the debtors no slice committed. Slices never touch rows the batch's
        transaction wrote (those debtors are decided in it), and agency records are written as
        increments, each slice its own, the batch's own at its end; so no slice waits for a lock the
        batch holds. A day's commands are published while it is still being evaluated, a transaction
        stays one chunk long, and a day interrupted half-way is not decided again from its start."""
        async with AsyncSession(session.bind, expire_on_commit=False) as own, own.begin():
            part = _Batch(performance=work.performance)
            part.hold(tenant, debtors, read.rows)
            due = _due_debtors(part, tenant, debtors, day, new_version)
            await self._decide_debtors(own, part, tenant, day, policy, due, tick, read.profiles)
            await self._flush(own, part)
            await self._save_performance(own, part)

    async def _decide_debtors(
        self,
        session: AsyncSession,
        work: _Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        debtors: Sequence[str],
        tick: InputRef | None,
        profiles: dict[str, DebtorProfile] | None = None,
    ) -> None:
        if profiles is None:
            profiles = await _profiles(session, tenant, debtors)
        segments = await _segments(session, tenant, debtors)
        for debtor in debtors:
            cases = work.cases.get((tenant, debtor), {})
            scored = segments.get(debtor)
            facts = DebtorFacts(
                profile=profiles.get(debtor),
                segments=scored.segments if scored else {},
                write_off_proposed=scored.write_off_proposed if scored else frozenset(),
                agencies=await self._performance(session, work, tenant),
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
            if event.change in ("placed", "recalled") and event.agency_id:
                # Whatever ends a placement (a recall, a placement not delivered or cancelled before
                # it was) is a recall in the agency's feed, in the order of the case's events.
                work.feed.append(_feed_row(case, event.agency_id, event.change, event.business_date))
            if event.change == "placed" and event.agency_id:
                key = agency_key(case)
                if key is not None:
                    tenant = case.tenant_id
                    performance = work.performance.get(tenant, {})
                    work.count(tenant, key, record_placement(performance, key, event.overdue.amount_minor))
            elif case.placement is not None and event.change not in ("placed", "recalled", "note"):
                work.feed.append(_feed_row(case, case.placement.agency_id, "updated", event.business_date))

    # --- writes ---------------------------------------------------------------------------------

    async def _flush(self, session: AsyncSession, work: _Batch, *, feed: bool = True) -> None:
        """Write what the batch decided so far (cases, timeline, feed, outbox) and drop the cases; the
        agency records are written at the end (`_save_performance`). The batch's own feed rows wait
        for its end too (`feed=False`): agencies read the feed by position, so no row may commit after
        a row with a later position, as it would if the batch wrote it before a day's slices."""
        await self._save(session, work, feed=feed)
        await write_outbox(session, store.runtime, work.messages)
        work.messages.clear()
        work.cases.clear()

    async def _save(self, session: AsyncSession, work: _Batch, *, feed: bool = True) -> None:
        connection = await driver_connection(session)
        await _write_cases(connection, work)
        work.written.update((tenant, debtor) for tenant, debtor, _ in work.changed)
        work.changed.clear()
        self._stage(work)
        if work.timeline:
            await connection.copy_records_to_table(
                store.timeline.name,
                schema_name=store.SCHEMA,
                columns=_TIMELINE_COLUMNS,
                records=[
                    (
                        r["tenant_id"],
                        r["case_id"],
                        r["business_date"],
                        r["kind"],
                        r["event_id"],
                        _json(r["entry"]),
                    )
                    for r in work.timeline
                ],
            )
            work.timeline.clear()
        if work.feed and feed:
            await connection.copy_records_to_table(
                store.agency_feed.name,
                schema_name=store.SCHEMA,
                columns=_FEED_COLUMNS,
                records=[
                    (r["tenant_id"], r["agency_id"], r["case_id"], r["kind"], _json(r["entry"]))
                    for r in work.feed
                ],
            )
            work.feed.clear()

    def _stage(self, work: _Batch) -> None:
        """Leave the consumer batch's cases, as written, to the cache (once the batch commits)."""
        if not work.caches:
            return
        versions = work.versions
        for (tenant, debtor), cases in work.cases.items():
            stored = {
                case_id: (case, version)
                for case_id, case in cases.items()
                if (version := versions.get((tenant, case_id))) is not None
            }
            self.cache.stage((tenant, debtor), stored)

    async def _save_performance(self, session: AsyncSession, work: _Batch) -> None:
        for tenant, added in sorted(work.performance_added.items()):
            await _add_performance(session, tenant, added)
        work.performance_added.clear()


_CASES = f"{store.SCHEMA}.{store.cases.name}"
_CASE_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("debtor_id", "text"),
    ("currency", "text"),
    ("status", "text"),
    ("step", "text"),
    ("overdue_minor", "bigint"),
    ("oldest_due_date", "date"),
    ("next_action_date", "date"),
    ("agency_id", "text"),
    ("version", "integer"),
    ("state", "bytea"),
)
_NAMES = ", ".join(c for c, _ in _CASE_COLUMNS)
_WRITE_CASES = (
    "WITH r AS (SELECT * FROM unnest("
    + ", ".join(f"${n}::{t}[]" for n, (_, t) in enumerate(_CASE_COLUMNS, 1))
    + f", ${len(_CASE_COLUMNS) + 1}::text[]) AS r({_NAMES}, read_version)),"
    f" updated AS (UPDATE {_CASES} AS c SET "
    + ", ".join(f"{c} = r.{c}" for c, _ in _CASE_COLUMNS[2:])
    + ", updated_at = now() FROM r"
    " WHERE c.tenant_id = r.tenant_id AND c.case_id = r.case_id AND c.xmin::text = r.read_version"
    " RETURNING c.tenant_id, c.case_id, c.xmin::text AS version),"
    f" inserted AS (INSERT INTO {_CASES} ({_NAMES}, updated_at)"
    f" SELECT {_NAMES}, now() FROM r WHERE r.read_version IS NULL"
    " ON CONFLICT (tenant_id, case_id) DO NOTHING"
    " RETURNING tenant_id, case_id, xmin::text AS version)"
    " SELECT * FROM updated UNION ALL SELECT * FROM inserted"
)
"""Every changed case in one statement, one array per column and the version each row was read
with (null: it had none): a row is updated only while it has that version, inserted only while
there is none. Each row written comes back with its new version; one that does not was changed by
another writer since it was read."""
_LOAD_CASES = (
    "SELECT c.tenant_id, c.debtor_id, c.case_id, c.xmin::text AS version,"
    " CASE WHEN k.version IS DISTINCT FROM c.xmin::text THEN c.state END AS state"
    f" FROM {_CASES} AS c"
    " JOIN unnest($1::text[], $2::text[]) AS d(tenant_id, debtor_id)"
    " ON c.tenant_id = d.tenant_id AND c.debtor_id = d.debtor_id"
    " LEFT JOIN unnest($3::text[], $4::text[], $5::text[]) AS k(tenant_id, case_id, version)"
    " ON c.tenant_id = k.tenant_id AND c.case_id = k.case_id"
)
"""The cases of some debtors with their versions; the state only where it is not the version the
caller holds ($3..$5: tenant, case id and version of each case it holds)."""
_DUE = (
    f"SELECT DISTINCT debtor_id FROM {_CASES} WHERE tenant_id = $1 AND next_action_date <= $2"
    " ORDER BY debtor_id"
)
"""The debtors with a case whose next action date has come (by the `cases_due` index)."""
_REPLANNED = (
    f"SELECT DISTINCT debtor_id FROM {_CASES}"
    " WHERE tenant_id = $1 AND (next_action_date <= $2 OR status <> 'closed') ORDER BY debtor_id"
)
"""On the first business day of a policy version: the debtors with a due case or an open one, every
one of which is to be planned again under that version (`_due_debtors` leaves out those that were
already, before the day was interrupted and its clock record came again)."""
_TIMELINE_COLUMNS = ("tenant_id", "case_id", "business_date", "kind", "event_id", "entry")
_FEED_COLUMNS = ("tenant_id", "agency_id", "case_id", "kind", "entry")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def case_row(case: Case, state: bytes) -> tuple[Any, ...]:
    """The case as a row of the `cases` table (`_CASE_COLUMNS`), its encoded state given."""
    items = case.open_items()
    return (
        case.tenant_id,
        case.case_id,
        case.debtor_id,
        case.currency,
        case.status,
        case.step,
        case.overdue(case.as_of) if case.as_of else 0,
        items[0].due_date if items else None,
        case.next_action_date,
        case.placement.agency_id if case.placement else None,
        case.version,
        state,
    )


def _remember(work: _Batch, case: Case, version: str) -> None:
    work.versions[(case.tenant_id, case.case_id)] = version


async def _write_cases(connection: Any, work: _Batch) -> None:
    """Write the batch's changed cases, each on the condition that its row is as the batch read it;
    raise `CaseChanged` (the whole batch is then read again) when one is not."""
    changed = sorted(work.changed)
    if not changed:
        return
    columns: list[list[Any]] = [[] for _ in range(len(_CASE_COLUMNS) + 1)]
    for tenant, debtor, case_id in changed:
        case = work.cases[(tenant, debtor)][case_id]
        row = (*case_row(case, _encode(case)), work.versions.get((tenant, case_id)))
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    rows = await connection.fetch(_WRITE_CASES, *columns)
    written = {(r["tenant_id"], r["case_id"]): r["version"] for r in rows}
    lost = [(tenant, case_id) for tenant, _, case_id in changed if (tenant, case_id) not in written]
    if lost:
        raise store.CaseChanged(lost)
    work.versions.update(written)


def _due_debtors(
    work: _Batch, tenant: str, debtors: Sequence[str], day: dt.date, new_version: PolicyPublished | None
) -> list[str]:
    """The debtors, among those the batch holds, with a case to decide on `day` (`is_due`; on the first
    business day of a version, `new_version` is that version)."""
    return [
        debtor
        for debtor in debtors
        if any(is_due(c, day, new_version) for c in work.cases.get((tenant, debtor), {}).values())
    ]


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


@dataclass(frozen=True)
class _Chunk:
    rows: list[tuple[bytes, str]]
    """Each case's encoded state and its row's version."""
    profiles: dict[str, DebtorProfile]


async def _read_chunk(session: AsyncSession, tenant: str, debtors: Sequence[str]) -> _Chunk:
    """The stored cases and profiles of a chunk of debtors, on a connection of its own."""
    async with AsyncSession(session.bind) as reader:
        connection = await driver_connection(reader)
        rows = await connection.fetch(
            f"SELECT state, xmin::text AS version FROM {_CASES}"
            " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
            tenant,
            list(debtors),
        )
        profiles = await _profile_rows(connection, tenant, debtors)
        await reader.rollback()
    return _Chunk([(r["state"], r["version"]) for r in rows], profiles)


async def _store_segments(
    session: AsyncSession, segments: dict[tuple[str, str, str], tuple[str, bool]]
) -> None:
    """Each debtor's risk segment in each currency from its latest score in that currency, and whether
    scoring proposes the currency's debt for write-off."""
    if not segments:
        return
    statement = pg_insert(store.segments).values(
        [
            {"tenant_id": t, "debtor_id": d, "currency": c, "segment": s, "write_off_proposed": w}
            for (t, d, c), (s, w) in sorted(segments.items())
        ]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "debtor_id", "currency"],
            set_={
                "segment": statement.excluded.segment,
                "write_off_proposed": statement.excluded.write_off_proposed,
            },
        )
    )


@dataclass(frozen=True)
class _Scored:
    segments: dict[str, str]
    """By currency."""
    write_off_proposed: frozenset[str]


async def _segments(session: AsyncSession, tenant: str, debtors: Sequence[str]) -> dict[str, _Scored]:
    if not debtors:
        return {}
    t = store.segments
    rows = await session.execute(
        select(t.c.debtor_id, t.c.currency, t.c.segment, t.c.write_off_proposed).where(
            t.c.tenant_id == tenant, t.c.debtor_id.in_(list(debtors))
        )
    )
    segments: dict[str, dict[str, str]] = defaultdict(dict)
    proposed: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        segments[r.debtor_id][r.currency] = r.segment
        if r.write_off_proposed:
            proposed[r.debtor_id].add(r.currency)
    return {d: _Scored(segments[d], frozenset(proposed[d])) for d in segments}


async def _profiles(session: AsyncSession, tenant: str, debtors: Sequence[str]) -> dict[str, DebtorProfile]:
    if not debtors:
        return {}
    return await _profile_rows(await driver_connection(session), tenant, debtors)


async def _profile_rows(connection: Any, tenant: str, debtors: Sequence[str]) -> dict[str, DebtorProfile]:
    rows = await connection.fetch(
        f"SELECT debtor_id, profile::text AS profile FROM {store.SCHEMA}.{store.debtors.name}"
        " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
        tenant,
        list(debtors),
    )
    # Validated when its record was consumed, stored as its JSON dump: read back without validating
    # again (validating a time zone lists the whole time zone database, for every debtor).
    return {r["debtor_id"]: _profile(r["profile"]) for r in rows}


_PROFILE_FIELDS = frozenset(DebtorProfile.model_fields)


def _profile(raw: str) -> DebtorProfile:
    """A stored profile (a validated profile's JSON dump) as the model, without validating it again;
    one stored without every field (by an older version) is validated, which fills in defaults."""
    values = orjson.loads(raw)
    if values.keys() >= _PROFILE_FIELDS:
        return DebtorProfile.model_construct(**values)
    return DebtorProfile.model_validate(values)


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


async def _applied_policies(
    session: AsyncSession, tenants: Iterable[str], versions: dict[str, list[PolicyPublished]]
) -> dict[str, int]:
    """The policy version each tenant's open cases were last planned under on a business day (0:
    none). A row without one (written before it was kept) counts the version in force on its date."""
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    t = store.business_dates
    rows = await session.execute(
        select(t.c.tenant_id, t.c.business_date, t.c.policy_version).where(t.c.tenant_id.in_(wanted))
    )
    applied: dict[str, int] = {}
    for row in rows:
        if row.policy_version is not None:
            applied[row.tenant_id] = row.policy_version
            continue
        in_force = policy_in_force(versions.get(row.tenant_id, []), row.business_date)
        applied[row.tenant_id] = in_force.version if in_force is not None else 0
    return applied


async def _store_applied_policies(session: AsyncSession, applied: dict[str, int]) -> None:
    """Keep the version each tenant's business day was decided under (only the batch with its clock
    record writes it, so a batch of facts on another member never sets it back)."""
    t = store.business_dates
    for tenant, version in sorted(applied.items()):
        await session.execute(update(t).where(t.c.tenant_id == tenant).values(policy_version=version))


async def _add_performance(session: AsyncSession, tenant: str, added: AgencyPerformance) -> None:
    """Add placements and recoveries to the tenant's agency records (increments, so that a day's
    slices and the batch's transaction each add their own without waiting for one another)."""
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
        for k, r in sorted(
            added.items(), key=lambda kv: (kv[0].agency_id, kv[0].segment, kv[0].currency, kv[0].band)
        )
    ]
    if not rows:
        return
    table = store.agency_performance
    statement = pg_insert(table).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "agency_id", "segment", "currency", "band"],
            set_={
                c: table.c[c] + statement.excluded[c]
                for c in ("placements", "placed_minor", "recovered_minor")
            },
        )
    )
