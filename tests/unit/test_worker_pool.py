"""Handing chunks out to worker processes a few at a time."""

import asyncio
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.dunning.store import CaseChanged
from services.runtime.consumer import StaleOffsets, StaleState
from services.runtime.worker_pool import WorkerPool, bounded
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


def write_after(path: str, seconds: float) -> None:
    """In a worker: a chunk that says it began, takes `seconds`, then leaves its mark."""
    Path(f"{path}.began").touch()
    time.sleep(seconds)
    Path(path).write_text("done")


def appears(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_a_cancelled_chunk_is_finished_or_never_started_when_the_cancellation_returns(tmp_path: Path) -> None:
    # A batch that fails cancels its other chunks and is read again: no chunk of the failed attempt
    # may still be under way then, or it commits after the next attempt read the same rows.
    started, queued = tmp_path / "started", tmp_path / "queued"

    async def cancel_both() -> None:
        pool = WorkerPool(1)
        pool.start()
        try:
            first = asyncio.create_task(pool.run(write_after, str(started), 1.0))
            second = asyncio.create_task(pool.run(write_after, str(queued), 0.0))
            await asyncio.to_thread(appears, Path(f"{started}.began"))  # once the worker has started
            first.cancel()
            second.cancel()
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert started.exists(), "the chunk under way was finished before the cancellation returned"
            queued_at_return = queued.exists()
            await asyncio.sleep(0.5)
            assert queued.exists() == queued_at_return, "the queued chunk ran after the cancellation returned"
        finally:
            pool.close()

    asyncio.run(cancel_both())


def test_a_case_changed_in_a_worker_reaches_the_consumer_as_itself() -> None:
    # Raised in a worker process it crosses a pipe; a copy that cannot be rebuilt would break the
    # pool instead of having the batch read again.
    raised = CaseChanged([("acme", "D-1/EUR"), ("acme", "D-2/EUR")])
    copied = pickle.loads(pickle.dumps(raised))
    assert isinstance(copied, CaseChanged) and isinstance(copied, StaleOffsets)
    assert copied.cases == raised.cases and str(copied) == str(raised)


def _collector_state() -> tuple[tuple[int, int, int], int]:
    import gc

    return gc.get_threshold(), gc.get_freeze_count()


def test_workers_collect_garbage_as_a_service_process_does() -> None:
    # A business day's worker decodes thousands of cases a chunk: it sets what it imported aside
    # from the collector and collects the young generation every 100,000 allocations, not every 700.
    from services.runtime import collector

    async def run() -> tuple[tuple[int, int, int], int]:
        pool = WorkerPool(1)
        pool.start(_collector_state)
        try:
            await pool.ready()
            return await pool.run(_collector_state)
        finally:
            pool.close()

    threshold, frozen = asyncio.run(run())
    expected = (
        collector.YOUNG_COLLECTION_EVERY,
        collector.MIDDLE_COLLECTION_EVERY,
        collector.FULL_COLLECTION_EVERY,
    )
    assert threshold == expected
    assert frozen > 10_000  # the modules the worker imported, at least
