"""Handing chunks out to worker processes a few at a time."""

import asyncio

import pytest

from services.runtime.consumer import StaleState
from services.runtime.worker_pool import bounded


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
