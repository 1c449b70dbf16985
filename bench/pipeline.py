"""The ledger's pipeline figures: ingest over HTTP, projection of a backlog, replay, API reads.

Each function runs one measure against the run's broker and database and returns its figure with
the details that explain it. The projection and the replay run the ledger's own consumer
(`LedgerService`: consumer loop and outbox relay) in this process; the API runs in a process of its
own (`bench.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import statistics
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from bench.infra import Infrastructure, libpq, own_infrastructure
from bench.portfolio import CLOCK_TOPIC, Portfolio, PortfolioEvent
from bench.processes import Processes, with_children
from bench.profiling import Profiler
from bench.server import ledger_server, service_server
from contracts.topics import RECEIVABLES, catalogue
from services.ledger import store
from services.ledger.main import NAME
from services.ledger.projection import LedgerProjection
from services.runtime.consumer import ConsumerLoop
from services.runtime.settings import Settings
from services.runtime.tables import RuntimeTables
from services.stack import open_stack


@dataclass
class Context:
    infra: Infrastructure
    processes: Processes
    profiler: Profiler | None = None


def watch_infrastructure(infra: Infrastructure, profile: Path | None) -> Context:
    """A run's context: the broker and PostgreSQL (postmaster and backends) sampled as process groups."""
    processes = Processes()
    processes.add("kafka", lambda: [pid] if (pid := infra.broker_pid()) else [])
    postmaster = infra.postmaster_pid()
    processes.add("postgres", with_children(postmaster), reaper=postmaster)
    processes.start()
    return Context(infra, processes, Profiler(profile) if profile else None)


@contextlib.asynccontextmanager
async def standalone(
    profile: Path | None, postgres_settings: Mapping[str, str] | None = None
) -> AsyncIterator[Context]:
    """One measure alone (`python -m bench.<measure>`): its own broker, database and topics."""
    with own_infrastructure(postgres_settings) as infra:
        ctx = watch_infrastructure(infra, profile)
        try:
            await infra.prepare_topics()
            yield ctx
        finally:
            ctx.processes.stop()


def settings(infra: Infrastructure, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.bootstrap_servers,
        log_level="WARNING",
        **overrides,
    )


async def prepare_ledger_database(
    ctx: Context, label: str, tenants: Sequence[str]
) -> tuple[str, dict[str, str]]:
    """A new database with the ledger's schema and an API key per tenant: (its URL, keys by tenant)."""
    url = await ctx.infra.create_database(label)
    async with open_stack(settings(ctx.infra, url), [NAME], background=False) as stack:
        keys = {tenant: await stack.create_key(tenant, "bench-erp", "erp", on=[NAME]) for tenant in tenants}
    return url, keys


async def caught_up_by(consumer: ConsumerLoop, deadline: float, what: str, poll_s: float = 0.1) -> None:
    """Wait until the consumer's lag is 0; TimeoutError if it is not by `deadline` (perf_counter)."""
    while await consumer.lag() > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not catch up in time")
        await asyncio.sleep(poll_s)


# --- (1) ingest -----------------------------------------------------------------------------------


def ingest_bodies(
    events: Sequence[PortfolioEvent], clients: int, batch: int
) -> list[list[tuple[str, bytes, int]]]:
    """Per client, its requests in order: (tenant, JSON array body, events). A debtor's events all go
    through one client, so each debtor's order is kept, as one ERP feed per debtor range would."""
    per_client: list[list[tuple[str, bytes, int]]] = [[] for _ in range(clients)]
    open_batches: dict[tuple[int, str], list[bytes]] = {}
    for event in events:
        if event.topic == CLOCK_TOPIC:
            continue
        client = zlib.crc32(event.key) % clients
        values = open_batches.setdefault((client, event.tenant), [])
        values.append(event.value)
        if len(values) == batch:
            per_client[client].append((event.tenant, b"[" + b",".join(values) + b"]", len(values)))
            open_batches[(client, event.tenant)] = []
    for (client, tenant), values in open_batches.items():
        if values:
            per_client[client].append((tenant, b"[" + b",".join(values) + b"]", len(values)))
    return per_client


