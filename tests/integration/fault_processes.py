"""A harness for fault tests with real processes: `arrears serve ledger` subprocesses that a test starts,
stops, kills with SIGKILL and restarts on the same port; a poster that posts invoices over HTTP and
retries each batch until it is answered 202; a readiness probe; and the check of what the ledger
applied, through its HTTP API (statements, aging) and, for the details, its tables.

"Accepted" here is what the ERP sees: an event id the ledger answered 202 for (`accepted` or
`duplicate`). A 5xx, a timeout or a broken connection accepted nothing, and the poster posts the
same batch again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from contracts.topics import CLOCK, DEBTORS, JOURNAL, Topic, catalogue
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.kafka_admin import ensure_topics
from tests.infra.kafka_broker import KAFKA_SH, KafkaBroker, _env, free_ports
from tests.integration.events import envelope, invoice

REPO = Path(__file__).resolve().parents[2]
LEDGER_GROUP = "ledger"
LEDGER_TOPICS: tuple[Topic, ...] = (JOURNAL, DEBTORS, CLOCK)
Event = dict[str, Any]


def now() -> float:
    return time.monotonic()


class Steps:
    """A test's timeline, printed as it goes (pytest shows it with a failure) and kept for messages."""

    def __init__(self) -> None:
        self.start = now()
        self.lines: list[str] = []

    def __call__(self, what: str) -> None:
        line = f"+{now() - self.start:5.1f} s {what}"
        self.lines.append(line)
        print(line, flush=True)

    def __str__(self) -> str:
        return "timeline:\n  " + "\n  ".join(self.lines)


def arrears_command() -> list[str]:
    """The venv's `arrears` script next to this interpreter (never a bare python3 from the PATH)."""
    script = Path(sys.executable).parent / "arrears"
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]


# --- processes -------------------------------------------------------------------------------------


