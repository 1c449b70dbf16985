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
the clock record's offset and the business date commit last, with the batch (`decide_slice` says
why this keeps the exactly-once effect). Bulk writes go through the session's asyncpg connection
with one array per column (`unnest`) or COPY: no statement compiled per chunk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts.clock import BusinessDayStarted
from contracts.collections import AgencyOutcome, InputRef
from contracts.journal import DebtorProfile
from contracts.policy import PolicyPublished, policy_in_force
from contracts.scores import ScoreChanged
from contracts.topics import CLOCK, CONTACTS, DEBTORS, POLICIES, RECEIVABLES, SCORES
from services.dunning import store
from services.dunning.agencies import AgencyKey, AgencyPerformance, AgencyRecord, record_recovery
from services.dunning.batch import Batch, decode_case, due_debtors, encode_case, remember
from services.dunning.domain import (
    Case,
    DebtorFacts,
    agency_key,
    decide_debtor,
    fact_of,
    is_due,
)
from services.dunning.domain.debtor import evolve_debtor, opened_case
from services.dunning.domain.record import RESTATED, case_of, fact_line
from services.dunning.kpi_store import write_facts
from services.dunning.kpis import observe
from services.dunning.publishing import publish_decision, publish_events
from services.dunning.record import append_lines
from services.dunning.store import DebtorKey
from services.runtime.committed_cache import CommittedCache
from services.runtime.consumer import Applied, Delivered
from services.runtime.database import driver_connection, make_engine
from services.runtime.json_default import json_default
from services.runtime.outbox import write_outbox
from services.runtime.worker_pool import IN_FLIGHT_PER_WORKER, WorkerPool, bounded

DUE_CHUNK = 2_000
CASE_FACTS = (RECEIVABLES.name, CONTACTS.name)


def _ref(d: Delivered) -> InputRef:
    return InputRef(
        topic=d.record.topic, partition=d.record.partition, offset=d.record.offset, event_id=d.event.id
    )


FEED_LOCK = 0x6172726561727366
"""The advisory lock a transaction holds from its first agency feed row until it ends."""


