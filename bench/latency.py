"""(5) Payment-to-case latency: from a payment posted to the ledger API to the debtor's collection
case showing it, with its pending reminder cancelled, under a steady background load.

The deployed shape, each in a process of its own (`bench.server`), on one fresh database:
- the ledger API (uvicorn, no background loops): the ERP's events, background and probes alike;
- the ledger worker: the ledger's consumer loop and outbox relay (`LedgerService` background);
- the dunning worker: the dunning consumer loop and outbox relay (`DunningService` background);
- the dunning API (no background loops), which the probes poll (`--latency-poll db` reads the
  `dunning.cases` and `dunning.timeline` tables instead, and this process does not run).
The bench process generates the load, posts the probes, polls, and reads the receivables and
commands topics for the breakdown. The consumers start at the current end of their topics (their
stored offsets are set there), so they see only this measure's records.

Setup. Two probe tenants with the default policy (`policies/default.yaml`, published on
`collections.policies.v1` as `arrears policy publish` does) start business day D0; one debtor per
probe is registered (with an e-mail address) and gets one to three invoices falling due at D0 + 10;
once dunning holds every case, the clock jumps to D0 + 16 and the friendly reminder of every case is
decided. No notifier runs, so every reminder stays pending (a command is pending until a contact
result says it was executed). The background tenants (a portfolio of `bench.portfolio`, sized for the
run) get the policy too, and their business date is the portfolio's first day: what the ERP posts
is dated that day or later, so dunning decides the debtors it touches as it would during a day whose
reminders the morning's business-day evaluation has already sent (the opening load's overdue items
are decided on first touch, in the warm-up). A run is steady when, at the end of the probes, neither
consumer is more than two seconds of offered load behind (`steady`); otherwise the latency measures a
growing queue.

Load and probes. A client posts the background portfolio's ERP events (invoices, payments, credit
notes, debtor data, in the portfolio's order) in batches of a tenth of a second's worth at the
offered rate. After a warm-up, the probes run one at a time: a payment (every other one with its
allocations, the others applied oldest first by the ledger) that pays all of one probe debtor's
invoices. Timed from just before its POST until a poll (every `poll_ms`, on a connection of its own;
after the first 250 ms every 2 % of the time so far, so a slow probe does not add load) finds the
case `closed` and a `command.cancelled` entry in its timeline (both are written in the same dunning
transaction). A probe not seen within the timeout is a failure: counted, listed, never
dropped. Breakdown, per probe, from the same clock (all processes on one machine):
  accepted           the POST answered 202 (validated, published with acks=all, committed);
  fact published     the Kafka timestamp of the probe debtor's last balance fact on
                     `ar.receivables.v1` (set by the ledger relay's producer after the ledger's commit);
  dunning began      `dunning.cases.updated_at` of the case (now() of the dunning transaction that
                     applied the fact: the start of that batch's transaction);
  visible            the poll that saw it;
  cancel published   the Kafka timestamp of the cancellation on `collections.commands.v1`.

`python -m bench.latency --size small` runs this measure alone on a broker and database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import entry
from bench.infra import libpq
from bench.pipeline import Context, ingest_bodies, settings, standalone
from bench.portfolio import Portfolio, PortfolioSpec, generate
from bench.server import service_server
from contracts.policy import PolicyPublished
from contracts.topics import COMMANDS, RECEIVABLES, catalogue
from services.dunning.api import policy_message
from services.dunning.main import NAME as DUNNING
from services.dunning.policies import default_policy
from services.dunning.projection import DunningProjection
from services.ledger.main import NAME as LEDGER
from services.ledger.projection import LedgerProjection
from services.runtime.clock import day_started
from services.runtime.process import open_log
from services.runtime.settings import Settings
from services.stack import open_stack

PROBES = {"tiny": 20, "small": 100, "medium": 300, "full": 300}
"""Probe payments per `--size` (`--latency-probes` overrides)."""
RATES = {"tiny": 100, "small": 500, "medium": 1_000, "full": 1_000}
"""Background ERP events per second offered per `--size` (`--latency-rate` overrides). The ledger and
dunning workers each take about 0.5 ms of CPU per record, so on the two cores of the reference machine
(shared with Kafka, PostgreSQL and the API) 2,000 events/s is not a steady load yet."""
WARMUP_S = {"tiny": 2.0, "small": 10.0, "medium": 15.0, "full": 15.0}
TARGET_P99_MS = 1_000.0
"""Payment to case, p99, under 1,000 background events/s (and any rate above 300)."""
TARGET_P99_MS_LIGHT = 250.0
"""Payment to case, p99, under a background of 300 events/s or less."""


def target_p99_ms(rate: float) -> float:
    return TARGET_P99_MS_LIGHT if rate <= 300 else TARGET_P99_MS


POLL_MS = 5.0
POLL_SLACK = 0.02
"""After the first `POLL_MS / POLL_SLACK` ms, a probe is polled every 2 % of the time it has taken."""
PROBE_TIMEOUT_S = 30.0
STALLED_AFTER = 3
"""Consecutive probes timing out after which the rest are not tried (the pipeline is stuck)."""
D0 = dt.date(2026, 3, 2)
"""The probe tenants' first business day (a Monday); invoices fall due on D0 + 10."""
DUE = D0 + dt.timedelta(days=10)
DECIDED = D0 + dt.timedelta(days=16)
"""The day the clock jumps to: the friendly reminder (due + 1, + 3 for small amounts) is decided."""
CURRENCY = "EUR"
STAGES = ("accepted", "fact_published", "dunning_began", "visible", "cancel_published")