async def measure_ingest(
    ctx: Context,
    portfolio: Portfolio,
    database_url: str,
    keys: dict[str, str],
    clients: int,
    batch: int,
    api_processes: int = 1,
) -> dict[str, Any]:
    """Events per second accepted (202: durable in the ledger's outbox) by POST /v1/events, served by
    `api_processes` API processes (as behind a load balancer), the clients spread over them; then
    the seconds the outbox relay takes to publish them all to Kafka."""
    work = ingest_bodies(portfolio.events, clients, batch)
    latencies: list[float] = []
    accepted = 0

    async def client_loop(url: str, requests: list[tuple[str, bytes, int]]) -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            for tenant, body, count in requests:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/events",
                    content=body,
                    headers={"X-API-Key": keys[tenant], "Content-Type": "application/json"},
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise RuntimeError(f"POST /v1/events: {response.status_code} {response.text[:500]}")
                summary = response.json()
                if summary["accepted"] != count:
                    raise RuntimeError(f"POST /v1/events accepted {summary['accepted']} of {count}")
                accepted += count

    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for n in range(1, api_processes + 1):
            server = await stack.enter_async_context(
                service_server(
                    database_url,
                    ctx.infra.bootstrap_servers,
                    processes=ctx.processes,
                    group="api_server" if n == 1 else f"api_server_{n}",
                    pool_size=-(-clients // api_processes) + 2,
                    profiler=ctx.profiler,
                    profile_name="ingest-server" if n == 1 else f"ingest-server-{n}",
                )
            )
            urls.append(server.url)
        cpu_before = ctx.processes.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(urls[k % len(urls)], requests) for k, requests in enumerate(work)))
        seconds = time.perf_counter() - started
        cpu = cpu_delta(cpu_before, ctx.processes.cpu())
    relay_seconds = await drain_outbox(ctx, database_url)
    return {
        "figure": round(accepted / seconds, 1),
        "unit": "events/s",
        "events": accepted,
        "seconds": round(seconds, 3),
        "relay_seconds": round(relay_seconds, 3),
        "relayed_events_per_s": round(accepted / relay_seconds, 1) if relay_seconds else None,
        "requests": len(latencies),
        "clients": clients,
        "batch": batch,
        "api_processes": api_processes,
        "request_latency_ms": _percentiles(latencies),
        "cpu_seconds": cpu,
    }


# --- (2) projection and (3) replay ----------------------------------------------------------------


async def partition_ends(infra: Infrastructure, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Each partition's end offset now: what a consumer starting from the beginning has to apply."""
    counts = {name: partitions for name, partitions, _ in catalogue()}
    reader = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        ends = await reader.end_offsets(partitions)
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}
    finally:
        await reader.stop()


async def topic_records(infra: Infrastructure, topics: Sequence[str]) -> int:
    """Records in the topics now: what a consumer starting from the beginning has to apply."""
    return sum((await partition_ends(infra, topics)).values())


