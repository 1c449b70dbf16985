"""The policy what-if's shell: read a tenant's recorded inputs of dunning from the log, from the start of
the topics, and replay them debtor by debtor through `simulation` (pure).

Read-only: the log is read partition by partition (`EventLog.read_partition`: no consumer group, no
stored offset) and nothing is written to a table or a topic. The clock and the policies are small
topics, read whole. The debtor topics (balance facts, contacts, debtor data, scores) share their key
and partition count, so partition i of each holds every record of the same debtors: one partition is
read at a time (the tenant's records of it kept as bytes, grouped by debtor), each debtor is decoded,
replayed and dropped, and only the tallies stay. With `workers` > 1 the partitions are spread over a
process pool, each worker opening the log of the same settings.

What every debtor's replay shares is worked out once per partition: the business days in order and the
version in force on each (`simulation.Calendar`).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from contracts.clock import BusinessDayStarted
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.policy import DunningPolicy, PolicyPublished
from contracts.registry import decode_event
from contracts.scores import ScoreChanged
from contracts.topics import CLOCK, CONTACTS, DEBTORS, POLICIES, RECEIVABLES, SCORES
from services.dunning.domain import CaseInput, fact_of
from services.dunning.simulation import (
    Calendar,
    Day,
    Input,
    Report,
    Window,
    business_days,
    candidate_version,
    interleave_days,
    merge,
    replay_debtor,
    sampled,
)
from services.runtime.collector import settle as settle_collector
from services.runtime.log import EventLog
from services.runtime.process import open_log
from services.runtime.settings import Settings

DEBTOR_TOPICS = (RECEIVABLES.name, CONTACTS.name, DEBTORS.name, SCORES.name)
"""In the order a debtor's records taken at the same moment are applied."""
CASE_INPUTS = CaseInput.__args__


@dataclass(frozen=True)
class History:
    """What every debtor's replay shares: the tenant's policy versions and business days."""

    tenant: str
    versions: list[PolicyPublished]
    days: list[tuple[int, Day]]


Raw = tuple[int, int, int, bytes]
"""(time the log took it, topic index, offset, value) of one record of a debtor."""


async def read_history(log: EventLog, tenant: str) -> History:
    versions: dict[int, PolicyPublished] = {}
    for record in await log.read_all(POLICIES.name):
        event = _decoded(record.value)
        if event is not None and event.tenantid == tenant and isinstance(event.data, PolicyPublished):
            versions.setdefault(event.data.version, event.data)
    days: list[tuple[int, Day]] = []
    for record in await log.read_all(CLOCK.name):
        event = _decoded(record.value)
        if event is not None and event.tenantid == tenant and isinstance(event.data, BusinessDayStarted):
            days.append((record.timestamp_ms, Day(event.data.business_date)))
    return History(tenant, [versions[v] for v in sorted(versions)], days)


async def read_partition(
    log: EventLog, tenant: str, partition: int, sample: float = 1.0
) -> dict[str, list[Raw]]:
    """The tenant's records of one partition of the debtor topics, by debtor key, undecoded; with a
    `sample` below 1, of the sampled debtors only (`simulation.sampled`)."""
    prefix = f"{tenant}:".encode()
    by_debtor: dict[str, list[Raw]] = defaultdict(list)
    index = {topic: n for n, topic in enumerate(DEBTOR_TOPICS)}
    chosen: dict[bytes, bool] = {}
    async for chunk in log.read_partition(DEBTOR_TOPICS, partition):
        for r in chunk:
            if r.key is None or not r.key.startswith(prefix):
                continue
            if sample < 1:
                keep = chosen.get(r.key)
                if keep is None:
                    keep = chosen[r.key] = sampled(tenant, r.key[len(prefix) :].decode(), sample)
                if not keep:
                    continue
            by_debtor[r.key[len(prefix) :].decode()].append(
                (r.timestamp_ms, index[r.topic], r.offset, r.value)
            )
    return by_debtor