@dataclass(frozen=True)
class ProbeDebtor:
    tenant: str
    debtor: str
    invoices: tuple[tuple[str, int], ...]
    """(invoice id, amount in minor units)."""

    @property
    def key(self) -> bytes:
        return f"{self.tenant}:{self.debtor}".encode()

    @property
    def case_id(self) -> str:
        return f"{self.debtor}:{CURRENCY}"


@dataclass
class Probe:
    number: int
    debtor: ProbeDebtor
    allocated: bool
    started_wall: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    """Milliseconds from just before the POST to each stage."""
    status: str = "not run"


def probe_debtors(count: int, tenants: Sequence[str], seed: int) -> list[ProbeDebtor]:
    rng = random.Random(seed)
    debtors = []
    for n in range(count):
        tenant = tenants[n % len(tenants)]
        invoices = tuple(
            (f"LP{n:05d}-{i}", round(math.exp(rng.gauss(math.log(180_000), 0.8))))
            for i in range(1 + int(rng.random() * 3))
        )
        debtors.append(ProbeDebtor(tenant, f"LP{n:05d}", invoices))
    return debtors


def _envelope(
    event_type: str, tenant: str, debtor: str, event_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "erp/bench-latency",
        "type": event_type,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tenantid": tenant,
        "debtorid": debtor,
        "data": data,
    }


