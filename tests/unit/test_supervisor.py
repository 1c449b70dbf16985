"""Background loops are restarted when they fail, and readiness says so meanwhile."""

from __future__ import annotations

import asyncio

from services.runtime.supervisor import BackgroundTasks, Health


async def test_a_failed_loop_is_restarted_and_not_ready_until_it_runs_again() -> None:
    background = BackgroundTasks(restart_backoff_s=(0.2, 0.2))
    runs: list[int] = []
    seen_not_ready = asyncio.Event()

    async def flaky(stopping: asyncio.Event, health: Health) -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError("lost the connection")
        await stopping.wait()

    background.start("flaky", flaky)
    for _ in range(200):
        if not background.ready()["flaky"]:
            seen_not_ready.set()
        if len(runs) == 3 and background.ready()["flaky"]:
            break
        await asyncio.sleep(0.01)
    assert seen_not_ready.is_set()
    assert len(runs) == 3
    assert background.ready() == {"flaky": True}
    assert background.health["flaky"].restarts == 2
    await background.stop()
    assert background.tasks == []


async def test_a_loop_reports_a_standing_failure_until_it_recovers() -> None:
    background = BackgroundTasks()
    failing = asyncio.Event()
    recovered = asyncio.Event()

    async def relay(stopping: asyncio.Event, health: Health) -> None:
        health.fail("cannot publish")
        failing.set()
        await recovered.wait()
        health.recover()
        await stopping.wait()

    background.start("relay", relay)
    await failing.wait()
    assert background.ready() == {"relay": False}
    recovered.set()
    await asyncio.sleep(0)
    assert background.ready() == {"relay": True}
    await background.stop()