def debtor_inputs(records: Sequence[Raw]) -> Iterator[tuple[int, Input]]:
    """A debtor's records decoded, each topic in offset order, the topics merged by the time the log
    took them; repeats of an event id and records dunning would not take are left out."""
    by_topic: dict[int, list[Raw]] = defaultdict(list)
    for raw in records:
        by_topic[raw[1]].append(raw)
    ordered = heapq.merge(
        *(sorted(rs, key=lambda r: r[2]) for rs in by_topic.values()), key=lambda r: (r[0], r[1])
    )
    seen: set[str] = set()
    for taken_ms, _, _, value in ordered:
        event = _decoded(value)
        if event is None or event.id in seen:
            continue
        seen.add(event.id)
        data = event.data
        if isinstance(data, DebtorProfile | ScoreChanged):
            yield taken_ms, data
        elif isinstance(data, CASE_INPUTS):
            yield taken_ms, fact_of(event)


def replay_partition(
    history: History,
    by_debtor: dict[str, list[Raw]],
    candidate: PolicyPublished,
    window: Window,
    sample: float = 1.0,
) -> Report:
    report = _empty(history, candidate, window, sample)
    days = business_days((ms, day.business_date) for ms, day in history.days)
    calendar = Calendar.of(history.versions, candidate)
    for debtor in sorted(by_debtor):
        steps = interleave_days(days, debtor_inputs(by_debtor[debtor]))
        report.add(
            replay_debtor(
                history.tenant, debtor, steps, history.versions, candidate, window, calendar=calendar
            )
        )
    return report


async def simulate(
    log: EventLog,
    tenant: str,
    candidate: DunningPolicy,
    window: Window,
    *,
    workers: int = 1,
    settings: Settings | None = None,
    sample: float = 1.0,
) -> Report:
    """The what-if report of `candidate` over the tenant's recorded history in `window`; with
    `workers` > 1, each worker process opens the log of `settings` itself; with a `sample` below 1,
    estimated from that fraction of the tenant's debtors (`simulation.sampled`), with margins."""
    if not 0 < sample <= 1:
        raise ValueError(f"a sample is a fraction of the debtors in (0, 1], not {sample}")
    history = await read_history(log, tenant)
    published = candidate_version(history.versions, candidate, window.start)
    partitions = range(RECEIVABLES.partitions)
    if workers <= 1 or settings is None:
        reports = []
        for partition in partitions:
            by_debtor = await read_partition(log, tenant, partition, sample)
            # In a thread: a service's event loop (its API, its consumer) goes on meanwhile.
            reports.append(
                await asyncio.to_thread(replay_partition, history, by_debtor, published, window, sample)
            )
        return merge(reports)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=min(workers, len(partitions)), initializer=_worker_started) as pool:
        runs = [
            loop.run_in_executor(
                pool, _replay_in_worker, settings, history, partition, published, window, sample
            )
            for partition in partitions
        ]
        return merge(await asyncio.gather(*runs))


def _worker_started() -> None:
    # A forked worker holds a copy of its parent's objects (a service's caches, a harness's data):
    # its garbage collections need not go through them again and again, nor copy their pages.
    settle_collector()


def _replay_in_worker(
    settings: Settings,
    history: History,
    partition: int,
    candidate: PolicyPublished,
    window: Window,
    sample: float = 1.0,
) -> Report:
    async def run() -> Report:
        async with open_log(settings) as log:
            by_debtor = await read_partition(log, history.tenant, partition, sample)
        return replay_partition(history, by_debtor, candidate, window, sample)

    return asyncio.run(run())


def _empty(history: History, candidate: PolicyPublished, window: Window, sample: float = 1.0) -> Report:
    return Report(
        history.tenant, window, [v.version for v in history.versions], candidate.version, sample=sample
    )


def _decoded(value: bytes) -> Envelope[Any] | None:
    try:
        return decode_event(value)
    except ValueError:
        return None  # a record dunning's consumer would send to the dead-letter topic