def _money(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": CURRENCY}


def setup_events(debtor: ProbeDebtor) -> list[dict[str, Any]]:
    profile = {
        "name": f"Latency probe {debtor.debtor}",
        "language": "en",
        "email": f"{debtor.debtor}@probe.example",
    }
    events = [
        _envelope("ar.debtor.registered.v1", debtor.tenant, debtor.debtor, f"reg-{debtor.debtor}", profile)
    ]
    for invoice_id, amount in debtor.invoices:
        data = {
            "invoice_id": invoice_id,
            "issue_date": (DUE - dt.timedelta(days=30)).isoformat(),
            "due_date": DUE.isoformat(),
            "amount": _money(amount),
        }
        events.append(
            _envelope("ar.invoice.issued.v1", debtor.tenant, debtor.debtor, f"inv-{invoice_id}", data)
        )
    return events


def payment_body(probe: Probe) -> bytes:
    debtor = probe.debtor
    total = sum(amount for _, amount in debtor.invoices)
    data: dict[str, Any] = {
        "payment_id": f"{debtor.debtor}-PAY",
        "value_date": DECIDED.isoformat(),
        "amount": _money(total),
    }
    if probe.allocated:
        data["allocations"] = [{"invoice_id": i, "amount": _money(a)} for i, a in debtor.invoices]
    event = _envelope("ar.payment.received.v1", debtor.tenant, debtor.debtor, f"pay-{debtor.debtor}", data)
    return orjson.dumps([event])


def background_spec(rate: float, probes: int, warmup_s: float, seed: int) -> PortfolioSpec:
    """A portfolio for two background tenants with enough ERP events to post at `rate` for the warm-up
    and the probes (about a second each, generously): about 1.8 ERP events per invoice."""
    events = rate * (warmup_s + 30 + probes * 1.5)
    invoices = max(200, int(events / 1.6))
    return PortfolioSpec(
        tenants=2, debtors=max(20, invoices // 12), invoices=invoices, days=60, history_days=60, seed=seed + 5
    )


# --- the measure ------------------------------------------------------------------------------------


async def measure_payment_to_case_latency(
    ctx: Context,
    *,
    probes: int,
    rate: float,
    warmup_s: float = 10.0,
    poll: str = "api",
    poll_ms: float = POLL_MS,
    timeout_s: float = PROBE_TIMEOUT_S,
    seed: int = 42,
    environment: dict[str, str] | None = None,
) -> dict[str, Any]:
    """(5) p50/p95/p99 of the time from a payment posted to the case reflecting it (closed, its pending
    reminder cancelled), one probe at a time, under `rate` background events per second."""
    run = ctx.infra.run_id
    probe_tenants = [f"lat{run}-a", f"lat{run}-b"]
    clock = time.perf_counter()
    spec = background_spec(rate, probes, warmup_s, seed)
    background = generate(spec, tenant_prefix=f"lat{run}-bg-")
    batch = min(1_000, max(10, round(rate / 10)))
    bodies = ingest_bodies(background.events, 1, batch)[0]
    debtors = probe_debtors(probes, probe_tenants, seed)
    url = await ctx.infra.create_database("latency")
    tenants = [*probe_tenants, *background.tenants]
    erp_keys, collector_keys = await _prepare_database(ctx, url, tenants, probe_tenants)
    env = {
        k if k.startswith("ARREARS_") else f"ARREARS_{k.upper()}": v for k, v in (environment or {}).items()
    }
    workers = Settings.model_validate({k.removeprefix("ARREARS_").lower(): v for k, v in env.items()})

    def server(service: str, group: str, *, background: bool = False) -> Any:
        return service_server(
            url,
            ctx.infra.bootstrap_servers,
            processes=ctx.processes,
            service=service,
            background=background,
            group=group,
            environment=env,
            profiler=ctx.profiler,
            profile_name=f"latency-{group}",
        )

    async with contextlib.AsyncExitStack() as stack:
        ledger_api = await stack.enter_async_context(server(LEDGER, "api_server"))
        ledger_worker = await stack.enter_async_context(server(LEDGER, "ledger_worker", background=True))
        dunning_worker = await stack.enter_async_context(server(DUNNING, "dunning_worker", background=True))
        worker_urls = {LEDGER: ledger_worker.url, DUNNING: dunning_worker.url}
        dunning_api = (
            await stack.enter_async_context(server(DUNNING, "dunning_api")) if poll == "api" else None
        )
        event_log = await stack.enter_async_context(open_log(settings(ctx.infra, url)))
        db = await asyncpg.connect(libpq(url))
        stack.push_async_callback(db.close)
        ledger_http = await stack.enter_async_context(httpx.AsyncClient(base_url=ledger_api.url, timeout=60))

        # -- setup: policies, business days, probe debtors with a pending reminder
        policy = PolicyPublished(version=1, effective_from=dt.date(2020, 1, 1), document=default_policy())
        now = dt.datetime.now(dt.UTC)
        await event_log.publish(
            [policy_message(t, policy, now) for t in tenants]
            + [day_started(t, D0, now) for t in probe_tenants]
            + [day_started(t, spec.start, now) for t in background.tenants]
        )
        await _wait_for(
            db, "SELECT count(*) FROM dunning.policies WHERE tenant_id = ANY($1)", [tenants], len(tenants)
        )
        await _wait_for(
            db,
            "SELECT count(*) FROM dunning.business_dates WHERE tenant_id = ANY($1)",
            [tenants],
            len(tenants),
        )
        events_by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for debtor in debtors:
            events_by_tenant[debtor.tenant].extend(setup_events(debtor))
        for tenant, events in events_by_tenant.items():
            for start in range(0, len(events), 1_000):
                await _post(ledger_http, erp_keys[tenant], orjson.dumps(events[start : start + 1_000]))
        await _wait_for(
            db, "SELECT count(*) FROM dunning.cases WHERE tenant_id = ANY($1)", [probe_tenants], probes
        )
        await _wait_for(
            db, "SELECT count(*) FROM dunning.debtors WHERE tenant_id = ANY($1)", [probe_tenants], probes
        )
        await event_log.publish([day_started(t, DECIDED, dt.datetime.now(dt.UTC)) for t in probe_tenants])
        await _wait_for(
            db,
            "SELECT count(DISTINCT case_id) FROM dunning.timeline WHERE tenant_id = ANY($1)"
            " AND kind = 'command.send_reminder' AND business_date = $2",
            [probe_tenants, DECIDED],
            probes,
        )
        setup_s = time.perf_counter() - clock

        # -- load, observers, probes
        watcher = await stack.enter_async_context(
            Watcher(ctx.infra.bootstrap_servers, {d.key for d in debtors})
        )
        lags = LagSampler(url, watcher)
        await lags.start()
        stack.push_async_callback(lags.stop)
        load = Load(ledger_api.url, erp_keys, bodies, rate)
        load.start()
        stack.push_async_callback(load.stop)
        await asyncio.sleep(warmup_s)
        poller = await stack.enter_async_context(
            Poller(poll, url, dunning_api.url if dunning_api else None, collector_keys, poll_ms)
        )
        rng = random.Random(seed)
        done = [Probe(n, d, allocated=n % 2 == 0) for n, d in enumerate(debtors)]
        cpu_before = ctx.processes.cpu()
        batches_before = await _batches(worker_urls)
        load_average = [os.getloadavg()[0]]
        load_before = load.snapshot()
        started = time.perf_counter()
        stalled = 0
        for probe in done:
            if stalled >= STALLED_AFTER:
                probe.status = "not run: the pipeline stalled"
                continue
            await _run_probe(probe, ledger_http, erp_keys[probe.debtor.tenant], poller, timeout_s)
            stalled = stalled + 1 if probe.status == "timeout" else 0
            await asyncio.sleep(rng.uniform(0.02, 0.1))  # probes at random phases of the consumer loops
        seconds = time.perf_counter() - started
        cpu_after = ctx.processes.cpu()
        load_after = load.snapshot()
        batches_after = await _batches(worker_urls)
        load_average.append(os.getloadavg()[0])
        await load.stop()
        await asyncio.sleep(1.0)  # the last cancellations' publication
        for probe in done:
            await _complete(probe, db, watcher)
        lag = lags.summary()
    return _results(
        done,
        probes=probes,
        rate=rate,
        batch=batch,
        spec=spec,
        background=background,
        load=(load_before, load_after, load),
        lag=lag,
        poller=poller,
        seconds=seconds,
        setup_s=setup_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
        cpu=(cpu_before, cpu_after),
        workers=workers,
        environment=env,
        batches=_batch_delta(batches_before, batches_after, seconds),
        load_average=load_average,
    )


async def _prepare_database(
    ctx: Context, url: str, tenants: Sequence[str], probe_tenants: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Both schemas; an ERP key per tenant and a collector key per probe tenant; both consumer groups'
    stored offsets at the current end of their topics."""
    async with open_stack(settings(ctx.infra, url), (LEDGER, DUNNING), background=False) as stack:
        erp = {t: await stack.create_key(t, "bench-erp", "erp", on=[LEDGER]) for t in tenants}
        collector = {
            t: await stack.create_key(t, "bench-collector", "collector", on=[DUNNING]) for t in probe_tenants
        }
    counts = {name: partitions for name, partitions, _ in catalogue()}
    reader = AIOKafkaConsumer(bootstrap_servers=ctx.infra.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    connection = await asyncpg.connect(libpq(url))
    try:
        for schema, projection in ((LEDGER, LedgerProjection), (DUNNING, DunningProjection)):
            partitions = [TopicPartition(t, p) for t in projection.topics for p in range(counts[t])]
            ends = await reader.end_offsets(partitions)
            await connection.executemany(
                f"INSERT INTO {schema}.consumer_offsets (group_id, topic, partition, next_offset)"
                " VALUES ($1, $2, $3, $4)",
                [(projection.group_id, tp.topic, tp.partition, offset) for tp, offset in ends.items()],
            )
    finally:
        await connection.close()
        await reader.stop()
    return erp, collector


async def _wait_for(db: Any, query: str, args: list[Any], expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await db.fetchval(query, *args)
        if found >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"setup: {found} of {expected} after {timeout_s:.0f} s: {query}")
        await asyncio.sleep(0.05)


async def _post(client: httpx.AsyncClient, key: str, body: bytes) -> httpx.Response:
    response = await client.post(
        "/v1/events", content=body, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/events: {response.status_code} {response.text[:500]}")
    return response


async def _run_probe(
    probe: Probe, client: httpx.AsyncClient, key: str, poller: Poller, timeout_s: float
) -> None:
    body = payment_body(probe)
    probe.started_wall = time.time()
    started = time.perf_counter()
    response = await _post(client, key, body)
    probe.stages["accepted"] = (time.perf_counter() - started) * 1000
    summary = response.json()
    if summary.get("accepted") != 1:
        probe.status = f"not accepted: {summary}"
        return
    deadline = started + timeout_s
    tick = time.perf_counter()
    while True:
        if await poller.shows(probe.debtor):
            probe.stages["visible"] = (time.perf_counter() - started) * 1000
            probe.status = "observed"
            return
        if time.perf_counter() > deadline:
            probe.status = "timeout"
            return
        # Polls of a slow probe come further apart (at most POLL_SLACK of its latency late): each poll
        # costs the dunning API and the database CPU that the workers behind the probe need.
        tick += max(poller.interval_s, (time.perf_counter() - started) * POLL_SLACK)
        await asyncio.sleep(max(0.0, tick - time.perf_counter()))


async def _complete(probe: Probe, db: Any, watcher: Watcher) -> None:
    """The stages seen from outside the poll: the Kafka timestamps and the dunning transaction."""
    if probe.status != "observed":
        return
    since_ms = probe.started_wall * 1000
    facts = [ts for ts in watcher.facts.get(probe.debtor.key, []) if ts >= since_ms - 1]
    if facts:
        probe.stages["fact_published"] = max(facts) - since_ms
    cancels = [ts for ts in watcher.cancellations.get(probe.debtor.key, []) if ts >= since_ms - 1]
    if cancels:
        probe.stages["cancel_published"] = min(cancels) - since_ms
    updated = await db.fetchval(
        "SELECT updated_at FROM dunning.cases WHERE tenant_id = $1 AND case_id = $2",
        probe.debtor.tenant,
        probe.debtor.case_id,
    )
    if updated is not None:
        probe.stages["dunning_began"] = updated.timestamp() * 1000 - since_ms


# --- the parts ----------------------------------------------------------------------------------------


class Load:
    """Posts the background events at `rate` events/s from one client, in the portfolio's order."""

    def __init__(
        self, url: str, keys: dict[str, str], bodies: list[tuple[str, bytes, int]], rate: float
    ) -> None:
        self._url, self._keys, self._bodies, self._rate = url, keys, bodies, rate
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.accepted = 0
        self.requests = 0
        self.started = 0.0
        self.ran_dry = False
        self.latencies: list[float] = []

    def start(self) -> None:
        self.started = time.perf_counter()
        self._task = asyncio.create_task(self._run(), name="latency-load")

    def snapshot(self) -> tuple[float, int]:
        return time.perf_counter(), self.accepted

    async def _run(self) -> None:
        offered = 0
        async with httpx.AsyncClient(base_url=self._url, timeout=120) as client:
            for tenant, body, count in self._bodies:
                delay = self.started + offered / self._rate - time.perf_counter()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
                began = time.perf_counter()
                await _post(client, self._keys[tenant], body)
                self.latencies.append(time.perf_counter() - began)
                offered += count
                self.accepted += count
                self.requests += 1
        self.ran_dry = True

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None


class Watcher:
    """Reads `ar.receivables.v1` and `collections.commands.v1` from their end, keeping the Kafka
    timestamps of the probe debtors' balance facts and cancellations; also reads end offsets for the
    lag sampler."""

    def __init__(self, bootstrap_servers: str, keys: set[bytes]) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
        self._keys = keys
        self.facts: dict[bytes, list[int]] = defaultdict(list)
        self.cancellations: dict[bytes, list[int]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> Watcher:
        await self._consumer.start()
        counts = {name: partitions for name, partitions, _ in catalogue()}
        partitions = [
            TopicPartition(t, p) for t in (RECEIVABLES.name, COMMANDS.name) for p in range(counts[t])
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name="latency-watcher")
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._consumer.stop()

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
        return ends

    async def _run(self) -> None:
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for r in records:
                    if r.key not in self._keys:
                        continue
                    if tp.topic == RECEIVABLES.name:
                        self.facts[r.key].append(r.timestamp)
                    elif b'"collections.command.cancelled.v1"' in r.value:
                        self.cancellations[r.key].append(r.timestamp)


class LagSampler:
    """Once a second: records in the ledger's and dunning's topics not yet applied (end offsets minus
    the offsets each consumer stored in the database)."""

    def __init__(self, url: str, watcher: Watcher) -> None:
        self._url, self._watcher = url, watcher
        counts = {name: partitions for name, partitions, _ in catalogue()}
        self._groups = {
            name: (
                projection.group_id,
                [TopicPartition(t, p) for t in projection.topics for p in range(counts[t])],
            )
            for name, projection in ((LEDGER, LedgerProjection), (DUNNING, DunningProjection))
        }
        self.samples: dict[str, list[int]] = {name: [] for name in self._groups}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._db = await asyncpg.connect(libpq(self._url))
        self._task = asyncio.create_task(self._run(), name="latency-lag")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            for name, (group, partitions) in self._groups.items():
                ends = await self._watcher.end_offsets(partitions)
                stored = await self._db.fetchval(
                    f"SELECT coalesce(sum(next_offset), 0) FROM {name}.consumer_offsets WHERE group_id = $1",
                    group,
                )
                self.samples[name].append(int(sum(ends.values()) - stored))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
            await self._db.close()

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "max": max(s, default=None),
                "mean": round(statistics.fmean(s), 1) if s else None,
                "last": s[-1] if s else None,
                "samples": len(s),
            }
            for name, s in self.samples.items()
        }


class Poller:
    """Whether a probe's case shows the payment: closed, with its reminder's cancellation recorded."""

    def __init__(
        self, via: str, url: str, api_url: str | None, keys: dict[str, str], interval_ms: float
    ) -> None:
        self.via = via
        self.interval_s = interval_ms / 1000
        self._url, self._api_url, self._keys = url, api_url, keys
        self.requests = 0
        self.latencies: list[float] = []

    async def __aenter__(self) -> Poller:
        if self.via == "api":
            assert self._api_url is not None
            self._client = httpx.AsyncClient(base_url=self._api_url, timeout=30)
        else:
            self._db = await asyncpg.connect(libpq(self._url))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.via == "api":
            await self._client.aclose()
        else:
            await self._db.close()

    async def shows(self, debtor: ProbeDebtor) -> bool:
        began = time.perf_counter()
        try:
            if self.via == "api":
                response = await self._client.get(
                    f"/v1/cases/{debtor.case_id}", headers={"X-API-Key": self._keys[debtor.tenant]}
                )
                if response.status_code != 200:
                    raise RuntimeError(
                        f"GET /v1/cases/{debtor.case_id}: {response.status_code} {response.text[:300]}"
                    )
                case = response.json()
                return bool(
                    case["status"] == "closed"
                    and any(e["kind"] == "command.cancelled" for e in case["timeline"])
                )
            row = await self._db.fetchrow(
                "SELECT status, EXISTS (SELECT 1 FROM dunning.timeline t WHERE t.tenant_id = c.tenant_id"
                " AND t.case_id = c.case_id AND t.kind = 'command.cancelled') AS cancelled"
                " FROM dunning.cases c WHERE c.tenant_id = $1 AND c.case_id = $2",
                debtor.tenant,
                debtor.case_id,
            )
            return bool(row is not None and row["status"] == "closed" and row["cancelled"])
        finally:
            self.requests += 1
            self.latencies.append(time.perf_counter() - began)


async def _batches(urls: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each worker's consumer batches so far, from its /metrics: count, seconds, records applied."""
    found: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for name, url in urls.items():
            text = (await client.get(f"{url}/metrics")).text
            values = {"count": 0.0, "sum": 0.0, "applied": 0.0}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("group") != name:
                        continue
                    if sample.name == "arrears_consumer_batch_seconds_count":
                        values["count"] = sample.value
                    elif sample.name == "arrears_consumer_batch_seconds_sum":
                        values["sum"] = sample.value
                    elif (
                        sample.name == "arrears_consumer_records_total"
                        and sample.labels.get("outcome") == "applied"
                    ):
                        values["applied"] += sample.value  # one sample per topic
            found[name] = values
    return found


def _batch_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], seconds: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in after.items():
        count = values["count"] - before[name]["count"]
        busy = values["sum"] - before[name]["sum"]
        applied = values["applied"] - before[name]["applied"]
        out[name] = {
            "batches": int(count),
            "batches_per_s": round(count / seconds, 2) if seconds else None,
            "records_per_batch": round(applied / count, 1) if count else None,
            "batch_ms_mean": round(busy / count * 1000, 1) if count else None,
            "busy_share": round(busy / seconds, 3) if seconds else None,
        }
    return out


# --- results --------------------------------------------------------------------------------------------


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 1)}


