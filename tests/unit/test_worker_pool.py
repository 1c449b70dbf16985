"""Handing chunks out to worker processes a few at a time."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.runtime.consumer import StaleState
from services.runtime.worker_pool import bounded
from tests.infra.processes import alive


def test_chunks_run_at_most_so_many_at_a_time_and_the_first_failure_stops_the_rest() -> None:
    async def run(chunks: list[list[str]], limit: int) -> tuple[list[str], int]:
        done: list[str] = []
        live = peak = 0

        async def job(chunk: list[str]) -> None:
            nonlocal live, peak
            live += 1
            peak = max(peak, live)
            try:
                await asyncio.sleep(0.001 * len(chunk))
                if chunk == ["stale"]:
                    raise StaleState("changed since read")
                await asyncio.sleep(0.05 if chunk == ["slow"] else 0)
                done.append(chunk[0])
            finally:
                live -= 1

        await bounded(job, chunks, limit)
        return done, peak

    done, peak = asyncio.run(run([[str(i)] * (1 + i % 3) for i in range(9)], 2))
    assert sorted(done) == [str(i) for i in range(9)] and peak == 2
    with pytest.raises(StaleState):
        asyncio.run(run([["slow"], ["stale"], ["never"]], 2))


def test_workers_exit_when_the_process_that_started_them_is_killed() -> None:
    # A consumer killed with SIGKILL cannot stop its workers: they see it is gone and exit.
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, os, time\n"
            "from services.runtime.worker_pool import WorkerPool\n"
            "pool = WorkerPool(2)\n"
            "pool.start(os.getpid)\n"
            "asyncio.run(pool.ready())\n"
            "print(*pool.pids(), flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert consumer.stdout is not None
        workers = [int(pid) for pid in consumer.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        consumer.kill()
        consumer.wait()
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its consumer"
