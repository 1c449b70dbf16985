"""One benchmark run: generate the portfolio, measure the raw limits and every pipeline figure, and
write the results.

The measures, numbered as in docs/benchmarks.md:
  (1) ingest       events/s accepted by POST /v1/events (Kafka acknowledged)
  (2) projection   events/s from Kafka into the committed projection, catching up a backlog
  (3) replay       events/s rebuilding the projection in a new database from the same topics
  (4) business day   seconds for dunning to evaluate one business day for N debtors (bench/dunning_day.py)
  (5) payment to case  latency from a payment posted over HTTP to the case showing it (bench/latency.py)
  (6) API reads    statement and portfolio aging latency, p50/p99
  (7) scoring      records/s keeping features up to date; seconds to score every debtor with an open
                   item again on a business day (bench/scoring_day.py)
  (8) policy what-if   seconds to replay a candidate policy over N debtors' recorded history beside
                   the published one (bench/policy_whatif.py)
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import dunning_day, latency, limits, pipeline, policy_whatif, scoring_day
from bench.infra import REPO, Infrastructure, machine, postgres_version
from bench.pipeline import Context
from bench.portfolio import PortfolioSpec, check_sample, generate, spec_for
from bench.profiling import summarize
from bench.report import add_ratios, assess, write
from services.ledger.main import NAME as LEDGER
from services.runtime.collector import settle as settle_collector
from services.stack import open_stack

RESULTS_DIR = REPO / "bench" / "results"


@dataclass(frozen=True)
class Options:
    size: str = "small"
    seed: int = 42
    debtors: int | None = None
    invoices: int | None = None
    clients: int = 4
    batch: int = 1000
    api_processes: int = 2
    """Ledger API processes the ingest is posted to (one per core of this machine)."""
    ledger_members: int = 2
    """Ledger consumer processes of (2) and (3), one group (one per core of this machine)."""
    reads: int = 300
    raw_records: int = 500_000
    """At most this many of the portfolio's records are used for the raw Kafka limits."""
    out: Path | None = None
    profile: Path | None = None
    command: str = "python -m bench"
    latency_probes: int | None = None
    """Probe payments for the payment-to-case latency (5); None: the size's (bench.latency.PROBES)."""
    latency_rate: float | None = None
    """Background ERP events/s offered during (5); None: the size's (bench.latency.RATES)."""
    latency_poll: str = "api"
    """How (5) sees the case: "api" (GET /v1/cases/{id} of a dunning API process) or "db" (its tables)."""
    day_debtors: int | None = None
    """Debtors for the dunning business-day evaluation (4); None: the size's (bench.dunning_day)."""

    scoring_day_debtors: int | None = None
    """Debtors for the scoring business day (7b); None: the size's (bench.scoring_day)."""

    def scoring_day_debtor_count(self) -> int:
        return self.scoring_day_debtors or scoring_day.DAY_DEBTORS[self.size]

    def day_debtor_count(self) -> int:
        return self.day_debtors or dunning_day.DAY_DEBTORS[self.size]

    def spec(self) -> PortfolioSpec:
        return spec_for(self.size, debtors=self.debtors, invoices=self.invoices, seed=self.seed)

    def ingest_spec(self) -> PortfolioSpec:
        """A fifth of the portfolio, for two other tenants: what the API is timed on."""
        spec = self.spec()
        return replace(
            spec,
            tenants=2,
            debtors=max(10, spec.debtors // 5),
            invoices=max(100, spec.invoices // 5),
            seed=spec.seed + 1,
        )


def results_path(options: Options, started: dt.datetime) -> Path:
    return options.out or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"


async def run_benchmark(options: Options, infra: Infrastructure) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    ctx = pipeline.watch_infrastructure(infra, options.profile)
    processes = ctx.processes
    try:
        results = await _run(options, ctx, started_at)
    finally:
        processes.stop()
    results["memory"] = processes.memory()
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
    results["duration_s"] = round(time.perf_counter() - clock, 1)
    add_ratios(results)
    assess(results)
    if ctx.profiler:
        results["profiles"] = {
            name: {"file": str(path), "top": [[frame, round(share, 3)] for frame, share in summarize(path)]}
            for name, path in ctx.profiler.files.items()
        }
    path = results_path(options, started_at)
    results["results_file"] = str(path)
    write(results, path)
    return results


async def _run(options: Options, ctx: Context, started_at: dt.datetime) -> dict[str, Any]:
    infra = ctx.infra
    await infra.prepare_topics()
    spec = options.spec()
    portfolio = generate(spec)
    ingest_portfolio = generate(options.ingest_spec(), tenant_prefix="ingest-")
    # Kept to the end of the run: out of the garbage collector's sight, since a service process,
    # whose figures these are, holds no such data.
    settle_collector()
    checked = check_sample(portfolio.events, stride=max(1, len(portfolio.events) // 2_000))
    results: dict[str, Any] = {
        "arrears_bench": 1,
        "started_at": started_at.isoformat(),
        "command": options.command,
        "parameters": {
            "size": options.size,
            "seed": options.seed,
            "debtors": spec.debtors,
            "invoices": spec.invoices,
            "clients": options.clients,
            "batch": options.batch,
            "api_processes": options.api_processes,
            "ledger_members": options.ledger_members,
            "reads": options.reads,
            "raw_records": min(options.raw_records, len(portfolio.events)),
            "day_debtors": options.day_debtor_count(),
            "scoring_day_debtors": options.scoring_day_debtor_count(),
            "profile": str(options.profile) if options.profile else None,
        },
        "machine": {**machine(), "postgres": await postgres_version(infra)},
        "portfolio": {**portfolio.summary(), "contract_checked_events": checked},
        "ingest_portfolio": ingest_portfolio.summary(),
        "limits": {},
        "measures": {},
    }
    measures = results["measures"]

    results["limits"].update(await limits.kafka_limits(infra, portfolio.events[: options.raw_records]))

    ledger_url, ingest_keys = await pipeline.prepare_ledger_database(ctx, "ledger", ingest_portfolio.tenants)
    measures["ingest"] = await pipeline.measure_ingest(
        ctx,
        ingest_portfolio,
        ledger_url,
        ingest_keys,
        options.clients,
        options.batch,
        options.api_processes,
    )

    backlog = await limits.produce_batched(infra.bootstrap_servers, portfolio.events)
    measures["backlog_produce"] = backlog.as_json(method="create_batch/send_batch, the ledger's topics")
    members = options.ledger_members
    measures["projection"] = await pipeline.measure_projection(ctx, ledger_url, "projection", members)

    replay_url = await infra.create_database("replay")
    measures["replay"] = await pipeline.measure_projection(ctx, replay_url, "replay", members)

    projection = measures["projection"]
    ledger_facts_per_s = projection["facts_published"] / max(projection["outbox_drained_seconds"], 1e-9)
    measures["scoring_facts"] = await scoring_day.measure_scoring_facts(ctx, round(ledger_facts_per_s, 1))
    measures["scoring_day"] = await scoring_day.measure_scoring_day(
        ctx, options.scoring_day_debtor_count(), options.seed
    )
    measures["dunning_evaluation"] = await measure_dunning_evaluation(
        ctx, options.day_debtor_count(), options.seed
    )
    measures["payment_to_case_latency"] = await measure_payment_to_case_latency(ctx, options)
    measures["policy_whatif"] = await policy_whatif.measure_policy_whatif(
        ctx, policy_whatif.WHATIF_DEBTORS[options.size], options.seed
    )

    keys = await create_keys(ctx, replay_url, portfolio.tenants)
    reads = await pipeline.measure_reads(ctx, portfolio, replay_url, keys, options.reads, options.seed)
    open_items = measures["replay"]["database"]["open_items"]
    measures["statement_latency"] = {**reads["statement"], "as_of": reads["as_of"], "open_items": open_items}
    measures["aging_latency"] = {**reads["aging"], "as_of": reads["as_of"], "open_items": open_items}
    measures["aging_known_at_latency"] = {**reads["aging_known_at"], "open_items": open_items}

    results["limits"]["postgres_copy"] = await limits.copy_limits(replay_url, portfolio.events)
    return results


async def measure_dunning_evaluation(ctx: Context, debtors: int, seed: int) -> dict[str, Any]:
    """(4) seconds the dunning service takes to evaluate one business day for `debtors` debtors, and
    commands emitted per second (`bench.dunning_day`)."""
    return await dunning_day.measure_dunning_evaluation(ctx, debtors, seed)


async def measure_payment_to_case_latency(ctx: Context, options: Options) -> dict[str, Any]:
    """(5) time from a payment posted to the ledger API to the collection case reflecting it (closed,
    its pending reminder cancelled), one probe at a time under a steady background load
    (`bench.latency`)."""
    return await latency.measure_payment_to_case_latency(
        ctx,
        probes=options.latency_probes or latency.PROBES[options.size],
        rate=options.latency_rate or latency.RATES[options.size],
        warmup_s=latency.WARMUP_S[options.size],
        poll=options.latency_poll,
        seed=options.seed,
    )


async def create_keys(ctx: Context, database_url: str, tenants: list[str]) -> dict[str, str]:
    settings = pipeline.settings(ctx.infra, database_url)
    async with open_stack(settings, [LEDGER], background=False, migrate=False) as stack:
        return {t: await stack.create_key(t, "bench-reader", "erp", on=[LEDGER]) for t in tenants}