def _results(
    probes_done: list[Probe],
    *,
    probes: int,
    rate: float,
    batch: int,
    spec: PortfolioSpec,
    background: Portfolio,
    load: tuple[tuple[float, int], tuple[float, int], Load],
    lag: dict[str, Any],
    poller: Poller,
    seconds: float,
    setup_s: float,
    warmup_s: float,
    timeout_s: float,
    cpu: tuple[dict[str, float], dict[str, float]],
    workers: Settings,
    environment: dict[str, str],
    batches: dict[str, Any],
    load_average: list[float],
) -> dict[str, Any]:
    observed = [p for p in probes_done if p.status == "observed"]
    failed = [p for p in probes_done if p.status != "observed"]
    visible = [p.stages["visible"] for p in observed]
    (t0, n0), (t1, n1), loader = load
    cpu_seconds = {name: round(cpu[1][name] - cpu[0].get(name, 0.0), 2) for name in cpu[1]}
    # The increments between consecutive stages, per probe that has both.
    order = ("accepted", "fact_published", "dunning_began", "visible")
    steps: dict[str, list[float]] = defaultdict(list)
    for p in observed:
        previous = 0.0
        for stage in order:
            if stage in p.stages:
                steps[stage].append(p.stages[stage] - previous)
                previous = p.stages[stage]
    return {
        "unit": "ms",
        "figure": percentiles(visible)["p99_ms"] if visible else None,
        "probes": len([p for p in probes_done if not p.status.startswith("not run")]),
        "planned": probes,
        "observed": len(observed),
        "failed": len(failed),
        "failures": [
            {"probe": p.number, "case": f"{p.debtor.tenant}/{p.debtor.case_id}", "status": p.status}
            for p in failed
        ],
        **percentiles(visible),
        "mean_ms": round(statistics.fmean(visible), 1) if visible else None,
        "target_p99_ms": target_p99_ms(rate),
        "stages_ms": {
            stage: percentiles([p.stages[stage] for p in observed if stage in p.stages]) for stage in STAGES
        },
        "stage_increments_ms": {
            {
                "accepted": "post_to_accepted",
                "fact_published": "accepted_to_fact_published",
                "dunning_began": "fact_published_to_dunning_began",
                "visible": "dunning_began_to_visible",
            }[s]: {"p50_ms": round(statistics.median(v), 1), "mean_ms": round(statistics.fmean(v), 1)}
            for s, v in steps.items()
            if v
        },
        "allocated_probes_p50_ms": percentiles([p.stages["visible"] for p in observed if p.allocated])[
            "p50_ms"
        ],
        "unallocated_probes_p50_ms": percentiles([p.stages["visible"] for p in observed if not p.allocated])[
            "p50_ms"
        ],
        "invoices_per_probe": round(statistics.fmean(len(p.debtor.invoices) for p in probes_done), 2)
        if probes_done
        else None,
        "background": {
            "offered_events_per_s": rate,
            "achieved_events_per_s": round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None,
            "events_during_probes": n1 - n0,
            "events": loader.accepted,
            "requests": loader.requests,
            "batch": batch,
            "ran_dry": loader.ran_dry,
            "request_latency_ms": percentiles([s * 1000 for s in loader.latencies]),
            "portfolio": {
                "tenants": spec.tenants,
                "debtors": spec.debtors,
                "invoices": spec.invoices,
                "erp_events": len(background.erp_events()),
            },
        },
        "lag": lag,
        "steady": all((v["last"] or 0) <= 2 * rate for v in lag.values()),
        "consumer_batches": batches,
        "load_average_1min": [round(v, 2) for v in load_average],
        "poll": {
            "via": poller.via,
            "interval_ms": round(poller.interval_s * 1000, 1),
            "requests": poller.requests,
            "request_ms": percentiles([s * 1000 for s in poller.latencies]),
        },
        "processes": "ledger API, ledger worker (consumer + relay), dunning worker (consumer + relay)"
        + (" and the dunning API" if poller.via == "api" else "")
        + " each in a process of its own; load, probes, polls and the Kafka watcher in the bench process",
        "settings": {
            "consumer_fetch_timeout_ms": workers.consumer_fetch_timeout_ms,
            "consumer_max_records": workers.consumer_max_records,
            "outbox_poll_ms": workers.outbox_poll_ms,
            "outbox_batch": workers.outbox_batch,
            "producer_linger_ms": workers.producer_linger_ms,
            "environment": environment,
        },
        "seconds": round(seconds, 1),
        "setup_seconds": round(setup_s, 1),
        "warmup_seconds": warmup_s,
        "probe_timeout_seconds": timeout_s,
        "cpu_seconds": cpu_seconds,
        "cpu_share": {name: round(v / seconds, 3) for name, v in cpu_seconds.items()} if seconds else {},
    }


