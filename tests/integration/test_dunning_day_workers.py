"""A business day decided in worker processes decides what the consumer's own process decides: the
same cases, commands and timeline, each slice in a transaction of its own; and workers killed
between days fail that day's batch once, after which new workers decide it as if nothing happened."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from sqlalchemy import text

from contracts.policy import POLICY_PUBLISHED
from contracts.registry import decode_event
from services.dunning import projection as dunning_projection
from services.dunning.projection import DunningProjection, warm_worker
from services.runtime.consumer import Delivered
from services.runtime.database import make_engine, make_sessions
from services.runtime.migrations import upgrade
from tests.infra.processes import alive
from tests.integration.test_dunning_case_cache import apply_batch, day_started, delivered, record_of
from tests.unit.dunning_world import POLICY, Books

pytestmark = pytest.mark.integration

DEBTORS = [f"D-{n:02}" for n in range(14)]


TENANTS = ("acme", "globex")


def history() -> list[list[Delivered]]:
    """The batches, for two tenants at once: the policy and a first day, fourteen debtors' invoices
    due on different days, then two business days (each batch one day for both tenants, whose
    slices are decided side by side)."""
    facts = []
    for tenant in TENANTS:
        for n, debtor in enumerate(DEBTORS):
            books = Books()
            due = f"2026-01-{10 + n % 5:02}"
            facts.append(delivered(books.issue("I1", 10_000 * (n + 1), due=due), debtor, tenant))
            if n % 3 == 0:
                facts.append(delivered(books.issue("I2", 7_000, due="2026-01-20"), debtor, tenant))
    return [
        [record_of("collections.policies.v1", POLICY_PUBLISHED, POLICY, None, t) for t in TENANTS]
        + [day_started("2026-01-05", t) for t in TENANTS],
        facts,
        [day_started("2026-01-25", t) for t in TENANTS],
        [day_started("2026-02-12", t) for t in TENANTS],
    ]


async def run_days(
    url: str, batches: list[list[Delivered]], workers: int, kill_before_last: bool = False
) -> dict[str, Any]:
    """The batches applied, as the consumer loop does (a failed batch is applied again); with
    `kill_before_last`, the workers are killed before the last day. What the database holds
    afterwards, but for what differs between any two runs (row ids, times)."""
    engine = make_engine(url, 4)
    projection = DunningProjection(workers=workers)
    failed: list[BaseException] = []
    try:
        await upgrade(engine, "dunning")
        sessions = make_sessions(engine)
        for batch in batches[:2]:
            await apply_batch(sessions, projection, batch)
        if workers:
            projection.workers.start(warm_worker)
            await projection.workers.ready()
        for n, batch in enumerate(batches[2:], start=2):
            if kill_before_last and n == len(batches) - 1:
                await kill(projection.workers.pids())
            try:
                await apply_batch(sessions, projection, batch)
            except BrokenProcessPool as broken:
                failed.append(broken)
                await apply_batch(sessions, projection, batch)
        pids = projection.workers.pids()
        async with engine.connect() as connection:
            cases = (
                await connection.execute(
                    text(
                        "SELECT tenant_id, case_id, status, next_action_date, version, state"
                        " FROM dunning.cases ORDER BY tenant_id, case_id"
                    )
                )
            ).all()
            timeline = (
                await connection.execute(
                    text(
                        "SELECT tenant_id, case_id, business_date, kind, event_id, entry"
                        " FROM dunning.timeline ORDER BY tenant_id, event_id"
                    )
                )
            ).all()
            outbox = (await connection.execute(text("SELECT value FROM dunning.outbox"))).scalars().all()
    finally:
        projection.workers.close()
        await engine.dispose()
    events = sorted((e.type, e.id, e.data.model_dump_json()) for e in map(decode_event, outbox))
    return {"cases": cases, "timeline": timeline, "events": events, "pids": pids, "failed": failed}


async def kill(pids: list[int]) -> None:
    """SIGKILL the processes, and wait until they are gone."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not any(alive(pid) for pid in pids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes {pids} outlived SIGKILL")


async def test_slices_decided_in_worker_processes_decide_as_the_consumer_does(
    new_database: Callable[[], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dunning_projection, "DUE_CHUNK", 3)  # five slices a day
    batches = history()
    here = await run_days(await new_database(), batches, workers=0)
    pooled = await run_days(await new_database(), batches, workers=2)

    assert len(pooled["pids"]) == 2 and here["pids"] == []
    commands = [e for e in here["events"] if e[0].startswith("collections.command.")]
    assert len(commands) >= len(TENANTS) * len(DEBTORS), "every debtor was sent something"
    assert {(t, c) for t, c, *_ in here["cases"]} == {(t, f"{d}:EUR") for t in TENANTS for d in DEBTORS}
    assert pooled["cases"] == here["cases"]
    assert pooled["timeline"] == here["timeline"]
    assert pooled["events"] == here["events"]


async def test_workers_killed_fail_the_batch_and_new_ones_decide_it_as_before(
    new_database: Callable[[], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dunning_projection, "DUE_CHUNK", 3)
    batches = history()
    here = await run_days(await new_database(), batches, workers=0)
    killed = await run_days(await new_database(), batches, workers=2, kill_before_last=True)

    assert len(killed["failed"]) == 1, "the day the workers were killed failed once, then went through"
    assert len(killed["pids"]) == 2
    assert killed["cases"] == here["cases"]
    assert killed["timeline"] == here["timeline"]
    assert killed["events"] == here["events"]
