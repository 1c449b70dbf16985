"""Whether a process can do its work now, in a shape a dashboard reads.

Ready means: the database answers; where the process runs background loops, the log answers, every
loop runs without a standing failure and the consumer is at most `max_lag` records behind. An
API-only process writes what it accepts to the database alone, so the log and the lag are not its
concern. Every check is bounded by `timeout_s`, and one answer serves every probe for `cache_s`, so
probes cost the database and the broker at most one round trip each per `cache_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.consumer import ConsumerLoop
from services.runtime.log import EventLog
from services.runtime.supervisor import BackgroundTasks

Report = dict[str, Any]


@dataclass
class Readiness:
    sessions: async_sessionmaker[AsyncSession]
    event_log: EventLog
    background: BackgroundTasks
    consumers: Sequence[ConsumerLoop]
    max_lag: int
    timeout_s: float = 2.0
    cache_s: float = 1.0
    _answer: tuple[float, Report] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def report(self) -> Report:
        """{"ready": bool, "checks": {"database": {...}, "log": {...}, "lag": {...}, "loops": {...}}}"""
        async with self._lock:
            if self._answer is not None and time.monotonic() - self._answer[0] < self.cache_s:
                return self._answer[1]
            started = time.monotonic()
            report = await self._measure()
            self._answer = (started, report)
            return report

    async def _measure(self) -> Report:
        loops = self.background.ready()
        if loops:
            database, log, lag = await asyncio.gather(self._database(), self._log(), self._lag())
        else:
            database = await self._database()
            log = {"ok": True, "detail": "not used: this process serves the API only"}
            lag = {"ok": True, "records": 0, "threshold": self.max_lag, "groups": {}, "detail": log["detail"]}
        failing = {name: h.failing or "not running" for name, h in self.background.health.items() if not h.ok}
        checks = {
            "database": database,
            "log": log,
            "lag": lag,
            "loops": {
                "ok": not failing,
                "detail": "; ".join(f"{name}: {why}" for name, why in failing.items()) or "running",
                "running": loops,
            },
        }
        return {"ready": all(check["ok"] for check in checks.values()), "checks": checks}

    async def _bounded(self, work: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(work, self.timeout_s)

    async def _database(self) -> Report:
        try:
            async with self.sessions() as session:
                await self._bounded(session.execute(text("SELECT 1")))
        except Exception as exc:
            return {"ok": False, "detail": _why(exc, self.timeout_s)}
        return {"ok": True, "detail": "answers"}

    async def _log(self) -> Report:
        try:
            healthy = await self._bounded(self.event_log.healthy())
        except Exception as exc:
            return {"ok": False, "detail": _why(exc, self.timeout_s)}
        detail = "answers" if healthy else "cannot be reached, or its last publish failed"
        return {"ok": bool(healthy), "detail": detail}

    async def _lag(self) -> Report:
        groups: dict[str, int] = {}
        try:
            for consumer in self.consumers:
                groups[consumer.group_id] = await self._bounded(consumer.lag())
        except Exception as exc:
            return {
                "ok": False,
                "records": sum(groups.values()),
                "threshold": self.max_lag,
                "groups": groups,
                "detail": f"lag unknown: {_why(exc, self.timeout_s)}",
            }
        records = sum(groups.values())
        ok = records <= self.max_lag
        detail = f"{records} records behind" + ("" if ok else f", more than {self.max_lag}")
        return {"ok": ok, "records": records, "threshold": self.max_lag, "groups": groups, "detail": detail}


def _why(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"{type(exc).__name__}: {exc}"[:300]