def summary_line(measure: dict[str, Any]) -> str:
    """The figure in one line for the run's summary."""
    if measure.get("p50_ms") is None and not measure.get("failed"):
        return f"  (5) payment-to-case latency: {measure.get('status', '-')}"
    bg = measure["background"]
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in measure.get("cpu_seconds", {}).items() if v)
    timeouts = sum(1 for f in measure.get("failures", []) if f["status"] == "timeout")
    not_run = measure["planned"] - measure["probes"]
    failures = (
        f", {measure['failed']} FAILED ({timeouts} timed out, {not_run} not run)"
        if measure.get("failed")
        else ""
    )
    steady = "steady" if measure.get("steady") else "NOT steady"
    return (
        f"  (5) payment to case p50 {_ms(measure['p50_ms'])}, p95 {_ms(measure['p95_ms'])},"
        f" p99 {_ms(measure['p99_ms'])}, max {_ms(measure['max_ms'])} ({measure['observed']} of"
        f" {measure['planned']} probes seen{failures}; background {bg['achieved_events_per_s'] or 0:,.0f}"
        f" of {bg['offered_events_per_s']:,.0f} events/s offered, {steady}:"
        f" lag max ledger {measure['lag'].get(LEDGER, {}).get('max')},"
        f" dunning {measure['lag'].get(DUNNING, {}).get('max')}; poll via {measure['poll']['via']}"
        f" every {measure['poll']['interval_ms']:g} ms; CPU {cpu} in {measure['seconds']:.0f} s)"
    )