@dataclass(frozen=True)
class DaySlice:
    """A chunk of a business day's debtors to decide in a transaction of its own (`decide_slice`)."""

    tenant: str
    day: dt.date
    policy: PolicyPublished
    new_version: PolicyPublished | None
    """On the first business day of a policy version, that version (every open case is planned again)."""
    debtors: list[str]
    tick: InputRef
    agencies: AgencyPerformance
    """The tenant's agency records when the day's evaluation began (`_day_start_performance`)."""


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

    def __init__(self, case_cache_size: int = DEFAULT_CASE_CACHE, workers: int = 0) -> None:
        self.cache: CommittedCache[DebtorKey, CachedCases] = CommittedCache(case_cache_size)
        self.workers = WorkerPool(workers)
        """Processes that decide a business day's slices beside this one (size 0: all in this one)."""
        self.batch_committed = self.cache.batch_committed
        self.batch_failed = self.cache.batch_failed
        self.partitions_changed = self.cache.partitions_changed

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        work = Batch(caches=True)
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

        await store.save_policies(session, policies)
        await store.save_debtors(session, profiles)
        await store.save_segments(session, segments)
        work.written.update(profiles)
        tenants = {d.event.tenantid for d in facts} | set(days) | {t for t, _ in proposed}
        today = await store.load_business_dates(session, tenants)
        versions = await store.load_policies(session, tenants)
        applied = await store.load_applied_policies(session, set(days), versions)

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

        # A tenant's slices decided in worker processes run on while the next tenant's day begins
        # (tenants share no case, record or agency row); a tenant's days one after the other.
        in_workers: dict[str, asyncio.Task[None]] = {}
        try:
            for tenant, started in sorted(days.items()):
                for day, tick in sorted(started, key=lambda s: s[0]):
                    if today.get(tenant) is not None and day <= today[tenant]:
                        continue  # a day started before (a repeated clock event) decides nothing new
                    today[tenant] = day
                    policy = policy_in_force(versions.get(tenant, []), day)
                    if policy is None:
                        continue
                    if (earlier := in_workers.pop(tenant, None)) is not None:
                        await earlier
                    # The first business day of a version plans every open case again under it.
                    replan = policy.version != applied.get(tenant, 0)
                    rest = await self._decide_due(session, work, tenant, day, policy, replan, tick)
                    if rest is not None:
                        in_workers[tenant] = asyncio.create_task(rest)
                    applied[tenant] = policy.version
            while in_workers:
                await in_workers.pop(min(in_workers))
        finally:
            for task in in_workers.values():
                task.cancel()
            await asyncio.gather(*in_workers.values(), return_exceptions=True)

        await store.save_business_dates(session, today, tenants)
        await store.save_applied_policies(session, {t: applied.get(t, 0) for t in days})
        await self._save(session, work)
        await self._save_performance(session, work)
        return Applied(messages=work.messages)

    # --- facts ----------------------------------------------------------------------------------

    async def _load_debtors(self, session: AsyncSession, work: Batch, keys: Iterable[DebtorKey]) -> None:
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
                store.LOAD_CASES,
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
                    case = decode_case(row["state"])
                    decoded += 1
                work.cases[key][case.case_id] = case
                remember(work, case, row["version"])
            self.cache.count(hits=len(rows) - decoded, misses=decoded)

    async def _load_tenant_debtors(
        self, session: AsyncSession, work: Batch, tenant: str, debtors: Sequence[str]
    ) -> None:
        """The cases of debtors of one tenant that the batch does not hold yet (by the debtor index)."""
        wanted = [d for d in debtors if (tenant, d) not in work.cases]
        if not wanted:
            return
        connection = await driver_connection(session)
        rows = await connection.fetch(
            f"SELECT state, xmin::text AS version FROM {store.QUALIFIED_CASES}"
            " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
            tenant,
            wanted,
        )
        work.hold(tenant, wanted, ((row["state"], row["version"]) for row in rows))

    def _apply_fact(self, work: Batch, d: Delivered) -> None:
        tenant, debtor = d.event.tenantid, d.event.debtorid or ""
        fact = fact_of(d.event, _ref(d))
        cases = work.cases.setdefault((tenant, debtor), {})
        if (opened := opened_case(tenant, debtor, cases, fact)) is not None:
            cases[opened.case_id] = opened
        line = fact_line(fact, d.event.id, case_of(fact, debtor, cases))
        if line is not None:
            work.record.append((tenant, debtor, line))
        for case, after, events in evolve_debtor(cases, fact):
            observe(work.kpi, case, after, events, fact=fact)
            work.put(after)
            publish_events(work, after, events, RESTATED)
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
        work: Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        replan: bool,
        tick: InputRef,
    ) -> Coroutine[Any, Any, None] | None:
        """Every case of the tenant that is due (`is_due`), chunk by chunk, debtor by debtor: those whose
        next action date has come and, on the first business day of a policy version (`replan`), every
        open case not decided under it, so that it is planned again under this version. Returns what
        is left to await when the chunks go to worker processes: their decisions."""
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
        due = [
            r["debtor_id"]
            for r in await connection.fetch(
                store.REPLANNED_DEBTORS if replan else store.DUE_DEBTORS, tenant, day
            )
        ]
        # Debtors this batch wrote (or gave a profile) are decided in its transaction; every other
        # chunk in a transaction of its own, committed at once (see `decide_slice`).
        mine = [debtor for debtor in due if (tenant, debtor) in work.written]
        for start in range(0, len(mine), DUE_CHUNK):
            chunk = mine[start : start + DUE_CHUNK]
            await self._load_tenant_debtors(session, work, tenant, chunk)
            chunk = due_debtors(work, tenant, chunk, day, new_version)
            await self._decide_debtors(session, work, tenant, day, policy, chunk, tick)
            await self._flush(session, work, feed=False)
        others = [debtor for debtor in due if (tenant, debtor) not in work.written]
        agencies = await self._day_start_performance(session, work, tenant)
        slices = [
            DaySlice(tenant, day, policy, new_version, others[start : start + DUE_CHUNK], tick, agencies)
            for start in range(0, len(others), DUE_CHUNK)
        ]
        if self.workers.size and len(slices) > 1:
            bind = session.bind
            assert isinstance(bind, AsyncEngine), "worker processes connect with the engine's URL"
            database = bind.url.render_as_string(hide_password=False)

            async def in_worker(job: DaySlice) -> None:
                await self.workers.run(_decide_slice_in_worker, database, job)

            return bounded(in_worker, slices, IN_FLIGHT_PER_WORKER * self.workers.size)

        # Each chunk's rows are read while the chunk before it is decided (another connection: the
        # database works while Python decides). They are committed rows no other slice changes.
        def read(job: DaySlice) -> asyncio.Task[store.Chunk]:
            return asyncio.create_task(store.read_chunk(session, tenant, job.debtors))

        reading = read(slices[0]) if slices else None
        try:
            for index, job in enumerate(slices):
                assert reading is not None
                rows = await reading
                reading = None
                if index + 1 < len(slices):
                    reading = read(slices[index + 1])
                    await asyncio.sleep(0)  # let it send its query before deciding starts
                await self.decide_slice(session.bind, job, rows)
        finally:
            if reading is not None:  # a slice failed: the batch fails and the read is not wanted
                reading.cancel()
        return None

    async def _day_start_performance(
        self, session: AsyncSession, work: Batch, tenant: str
    ) -> AgencyPerformance:
        """The tenant's agency records as a business day's evaluation begins: the stored ones (every
        slice committed so far included) with what this batch added and has not written yet. Each of
        the day's slices chooses agencies from these and its own placements, so a slice decides the
        same in any process and in any order."""
        work.performance.pop(tenant, None)
        stored = await self._performance(session, work, tenant)
        added = work.performance_added.get(tenant, {})
        combined = {
            key: AgencyRecord(
                record.placements + extra.placements,
                record.placed_minor + extra.placed_minor,
                record.recovered_minor + extra.recovered_minor,
            )
            for key in stored.keys() | added.keys()
            for record, extra in [(stored.get(key, AgencyRecord()), added.get(key, AgencyRecord()))]
        }
        work.performance[tenant] = combined
        return combined

    async def decide_slice(self, bind: Any, job: DaySlice, read: store.Chunk) -> None:
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
        async with AsyncSession(bind, expire_on_commit=False) as own, own.begin():
            part = Batch(performance={job.tenant: dict(job.agencies)})
            part.hold(job.tenant, job.debtors, read.rows)
            due = due_debtors(part, job.tenant, job.debtors, job.day, job.new_version)
            await self._decide_debtors(
                own, part, job.tenant, job.day, job.policy, due, job.tick, read.profiles
            )
            await self._flush(own, part)
            await self._save_performance(own, part)

    async def _decide_debtors(
        self,
        session: AsyncSession,
        work: Batch,
        tenant: str,
        day: dt.date,
        policy: PolicyPublished,
        debtors: Sequence[str],
        tick: InputRef | None,
        profiles: dict[str, DebtorProfile] | None = None,
    ) -> None:
        if profiles is None:
            profiles = await store.load_profiles(session, tenant, debtors)
        segments = await store.load_segments(session, tenant, debtors)
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
                publish_decision(work, decision, day, tick)

    async def _performance(self, session: AsyncSession, work: Batch, tenant: str) -> AgencyPerformance:
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

    # --- writes ---------------------------------------------------------------------------------

    async def _flush(self, session: AsyncSession, work: Batch, *, feed: bool = True) -> None:
        """Write what the batch decided so far (cases, timeline, feed, outbox) and drop the cases; the
        agency records are written at the end (`_save_performance`). The batch's own feed rows wait
        for its end too (`feed=False`): agencies read the feed by position, so no row may commit after
        a row with a later position, as it would if the batch wrote it before a day's slices."""
        await self._save(session, work, feed=feed)
        await write_outbox(session, store.runtime, work.messages)
        work.messages.clear()
        work.cases.clear()

    async def _save(self, session: AsyncSession, work: Batch, *, feed: bool = True) -> None:
        connection = await driver_connection(session)
        await _write_cases(connection, work)
        await write_facts(connection, work.kpi)
        work.written.update((tenant, debtor) for tenant, debtor, _ in work.changed)
        work.changed.clear()
        # The debtors whose chain heads this transaction locks are decided in it, never in a day's
        # slice (which would wait for the lock until the batch's end, which waits for the slice).
        work.written.update(await append_lines(connection, work.record, dt.datetime.now(dt.UTC)))
        work.record.clear()
        self._stage(work)
        if work.timeline:
            await connection.copy_records_to_table(
                store.timeline.name,
                schema_name=store.SCHEMA,
                columns=store.TIMELINE_COLUMNS,
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
            # Agencies read the feed by position: rows are numbered and committed one transaction
            # at a time (until this one ends), so no row commits after a row with a later position.
            await connection.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
            await connection.copy_records_to_table(
                store.agency_feed.name,
                schema_name=store.SCHEMA,
                columns=store.FEED_COLUMNS,
                records=[
                    (r["tenant_id"], r["agency_id"], r["case_id"], r["kind"], _json(r["entry"]))
                    for r in work.feed
                ],
            )
            work.feed.clear()

    def _stage(self, work: Batch) -> None:
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

    async def _save_performance(self, session: AsyncSession, work: Batch) -> None:
        for tenant, added in sorted(work.performance_added.items()):
            await store.add_performance(session, tenant, added)
        work.performance_added.clear()


def _json(value: Any) -> str:
    return orjson.dumps(value, default=json_default).decode()


async def _write_cases(connection: Any, work: Batch) -> None:
    """Write the batch's changed cases, each on the condition that its row is as the batch read it;
    raise `CaseChanged` (the whole batch is then read again) when one is not."""
    changed = sorted(work.changed)
    if not changed:
        return
    columns: list[list[Any]] = [[] for _ in range(len(store.CASE_COLUMNS) + 1)]
    for tenant, debtor, case_id in changed:
        case = work.cases[(tenant, debtor)][case_id]
        row = (*store.case_row(case, encode_case(case)), work.versions.get((tenant, case_id)))
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    rows = await connection.fetch(store.WRITE_CASES, *columns)
    written = {(r["tenant_id"], r["case_id"]): r["version"] for r in rows}
    lost = [(tenant, case_id) for tenant, _, case_id in changed if (tenant, case_id) not in written]
    if lost:
        raise store.CaseChanged(lost)
    work.versions.update(written)


_worker: tuple[str, asyncio.AbstractEventLoop, AsyncEngine, DunningProjection] | None = None
"""In a worker process: the database it decides on, its event loop, its engine and projection."""


def warm_worker() -> None:
    """Nothing: a worker process that ran it has imported the decider."""


def _decide_slice_in_worker(database: str, job: DaySlice) -> None:
    """A business day's slice read, decided and committed in a worker process, on its own
    connection: both cores decide while the consumer hands out slices."""
    global _worker
    if _worker is None or _worker[0] != database:
        loop = asyncio.new_event_loop()
        _worker = (database, loop, make_engine(database, pool_size=2), DunningProjection(case_cache_size=0))
    _, loop, engine, projection = _worker
    loop.run_until_complete(_read_and_decide(engine, projection, job))


async def _read_and_decide(engine: AsyncEngine, projection: DunningProjection, job: DaySlice) -> None:
    async with AsyncSession(engine) as session:
        read = await store.read_chunk(session, job.tenant, job.debtors)
    await projection.decide_slice(engine, job, read)