async def group_caught_up_by(
    database_url: str, group: str, ends: dict[tuple[str, int], int], deadline: float, what: str
) -> None:
    """Wait until the offsets a consumer group stored with its projection reach `ends`."""
    connection = await asyncpg.connect(libpq(database_url))
    try:
        while True:
            rows = await connection.fetch(
                "SELECT topic, partition, next_offset FROM ledger.consumer_offsets WHERE group_id = $1", group
            )
            stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
            if all(stored.get(tp, 0) >= end for tp, end in ends.items()):
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{what} did not catch up in time")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def measure_projection(
    ctx: Context, database_url: str, profile_name: str, members: int = 1
) -> dict[str, Any]:
    """Start the ledger's consumer on `database_url` and time it until it has applied every record of
    its topics (lag 0), then until the outbox relay has published every balance fact. With `members`
    above 1, as many more ledger workers (`bench.server --background`, a process each, as replicas
    of `arrears serve ledger` run) join the group once this one has its partitions: the group
    rebalances on a backlog, and the time runs until the offsets the group stored cover every record."""
    ends = await partition_ends(ctx.infra, LedgerProjection.topics)
    records = sum(ends.values())
    outputs_before = await _outputs(ctx.infra)
    batches_before = batch_metrics()
    async with (
        open_stack(settings(ctx.infra, database_url), [NAME], background=False) as stack,
        contextlib.AsyncExitStack() as others,
    ):
        service = stack.ledger
        cpu_before = ctx.processes.cpu()
        started = time.perf_counter()
        await stack.start_background()
        await asyncio.wait_for(service.consumer.started.wait(), 120)
        assigned = time.perf_counter()
        deadline = assigned + 600 + records / 50
        with contextlib.ExitStack() as profiling:
            if ctx.profiler:
                profiling.enter_context(ctx.profiler.attach(os.getpid(), profile_name))
            for member in range(2, members + 1):
                await others.enter_async_context(
                    service_server(
                        database_url,
                        ctx.infra.bootstrap_servers,
                        processes=ctx.processes,
                        background=True,
                        group=f"{profile_name}_member_{member}",
                        # ready while catching up on the backlog: it is what it is here for
                        environment={"ARREARS_READY_MAX_LAG_RECORDS": str(records + 1)},
                    )
                )
            what = f"the ledger's {members} consumer(s) with {records} records"
            await group_caught_up_by(database_url, LedgerProjection.group_id, ends, deadline, what)
            caught_up = time.perf_counter()
            cpu = cpu_delta(cpu_before, ctx.processes.cpu())
            while await outbox_rows(stack.sessions) > 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError("the outbox relay did not publish everything")
                await asyncio.sleep(0.2)
            drained = time.perf_counter()
        applied_here = service.consumer.applied
    outputs = {k: v - outputs_before[k] for k, v in (await _outputs(ctx.infra)).items()}
    batches = metrics_delta(batches_before, batch_metrics())
    seconds = caught_up - assigned
    return {
        "figure": round(records / seconds, 1),
        "unit": "events/s",
        "records": records,
        "members": members,
        "applied_by_this_process": applied_here,
        "dead_lettered": outputs["dead_lettered"],
        "facts_published": outputs["facts_published"],
        "seconds": round(seconds, 3),
        "startup_seconds": round(assigned - started, 3),
        "outbox_drained_seconds": round(drained - assigned, 3),
        "batches_in_this_process": int(batches["count"]),
        "records_per_batch": round(applied_here / batches["count"], 1) if batches["count"] else None,
        "batch_seconds_mean": round(batches["sum"] / batches["count"], 4) if batches["count"] else None,
        "cpu_seconds": cpu,
        "database": await database_profile(database_url),
    }


async def _outputs(infra: Infrastructure) -> dict[str, int]:
    """Records in the ledger's output topics so far: balance facts, and what it dead-lettered."""
    dead_letters = [f"{topic}.dlq" for topic in LedgerProjection.topics]
    return {
        "facts_published": await topic_records(infra, [RECEIVABLES.name]),
        "dead_lettered": await topic_records(infra, dead_letters),
    }


async def drain_outbox(ctx: Context, database_url: str) -> float:
    """Publish the ledger's outbox to Kafka with the service's relay; the seconds it took."""
    async with open_stack(
        settings(ctx.infra, database_url), [NAME], background=False, migrate=False
    ) as stack:
        relay = stack.ledger.relay
        started = time.perf_counter()
        while await relay.publish_once() or await outbox_rows(stack.sessions) > 0:
            pass
        return time.perf_counter() - started


async def outbox_rows(sessions: Any, tables: RuntimeTables = store.runtime) -> int:
    """Rows a service's outbox relay has still to publish."""
    from sqlalchemy import func, select

    async with sessions() as session:
        count: int = await session.scalar(select(func.count()).select_from(tables.outbox))
    return count


