"""A service's long-running loops (consumer, outbox relay, …), kept running.

A loop that ends on an error is logged and started again after a back-off; it never takes the
others down with it, and the process never goes on serving as if all were well: `ready()` is false
from the moment a loop fails until it runs again, and a loop may report itself not ready (a relay
that cannot publish, a consumer waiting out an outage) through the `Health` it is given."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Health:
    """What one loop says of itself: running, and not stuck on a failure."""

    running: bool = False
    failing: str | None = None
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return self.running and self.failing is None

    def fail(self, reason: str) -> None:
        self.failing = reason

    def recover(self) -> None:
        self.failing = None


Loop = Callable[[asyncio.Event, Health], Awaitable[None]]


@dataclass
class BackgroundTasks:
    """Long-running loops of a service, each restarted with back-off when it ends on an error."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    health: dict[str, Health] = field(default_factory=dict)
    restart_backoff_s: tuple[float, float] = (0.5, 30.0)

    def start(self, name: str, loop: Loop) -> None:
        self.health[name] = Health()
        task = asyncio.create_task(self._supervise(name, loop), name=name)
        self.tasks.append(task)

    async def _supervise(self, name: str, loop: Loop) -> None:
        health = self.health[name]
        backoff, most = self.restart_backoff_s
        while not self.stopping.is_set():
            health.running = True
            try:
                await loop(self.stopping, health)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s stopped on an error; restarting in %.1f s", name, backoff)
                health.fail(f"{type(exc).__name__}: {exc}")
            finally:
                health.running = False
            health.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, most)
            health.recover()

    def ready(self) -> dict[str, bool]:
        return {name: health.ok for name, health in self.health.items()}

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping.set()
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout_s) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.tasks.clear()
