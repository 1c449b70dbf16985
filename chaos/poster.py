"""The ERP's side of a fault run: a poster that posts batches of events over HTTP and retries each
batch until it is answered 202, and a readiness probe.

"Accepted" here is what the ERP sees: an event id the ledger answered 202 for (`accepted` or
`duplicate`). A 5xx, a timeout or a broken connection accepted nothing, and the poster posts the
same batch again."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.processes import now

Event = dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    started: float
    ended: float
    url: str
    outcome: str
    """The HTTP status, or the name of the transport error."""


@dataclass
class Poster:
    """Posts batches to the ledgers (round robin over `urls`, `concurrency` batches in flight) until
    `stop()` or the batches run out; each batch is posted again until it is answered 202. Once
    stopped, a batch in flight is retried for at most `drain_s` more, then counted unconfirmed."""

    urls: Sequence[str]
    api_key: str
    batches: Iterator[list[Event]]
    concurrency: int = 2
    rate: float | None = None
    """Events per second at most (None: as fast as the ledgers answer); may be changed while it runs."""
    request_timeout_s: float = 40.0
    drain_s: float = 30.0
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    conflicts: list[str] = field(default_factory=list)
    unconfirmed: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _turn: int = 0
    _next_at: float = 0.0
    _stopped_at: float | None = None

    def stop(self) -> None:
        if self._stopped_at is None:
            self._stopped_at = now()
        self.stopping.set()

    async def run(self) -> None:
        limits = httpx.Limits(
            max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency
        )
        async with httpx.AsyncClient(timeout=self.request_timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            wait = self._next_at - now()
            if self.rate and wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
                continue
            batch = next(self.batches, None)
            if batch is None:
                return
            self._next_at = max(self._next_at, now()) + (len(batch) / self.rate if self.rate else 0)
            await self._post_until_202(client, batch)

    async def _post_until_202(self, client: httpx.AsyncClient, batch: list[Event]) -> None:
        body = json.dumps(batch).encode()
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        delay = 0.1
        while True:
            self._turn += 1
            url = self.urls[self._turn % len(self.urls)]
            started = now()
            response: httpx.Response | None = None
            try:
                response = await client.post(f"{url}/v1/events", content=body, headers=headers)
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            self.attempts.append(Attempt(started, now(), url, outcome))
            if response is not None and response.status_code == 202:
                for result in response.json()["results"]:
                    self.statuses[result["status"]] += 1
                    if result["status"] == "conflict":
                        self.conflicts.append(result["id"])
                    else:
                        self.acknowledged.add(result["id"])
                return
            if response is not None and 400 <= response.status_code < 500:
                raise AssertionError(
                    f"POST /v1/events answered {response.status_code}: {response.text[:500]}"
                )
            if self._stopped_at is not None and now() > self._stopped_at + self.drain_s:
                self.unconfirmed.update(e["id"] for e in batch)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def accepted_between(self, start: float, end: float) -> int:
        """POSTs answered 202 that were sent and answered within [start, end]."""
        return sum(1 for a in self.attempts if a.outcome == "202" and a.started >= start and a.ended <= end)

    def first_202_after(self, start: float) -> float | None:
        """When the first POST sent after `start` was answered 202."""
        times = [a.ended for a in self.attempts if a.outcome == "202" and a.started >= start]
        return min(times) if times else None

    def outcomes(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts if start <= a.started <= end)

    async def wait_202_after(self, start: float, timeout_s: float) -> float | None:
        deadline = now() + timeout_s
        while now() < deadline:
            found = self.first_202_after(start)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        return None


# --- readiness ---------------------------------------------------------------------------------


@dataclass
class ReadinessProbe:
    """`GET /readyz` of every ledger every `interval_s`: (time, url, status or error name)."""

    urls: Sequence[str]
    interval_s: float = 0.25
    samples: list[tuple[float, str, str]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=3) as client:
            while not self.stopping.is_set():
                for url in self.urls:
                    try:
                        outcome = str((await client.get(f"{url}/readyz")).status_code)
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    self.samples.append((now(), url, outcome))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.interval_s)

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(outcome for t, _, outcome in self.samples if start <= t <= end)


async def readyz(url: str) -> int | str:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return (await client.get(f"{url}/readyz")).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__


async def wait_ready(url: str, timeout_s: float) -> int | str:
    """`/readyz` until it answers 200 or the time is up; the last answer."""
    deadline = now() + timeout_s
    while True:
        answer = await readyz(url)
        if answer == 200 or now() > deadline:
            return answer
        await asyncio.sleep(0.25)