class LedgerProcess:
    """One `arrears serve ledger`, always on the same port, its output appended to a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        (self.port,) = free_ports(1)
        self.name = name
        self.env = {**env, "ARREARS_HTTP_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*arrears_command(), "serve", "ledger"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def healthy(self, timeout_s: float = 45.0) -> None:
        """Wait until `/healthz` answers 200."""
        deadline = now() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise RuntimeError(
                        f"{self.name} exited ({code}) before it was healthy:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                if now() > deadline:
                    raise TimeoutError(f"{self.name} not healthy in {timeout_s:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, by the process's own pid."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills += 1
        process.wait(30)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (uvicorn shuts down, the consumer leaves its group), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except FileNotFoundError:
            return 0


class Ledgers:
    """`count` ledger processes on one database and one broker (one consumer group).

    Use as `async with Ledgers(...) as ledgers:`; leaving the block stops every process, whatever
    happened."""

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        log_dir: Path,
        count: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "ARREARS_DATABASE_URL": database_url,
            "ARREARS_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "ARREARS_CONSUMER_FETCH_TIMEOUT_MS": "50",
            "ARREARS_OUTBOX_POLL_MS": "20",
            "ARREARS_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.database_url = database_url
        self.bootstrap_servers = bootstrap_servers
        self.processes = [LedgerProcess(f"ledger-{i}", self.env, log_dir) for i in range(count)]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    async def create_key(self, tenant: str) -> str:
        """`arrears keys create --tenant T` in the processes' environment (it migrates first)."""
        process = await asyncio.create_subprocess_exec(
            *arrears_command(),
            "keys",
            "create",
            "--tenant",
            tenant,
            "--name",
            "fault-test",
            env=self.env,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
        keys = [line for line in out.decode().splitlines() if line.startswith("ark_")]
        if process.returncode != 0 or not keys:
            raise RuntimeError(
                f"arrears keys create failed ({process.returncode}):\n{out.decode()}{err.decode()}"
            )
        return keys[-1]

    async def start(self) -> None:
        for p in self.processes:
            p.start()
        await asyncio.gather(*(p.healthy() for p in self.processes))

    def kill(self, index: int = 0) -> None:
        self.processes[index].kill()

    async def restart(self, index: int = 0) -> None:
        self.processes[index].start()
        await self.processes[index].healthy()

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def log_count(self, needle: str) -> int:
        return sum(p.log_count(needle) for p in self.processes)

    async def __aenter__(self) -> Ledgers:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.to_thread(self.stop)


# --- infrastructure faults ---------------------------------------------------------------------


async def reset_topics(bootstrap_servers: str, timeout_s: float = 60.0) -> None:
    """Delete every topic of the catalogue and create it again, empty: a test's ledgers, on a fresh
    database, then do not replay what the module's earlier tests posted."""
    names = [name for name, _, _ in catalogue()]
    deadline = now() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if existing & set(names):
            await admin.delete_topics([n for n in names if n in existing], timeout_ms=30_000)
        while set(await admin.list_topics()) & set(names):
            if now() > deadline:
                raise TimeoutError("the topics were not deleted")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    while True:
        try:
            await ensure_topics(bootstrap_servers, catalogue())
            return
        except KafkaError:
            if now() > deadline:
                raise
            await asyncio.sleep(0.5)


def kafka_sh(broker: KafkaBroker, command: str, timeout_s: float = 120) -> None:
    """`deploy/local/kafka.sh stop|start` on the broker's data dir and ports (blocking: use a thread)."""
    env = {**_env(broker.data_dir, broker.port, broker.controller_port), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(KAFKA_SH), command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh {command} failed:\n{result.stdout}")


async def create_database(server_url: str) -> str:
    """A fresh database on the server of `server_url` (SQLAlchemy form); returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(sqlalchemy_to_libpq(server_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceSpec:
    event_id: str
    debtor: str
    invoice_id: str
    amount: int
    currency: str


class InvoiceBook:
    """Invoices with unique ids and distinct amounts over `debtors` debtors, remembered by event id."""

    FIRST_ISSUE = dt.date(2026, 1, 1)
    AS_OF = dt.date(2026, 12, 31)
    """Past every due date: every invoice is in the aging and on its statement."""

    def __init__(self, tenant: str, debtors: int = 200, currencies: Sequence[str] = ("EUR",)) -> None:
        self.tenant = tenant
        self.debtor_count = debtors
        self.currencies = tuple(currencies)
        self.run = uuid.uuid4().hex[:6]
        self.invoices: dict[str, InvoiceSpec] = {}

    def debtor(self, n: int) -> str:
        return f"D{n % self.debtor_count:04d}"

    @property
    def debtors(self) -> list[str]:
        return sorted({spec.debtor for spec in self.invoices.values()})

    def invoice(self, debtor: str | None = None) -> Event:
        n = len(self.invoices)
        debtor = debtor or self.debtor(n)
        number = f"{self.run}-{n:07d}"
        issued = self.FIRST_ISSUE + dt.timedelta(days=n % 150)
        amount = 100_000 + n  # distinct: a total tells which invoices it holds
        currency = self.currencies[(n // self.debtor_count) % len(self.currencies)]
        event = invoice(
            self.tenant,
            debtor,
            number,
            issued.isoformat(),
            (issued + dt.timedelta(days=30)).isoformat(),
            amount,
            currency,
        )
        self.invoices[event["id"]] = InvoiceSpec(event["id"], debtor, number, amount, currency)
        return event

    def batches(self, size: int, limit: int) -> Iterator[list[Event]]:
        """Batches of `size` new invoices, at most `limit` invoices in all."""
        made = 0
        while made < limit:
            count = min(size, limit - made)
            made += count
            yield [self.invoice() for _ in range(count)]


def debtor_event(tenant: str, debtor: str, event_id: str, name: str, registered: bool) -> Event:
    kind = "ar.debtor.registered.v1" if registered else "ar.debtor.updated.v1"
    return envelope(kind, tenant, debtor, event_id, {"name": name, "email": f"{debtor.lower()}@example.com"})


# --- the poster ------------------------------------------------------------------------------------


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


# --- catching up ---------------------------------------------------------------------------------


async def ledger_backlog(database_url: str, bootstrap_servers: str) -> tuple[int, int]:
    """(rows waiting in the ledger's outbox, records in the ledger's topics beyond the offsets its
    database has committed). The outbox is read first: what it held before is in the log by the time
    the offsets are compared."""
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=5)
    try:
        outbox = int(await connection.fetchval("SELECT count(*) FROM ledger.outbox"))
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
        await probe.start()
        try:
            partitions = [TopicPartition(t.name, p) for t in LEDGER_TOPICS for p in range(t.partitions)]
            ends = await probe.end_offsets(partitions)
        finally:
            await probe.stop()
        rows = await connection.fetch(
            "SELECT topic, partition, next_offset FROM ledger.consumer_offsets WHERE group_id = $1",
            LEDGER_GROUP,
        )
    finally:
        await connection.close()
    committed = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    lag = sum(max(0, end - committed.get((tp.topic, tp.partition), 0)) for tp, end in ends.items())
    return outbox, lag


async def wait_caught_up(database_url: str, bootstrap_servers: str, timeout_s: float) -> int:
    """Wait until the ledger's outbox is empty and its consumer group has applied everything in its
    topics, twice in a row; the backlog left (outbox rows + records; 0: caught up; -1: could not be
    measured)."""
    deadline = now() + timeout_s
    quiet = 0
    while True:
        try:
            outbox, lag = await asyncio.wait_for(ledger_backlog(database_url, bootstrap_servers), 15)
            backlog = outbox + lag
        except Exception:
            backlog = -1
        quiet = quiet + 1 if backlog == 0 else 0
        if quiet == 2 or (backlog != 0 and now() > deadline):
            return backlog
        await asyncio.sleep(0.25)


# --- what was applied ------------------------------------------------------------------------------


@dataclass
class Findings:
    """What the ledger shows for the invoices the poster got a 202 for."""

    acknowledged: int
    lost: list[str]
    """Invoice ids answered 202 that no statement lists."""
    lost_claimed: int
    """Of those, how many the ledger had claimed (`ingested_events`): accepted, then never applied."""
    lost_in_log: int
    """Of those, how many are in the journal topic: published, then never applied (-1: not looked)."""
    wrong: list[str]
    """Listed, but with another debtor, amount, outstanding amount or currency."""
    unconfirmed: int
    unconfirmed_applied: int
    phantoms: list[str]
    """Listed invoices of this run that were never posted, or listed twice."""
    movements: dict[str, int]
    """Invoice id -> balance movements, for the invoices that do not have exactly one."""
    expected_minor: dict[str, int]
    statements_minor: dict[str, int]
    aging_minor: dict[str, int]
    lag: int
    """Outbox rows and records the ledger had not applied when it was checked (-1: unknown)."""
    statuses: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    shown: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)
    """Each debtor's statement as the API answered it."""

    def problems(self) -> list[str]:
        found = []
        if self.lag != 0:
            found.append(f"the ledger did not catch up: {self.lag} outbox rows and records not applied")
        if self.lost:
            found.append(
                f"lost {len(self.lost)} of {self.acknowledged} accepted events ({self.lost_claimed} of"
                f" them claimed as ingested, {self.lost_in_log} in the journal topic): {self.lost[:10]}"
            )
        if self.wrong:
            found.append(f"{len(self.wrong)} invoices on a statement with wrong figures: {self.wrong[:10]}")
        if self.phantoms:
            found.append(
                f"{len(self.phantoms)} invoices listed that were not posted once: {self.phantoms[:10]}"
            )
        duplicated = {i: n for i, n in self.movements.items() if n > 1}
        if duplicated:
            found.append(
                f"{len(duplicated)} invoices applied more than once (opening movements):"
                f" {sorted(duplicated.items())[:10]}"
            )
        if self.aging_minor != self.expected_minor:
            found.append(
                f"aging per currency {self.aging_minor} != accepted invoices {self.expected_minor}"
                f" (difference {_difference(self.aging_minor, self.expected_minor)})"
            )
        if self.statements_minor != self.aging_minor:
            found.append(
                f"statement balances per currency {self.statements_minor} != aging {self.aging_minor}"
                f" (difference {_difference(self.statements_minor, self.aging_minor)})"
            )
        if self.conflicts:
            found.append(f"{self.conflicts} events answered conflict")
        return found

    def summary(self) -> str:
        return (
            f"{self.acknowledged} invoices answered 202 ({dict(self.statuses)}), {len(self.lost)} lost,"
            f" {sum(1 for n in self.movements.values() if n > 1)} duplicated, {self.unconfirmed} never"
            f" answered 202 ({self.unconfirmed_applied} of them applied), backlog {self.lag}"
        )


def _difference(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {c: left.get(c, 0) - right.get(c, 0) for c in sorted(left.keys() | right.keys())}


async def statements(
    urls: Sequence[str], api_key: str, debtors: Iterable[str], as_of: dt.date
) -> dict[str, dict[str, Any] | None]:
    """Each debtor's statement through the API, the requests spread over the ledgers (None: the
    ledger knows no such debtor)."""
    gate = asyncio.Semaphore(8 * len(urls))
    found: dict[str, dict[str, Any] | None] = {}
    async with httpx.AsyncClient(headers={"X-API-Key": api_key}, timeout=60) as client:

        async def one(n: int, debtor: str) -> None:
            url = f"{urls[n % len(urls)]}/v1/debtors/{debtor}/statement"
            async with gate:
                response = await client.get(url, params={"as_of": str(as_of)})
            if response.status_code == 404:
                found[debtor] = None
                return
            response.raise_for_status()
            found[debtor] = response.json()

        await asyncio.gather(*(one(n, d) for n, d in enumerate(debtors)))
    return found


async def aging(url: str, api_key: str, as_of: dt.date) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as client:
        response = await client.get("/v1/aging", params={"as_of": str(as_of)})
    response.raise_for_status()
    return {c: int(v["total_minor"]) for c, v in response.json()["currencies"].items()}


async def events_in_log(
    bootstrap_servers: str, topic: Topic, event_ids: set[str], timeout_s: float = 30
) -> set[str]:
    """Which of the event ids are in the topic (read from the beginning)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    found: set[str] = set()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        deadline = now() + timeout_s
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]] and now() < deadline:
            for records in (await reader.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    event_id = json.loads(record.value).get("id")
                    if event_id in event_ids:
                        found.add(event_id)
    finally:
        await reader.stop()
    return found


async def check_applied(
    urls: Sequence[str],
    api_key: str,
    book: InvoiceBook,
    poster: Poster,
    database_url: str,
    bootstrap_servers: str,
    lag: int,
) -> Findings:
    """Every invoice the poster got a 202 for is on its debtor's statement once, with its amount
    open, and the aging per currency is exactly those invoices (plus any never answered 202 that
    were applied all the same)."""
    shown = await statements(urls, api_key, book.debtors, book.AS_OF)
    listed: dict[str, tuple[str, dict[str, Any]]] = {}
    phantoms: list[str] = []
    statements_minor: Counter[str] = Counter()
    for debtor, statement in shown.items():
        if statement is None:
            continue
        for item in statement["open_items"]:
            if item["invoice_id"] in listed:
                phantoms.append(item["invoice_id"])
            listed[item["invoice_id"]] = (debtor, item)
        for balance in statement["currencies"]:
            statements_minor[balance["currency"]] += balance["balance"]

    by_invoice = {spec.invoice_id: spec for spec in book.invoices.values()}
    acknowledged = [book.invoices[i] for i in poster.acknowledged if i in book.invoices]
    lost, wrong = [], []
    expected: Counter[str] = Counter()
    for spec in acknowledged:
        expected[spec.currency] += spec.amount
        if spec.invoice_id not in listed:
            lost.append(spec.invoice_id)
            continue
        debtor, item = listed[spec.invoice_id]
        if (debtor, item["amount"], item["outstanding"], item["currency"]) != (
            spec.debtor,
            spec.amount,
            spec.amount,
            spec.currency,
        ):
            wrong.append(spec.invoice_id)
    unconfirmed_applied = 0
    for invoice_id in listed:
        posted = by_invoice.get(invoice_id)
        if posted is None or posted.event_id in poster.acknowledged:
            continue
        if posted.event_id in poster.unconfirmed:
            unconfirmed_applied += 1
            expected[posted.currency] += posted.amount
        else:
            phantoms.append(invoice_id)

    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT invoice_id, count(*) AS n FROM ledger.balance_movements WHERE tenant_id = $1"
            " GROUP BY invoice_id",
            book.tenant,
        )
        claimed = {
            r["event_id"]
            for r in await connection.fetch(
                "SELECT event_id FROM ledger.ingested_events WHERE tenant_id = $1 AND event_id = any($2)",
                book.tenant,
                [by_invoice[i].event_id for i in lost],
            )
        }
    finally:
        await connection.close()
    counts = {r["invoice_id"]: int(r["n"]) for r in rows}
    lost_ids = {by_invoice[i].event_id for i in lost}
    in_log = await events_in_log(bootstrap_servers, JOURNAL, lost_ids) if lost else set()
    movements = {
        spec.invoice_id: counts.get(spec.invoice_id, 0)
        for spec in acknowledged
        if counts.get(spec.invoice_id, 0) != 1
    }
    return Findings(
        acknowledged=len(acknowledged),
        lost=sorted(lost),
        lost_claimed=len(claimed),
        lost_in_log=len(in_log),
        wrong=sorted(wrong),
        unconfirmed=sum(1 for i in poster.unconfirmed if i in book.invoices),
        unconfirmed_applied=unconfirmed_applied,
        phantoms=sorted(phantoms),
        movements=movements,
        expected_minor=dict(expected),
        statements_minor={c: v for c, v in statements_minor.items() if v},
        aging_minor=await aging(urls[0], api_key, book.AS_OF),
        lag=lag,
        statuses=Counter(poster.statuses),
        conflicts=len(poster.conflicts),
        shown=shown,
    )