async def database_profile(database_url: str) -> dict[str, Any]:
    """Rows and writes (inserts, and updates with those of them that were HOT: rewritten on the same
    page without index entries; from pg_stat_user_tables) per table of the ledger schema, the open
    items (invoices whose movements do not add up to zero) and the database size."""
    connection = await asyncpg.connect(libpq(database_url))
    try:
        await asyncio.sleep(0.6)  # backends flush their table statistics at most once a second
        stats = await connection.fetch(
            "SELECT relname, n_live_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
            " FROM pg_stat_user_tables WHERE schemaname = 'ledger' ORDER BY relname"
        )
        open_items = await connection.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM ledger.balance_movements"
            " GROUP BY tenant_id, debtor_id, invoice_id HAVING sum(delta) <> 0) AS open_items"
        )
        size = await connection.fetchval("SELECT pg_database_size(current_database())")
        state_bytes, archive_bytes = await connection.fetchrow(
            "SELECT avg(length(state))::bigint, coalesce(avg(length(archive)), 0)::bigint"
            " FROM ledger.debtor_ledgers"
        )
    finally:
        await connection.close()
    return {
        "open_items": open_items,
        "database_bytes": size,
        "mean_debtor_state_bytes": state_bytes,
        "mean_debtor_archive_bytes": archive_bytes,
        "tables": {
            r["relname"]: {
                "rows": r["n_live_tup"],
                "inserts": r["n_tup_ins"],
                "updates": r["n_tup_upd"],
                "hot_updates": r["n_tup_hot_upd"],
                "deletes": r["n_tup_del"],
            }
            for r in stats
        },
    }


# --- (6) API reads ----------------------------------------------------------------------------------


async def measure_reads(
    ctx: Context, portfolio: Portfolio, database_url: str, keys: dict[str, str], requests: int, seed: int
) -> dict[str, Any]:
    """Latency of GET /v1/debtors/{id}/statement and GET /v1/aging, one request at a time."""
    rng = random.Random(seed)
    as_of = portfolio.spec.end.isoformat()
    debtors = [(t, d) for t, ids in portfolio.debtors.items() for d in ids]
    statements = [rng.choice(debtors) for _ in range(requests)]
    tenants = [portfolio.tenants[i % len(portfolio.tenants)] for i in range(requests)]
    async with (
        ledger_server(
            database_url,
            ctx.infra.bootstrap_servers,
            processes=ctx.processes,
            profiler=ctx.profiler,
            profile_name="reads-server",
        ) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as client,
    ):

        async def timed(path: str, tenant: str) -> float:
            started = time.perf_counter()
            response = await client.get(path, headers={"X-API-Key": keys[tenant]})
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
            return elapsed

        for tenant, debtor in statements[:20]:  # warm-up: connections, caches, first-call costs
            await timed(f"/v1/debtors/{debtor}/statement?as_of={as_of}", tenant)
            await timed(f"/v1/aging?as_of={as_of}", tenant)
        statement_times = [
            await timed(f"/v1/debtors/{debtor}/statement?as_of={as_of}", tenant)
            for tenant, debtor in statements
        ]
        aging_times = [await timed(f"/v1/aging?as_of={as_of}", tenant) for tenant in tenants]
        # As reported now: the records carry the time the run posted them, so everything is known by now
        # and the query reads every movement of the tenant (the bitemporal path, from the movements).
        known_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        bitemporal_times = [
            await timed(f"/v1/aging?as_of={as_of}&known_at={known_at}", tenant)
            for tenant in tenants[: max(10, requests // 10)]
        ]
    return {
        "statement": {"unit": "ms", "requests": len(statement_times), **_percentiles(statement_times)},
        "aging": {"unit": "ms", "requests": len(aging_times), **_percentiles(aging_times)},
        "aging_known_at": {"unit": "ms", "requests": len(bitemporal_times), **_percentiles(bitemporal_times)},
        "as_of": as_of,
    }


# --- helpers --------------------------------------------------------------------------------------


def _percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


def batch_metrics(group: str = LedgerProjection.group_id) -> dict[str, float]:
    """The consumer group's batches so far: how many, and their seconds in all."""
    labels = {"group": group}
    count = REGISTRY.get_sample_value("arrears_consumer_batch_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("arrears_consumer_batch_seconds_sum", labels) or 0.0
    return {"count": count, "sum": total}


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}