def breakdown_line(measure: dict[str, Any]) -> str | None:
    increments = measure.get("stage_increments_ms")
    if not increments:
        return None
    parts = [f"{name.replace('_', ' ')} {v['p50_ms']:,.0f}" for name, v in increments.items()]
    cancel = measure.get("stages_ms", {}).get("cancel_published", {}).get("p50_ms")
    line = "      median ms: " + ", ".join(parts)
    line += f"; cancellation published at {cancel:,.0f}" if cancel else ""
    for name, b in measure.get("consumer_batches", {}).items():
        line += (
            f"\n      {name} consumer: {b['batches_per_s'] or 0:.1f} batches/s of"
            f" {b['records_per_batch'] or 0:.0f} records, {b['batch_ms_mean'] or 0:.0f} ms each,"
            f" busy {b['busy_share'] or 0:.0%}"
        )
    return line


def _ms(value: Any) -> str:
    return f"{value:,.0f} ms" if isinstance(value, int | float) else "-"


# --- alone ----------------------------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    async with standalone(Path(args.profile) if args.profile else None) as ctx:
        return await measure_payment_to_case_latency(
            ctx,
            probes=args.probes or PROBES[args.size],
            rate=args.rate or RATES[args.size],
            warmup_s=WARMUP_S[args.size],
            poll=args.poll,
            poll_ms=args.poll_ms,
            seed=args.seed,
            environment=dict(pair.split("=", 1) for pair in args.env),
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(PROBES), default="tiny")
    parser.add_argument("--probes", type=int)
    parser.add_argument("--rate", type=float, help="background ERP events per second offered")
    parser.add_argument("--poll", choices=("api", "db"), default="api")
    parser.add_argument("--poll-ms", type=float, default=POLL_MS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME=VALUE setting of the worker processes, e.g. consumer_fetch_timeout_ms=50",
    )
    parser.add_argument("--profile", help="write py-spy profiles of the server processes to this folder")
    parser.add_argument("--out", help="write the figures as JSON to this file")
    args = parser.parse_args()
    entry.prepare(settle=False)
    measure = asyncio.run(_main(args))
    print(orjson.dumps(measure, option=orjson.OPT_INDENT_2).decode())
    print(summary_line(measure))
    if line := breakdown_line(measure):
        print(line)
    if args.out:
        with open(args.out, "wb") as out:
            out.write(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
