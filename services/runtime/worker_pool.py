"""Worker processes beside a consumer, for work that is independent chunk by chunk (a business day's
debtors), and handing chunks out to them a few at a time.

Workers are spawned, not forked: a fork would copy the consumer's event loop, connections and
threads. Each worker imports what it runs on its first task (`warm` starts that at once). A worker
that dies breaks the pool: the chunk's caller sees `BrokenProcessPool`, its batch fails and is read
again, and the next call starts new workers. A worker whose consumer is gone exits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from services.runtime.collector import settle as settle_collector

T = TypeVar("T")
R = TypeVar("R")

PARENT_CHECK_S = 1.0
"""How often a worker looks whether the process that started it is still there."""
IN_FLIGHT_PER_WORKER = 2
"""Chunks handed to each worker process at once: one under way, one waiting."""


class WorkerPool:
    """`size` worker processes, started on first use or by `start`; none when `size` is 0."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future[None]] = []

    def start(self, warm: Callable[[], object] | None = None) -> None:
        """Start the workers now (and run `warm` in each, to import what they run)."""
        if self.size and self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
            self._warming = [self._pool.submit(_warm, warm) for _ in range(self.size)] if warm else []

    async def ready(self) -> None:
        """Until the workers `start` started have run `warm`."""
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._warming))

    def pids(self) -> list[int]:
        """The worker processes' ids (none before they are started)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return [int(pid) for pid in processes]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    async def run(self, function: Callable[..., R], *args: Any) -> R:
        """`function(*args)` in a worker process (a module-level function; its arguments pickled).

        Cancelled, it returns only once the worker is done with the call (or never started it): a
        chunk still under way after its batch failed could commit after the batch's next attempt
        read the same rows, and fail that attempt too."""
        self.start()
        pool = self._pool
        assert pool is not None
        try:
            future = pool.submit(function, *args)
            wrapped = asyncio.wrap_future(future)
            return await asyncio.shield(wrapped)
        except asyncio.CancelledError:
            future.cancel()  # one not handed to a worker yet never starts
            await asyncio.wait([wrapped])
            if not wrapped.cancelled():
                wrapped.exception()  # seen: what is raised is the cancellation
            raise
        except BrokenProcessPool:
            if self._pool is pool:  # a worker died: the next call starts new ones
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise


def _worker_started(parent: int) -> None:
    _exit_with_parent(parent)
    settle_collector()


def _warm(warm: Callable[[], object]) -> None:
    warm()
    settle_collector()  # what `warm` imported is set aside from the collections too


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit once the process that started it is gone. A consumer killed with SIGKILL
    cannot stop its workers, and an idle worker would wait for work forever; one in the middle of a
    chunk is killed too, and the chunk's transaction rolls back."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


async def bounded(job: Callable[[T], Coroutine[Any, Any, None]], items: Iterable[T], limit: int) -> None:
    """`job` on every item, at most `limit` at a time; the first failure cancels the rest and is
    raised."""
    running: set[asyncio.Task[None]] = set()

    async def settle(until: int) -> None:
        nonlocal running
        while len(running) > until:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()

    try:
        for item in items:
            await settle(limit - 1)
            running.add(asyncio.create_task(job(item)))
        await settle(0)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
