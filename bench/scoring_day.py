"""(7) Scoring: keeping features up to date with the ledger's balance facts, and scoring every debtor
with an open item again on a business day.

(7a) Facts. The real scoring service (consumer loop and outbox relay, in this process) starts on a
fresh database and consumes its topics from the beginning: every balance fact the ledger published
in (2) and (3), the debtors' master data and the business days. Timed from partition assignment
until its lag is 0 (features of every debtor touched stored, every debtor touched scored as of its
tenant's business date). The figure is records applied per second (the replay of (3) published its
balance facts again under the same ids: those repeats are read and dropped, and reported apart);
beside it stands the rate at which the ledger published the facts in (2), balance facts published
per second until its outbox was empty.

(7b) Business day. A fresh database gets the scoring schema and N debtors over four tenants, COPYed
in: each with 2 to 8 invoices issued in the year before the day, terms 14 to 60 days, log-normal
amounts, the older ones mostly paid (a fifth of them late), at least one open (some overdue), and a
debtor row; each tenant's business date is the day before. The scoring group's stored offsets are
the current end of its topics. The service runs with a worker process per CPU. One
`ar.businessday.started.v1` per tenant goes through Kafka, and the harness times until the consumer
has committed past them (every debtor with an open item scored as of the day, the material changes
in the outbox) and until the outbox is empty: first for the day before (every debtor's first score,
every score published: `first_day`), then for the day itself, the figure (every debtor scored again,
only the material changes published, as on any business day after the first).

The raw limits, measured in the same run: the scorer alone (features, the built-in scorecard, reasons,
credit limit, write-off proposal) on one core without any I/O, in debtors per second; and COPY of
the score rows the day wrote into a copy of the `scores` table. The binding limit is the lower.
A run of fewer than a million debtors says what a million would take at the rate measured
(linear: each chunk of debtors is the same work) instead of judging the target.

`python -m bench.scoring_day --debtors N` runs (7b) alone on a broker and a database started for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import entry
from bench.infra import libpq
from bench.limits import copy_rate
from bench.pipeline import (
    Context,
    batch_metrics,
    caught_up_by,
    cpu_delta,
    metrics_delta,
    outbox_rows,
    settings,
    standalone,
    topic_records,
)
from bench.profiling import summaries
from services.runtime.clock import day_started
from services.scoring import store as scoring_store
from services.scoring.batch import columns_of, scored_columns
from services.scoring.features import DebtorHistory, InvoiceFact
from services.scoring.main import NAME
from services.scoring.model import default_scorecard, score_debtors
from services.scoring.projection import ScoringProjection
from services.scoring.writeoff import propose, propose_each
from services.stack import migrate, open_stack

DAY_DEBTORS = {"tiny": 2_000, "small": 50_000, "medium": 200_000, "full": 1_000_000}
"""Debtors scored again per `--size` (`--scoring-day-debtors` overrides)."""
TARGET_DEBTORS = 1_000_000
TARGET_SECONDS = 60.0
TODAY = dt.date(2025, 6, 2)
CURRENCIES = ("EUR", "USD", "RUB", "CNY")
MEDIAN_MINOR = {"EUR": 180_000, "USD": 200_000, "RUB": 15_000_000, "CNY": 1_200_000}
SCORER_SAMPLE = 20_000
"""Debtors the scorer alone is timed on."""
INVOICE_COLUMNS = [
    "tenant_id",
    "debtor_id",
    "invoice_id",
    "currency",
    "issue_date",
    "due_date",
    "amount_minor",
    "outstanding_minor",
    "status",
    "settled_date",
    "written_off_date",
    "disputed_date",
]


def tenants_for(run_id: str, count: int = 4) -> list[str]:
    return [f"score{n + 1}-{run_id}" for n in range(count)]


def invoices_of(rng: random.Random, tenant: str, debtor: str, currency: str) -> list[tuple[Any, ...]]:
    """One debtor's invoices as rows of `scoring.invoices`: the older mostly paid, one or more open."""
    count = rng.randint(2, 8)
    open_count = rng.randint(1, min(3, count))
    rows = []
    for n in range(count):
        issued = TODAY - dt.timedelta(days=rng.randint(1, 365))
        due = issued + dt.timedelta(days=rng.choice((14, 30, 30, 45, 60)))
        amount = max(100, int(rng.lognormvariate(math.log(MEDIAN_MINOR[currency]), 1.1)))
        settled = None
        if n >= open_count:
            late = rng.randint(1, 40) if rng.random() < 0.2 else -rng.randint(0, 5)
            settled = min(TODAY - dt.timedelta(days=1), max(issued, due + dt.timedelta(days=late)))
        disputed = issued + dt.timedelta(days=3) if rng.random() < 0.03 else None
        rows.append(
            (
                tenant,
                debtor,
                f"{debtor}-{n}",
                currency,
                issued,
                due,
                amount,
                0 if settled else amount,
                "settled" if settled else "open",
                settled,
                None,
                disputed,
            )
        )
    return rows


def portfolio(tenants: Sequence[str], debtors: int, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    for i in range(debtors):
        tenant = tenants[i % len(tenants)]
        rows += invoices_of(rng, tenant, f"S{i:07d}", CURRENCIES[i % len(tenants) % len(CURRENCIES)])
    return rows


def scorer_sample(rows: Sequence[tuple[Any, ...]], sample: int = SCORER_SAMPLE) -> list[DebtorHistory]:
    """The histories of the portfolio's first `sample` debtors, for `scorer_rate`."""
    by_debtor: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for r in rows:
        key = (r[0], r[1])
        if key not in by_debtor and len(by_debtor) >= sample:
            break
        by_debtor.setdefault(key, []).append(r)
    return [
        DebtorHistory(
            tenant,
            debtor,
            invs[0][3],
            tuple(
                InvoiceFact(r[2], r[4], r[5], r[6], r[9], r[11], r[10], r[7])
                for r in sorted(invs, key=lambda r: (r[4], r[2]))
            ),
        )
        for (tenant, debtor), invs in by_debtor.items()
    ]


def scorer_rate(histories: list[DebtorHistory], debtor_by_debtor: bool = True) -> dict[str, Any]:
    """Debtors per second through the pure scorer (no I/O, one core): features, the scorecard's
    predictions and reasons, the credit limit and the write-off proposal."""
    scorer = default_scorecard()

    chunks = [histories[start : start + 2_000] for start in range(0, len(histories), 2_000)]

    def timed(score: Any) -> float:
        started = time.perf_counter()
        for chunk in chunks:
            score(chunk)
        return time.perf_counter() - started

    def at_once(chunk: list[DebtorHistory]) -> None:
        scored = scored_columns(scorer, columns_of(chunk), TODAY)
        assert scored is not None
        propose_each(scored)

    def one_by_one(chunk: list[DebtorHistory]) -> None:
        for s in score_debtors(scorer, chunk, TODAY):
            propose(s)

    seconds = timed(at_once)
    rate = {
        "debtors": len(histories),
        "seconds": round(seconds, 3),
        "debtors_per_s": round(len(histories) / seconds, 1),
        "method": "scored_columns + propose_each in chunks of 2,000 (what a business day's chunk runs),"
        " the built-in scorecard, one core, no I/O",
    }
    if debtor_by_debtor:
        one_at_a_time = timed(one_by_one)
        rate["debtor_by_debtor_per_s"] = round(len(histories) / one_at_a_time, 1)
        rate["debtor_by_debtor_method"] = (
            "score_debtors (one Python pass per debtor and invoice), the same chunks"
        )
    return rate


async def prepare_database(ctx: Context, tenants: Sequence[str], rows: list[tuple[Any, ...]]) -> str:
    url = await ctx.infra.create_database("scoring-day")
    await migrate(settings(ctx.infra, url), [NAME])
    connection = await asyncpg.connect(libpq(url))
    try:
        await connection.copy_records_to_table(
            "invoices", schema_name="scoring", columns=INVOICE_COLUMNS, records=rows
        )
        await connection.execute(
            "INSERT INTO scoring.debtors (tenant_id, debtor_id)"
            " SELECT DISTINCT tenant_id, debtor_id FROM scoring.invoices"
        )
        await connection.executemany(
            "INSERT INTO scoring.business_dates (tenant_id, business_date) VALUES ($1, $2)",
            [(t, TODAY - dt.timedelta(days=1)) for t in tenants],
        )
        ends = await _end_offsets(ctx, ScoringProjection.topics)
        await connection.executemany(
            "INSERT INTO scoring.consumer_offsets (group_id, topic, partition, next_offset)"
            " VALUES ($1, $2, $3, $4)",
            [(ScoringProjection.group_id, topic, partition, end) for (topic, partition), end in ends.items()],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return url


async def _end_offsets(ctx: Context, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from contracts.topics import catalogue

    counts = {name: partitions for name, partitions, _ in catalogue()}
    reader = AIOKafkaConsumer(bootstrap_servers=ctx.infra.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        ends = await reader.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await reader.stop()


async def measure_scoring_day(ctx: Context, debtors: int, seed: int = 42) -> dict[str, Any]:
    """(7b) The time the scoring service takes to score again every debtor with an open item on a
    business day, with the raw limits of the same run beside it."""
    tenants = tenants_for(ctx.infra.run_id)
    started = time.perf_counter()
    rows = portfolio(tenants, debtors, seed)
    built_s = time.perf_counter() - started
    sample = scorer_sample(rows)
    scorer = scorer_rate(sample)
    url = await prepare_database(ctx, tenants, rows)
    invoices = len(rows)
    del rows

    workers = os.cpu_count() or 1
    async with open_stack(settings(ctx.infra, url, scoring_workers=workers), [NAME], migrate=False) as stack:
        service = stack.scoring
        await asyncio.wait_for(service.consumer.started.wait(), 120)
        await asyncio.wait_for(service.projection.workers_ready(), 120)  # started with the service
        pids = service.projection.worker_pids()
        ctx.processes.add("scoring_workers", lambda: [p for p in pids if Path(f"/proc/{p}").exists()])

        async def business_day(day: dt.date, label: str) -> dict[str, Any]:
            """Every debtor scored again as of `day`: seconds until the consumer committed past the
            days' records, and until the outbox was empty."""
            ticks = [day_started(t, day, dt.datetime.now(dt.UTC)) for t in tenants]
            published_before = service.relay.published
            cpu_before = ctx.processes.cpu()
            with contextlib.ExitStack() as profiling:
                if ctx.profiler:
                    profiling.enter_context(ctx.profiler.attach(os.getpid(), label))
                    for n, pid in enumerate(pids):
                        profiling.enter_context(ctx.profiler.attach(pid, f"{label}-worker-{n}"))
                clock = time.perf_counter()
                await stack.event_log.publish(ticks)
                deadline = clock + 600 + debtors / 200
                await caught_up_by(
                    service.consumer, deadline, f"scoring's business day for {debtors} debtors"
                )
                scored_at = time.perf_counter()
                cpu = cpu_delta(cpu_before, ctx.processes.cpu())
            while await outbox_rows(stack.sessions, scoring_store.runtime) > 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError("the scoring outbox relay did not publish everything")
                await asyncio.sleep(0.1)
            return {
                "seconds": scored_at - clock,
                "published_seconds": time.perf_counter() - clock,
                "score_events_published": service.relay.published - published_before,
                "cpu_seconds": cpu,
                "load_average": list(os.getloadavg()),
            }

        # The first day scores every debtor for the first time: every score is published. The
        # next day, the figure, scores them all again and publishes only the material changes.
        first = await business_day(TODAY - dt.timedelta(days=1), "scoring-first-day")
        day = await business_day(TODAY, "scoring-day")
    # The same limit again: this machine's speed can move by half within a run, and the figure is
    # only comparable with a limit measured under the same conditions.
    scorer_after = scorer_rate(sample, debtor_by_debtor=False)

    connection = await asyncpg.connect(libpq(url))
    try:
        scored = await connection.fetchval("SELECT count(*) FROM scoring.scores WHERE as_of = $1", TODAY)
        proposed = await connection.fetchval("SELECT count(*) FROM scoring.scores WHERE write_off_proposed")
        columns = [c.name for c in scoring_store.scores.columns if c.name != "updated_at"]
        sample = await connection.fetch(
            f"SELECT {', '.join(columns)} FROM scoring.scores LIMIT {min(100_000, max(1, scored))}"
        )
        await connection.execute("CREATE SCHEMA IF NOT EXISTS bench_copy")
        try:
            copy = await copy_rate(connection, "scores", columns, [tuple(r) for r in sample], 1.5, "scoring")
        finally:
            await connection.execute("DROP SCHEMA IF EXISTS bench_copy CASCADE")
    finally:
        await connection.close()
    seconds = day["seconds"]
    rate = scored / seconds if seconds else 0.0
    first_rate = scored / first["seconds"] if first["seconds"] else 0.0
    copy_per_s = copy.as_json()["records_per_s"]
    limit = min(scorer["debtors_per_s"], copy_per_s)
    return {
        "figure": round(seconds, 2),
        "unit": "s per business day",
        "debtors": debtors,
        "invoices": invoices,
        "tenants": len(tenants),
        "business_date": TODAY.isoformat(),
        "debtors_scored": scored,
        "write_offs_proposed": proposed,
        "score_events_published": day["score_events_published"],
        "seconds": round(seconds, 3),
        "published_seconds": round(day["published_seconds"], 3),
        "debtors_per_s": round(rate, 1),
        "microseconds_per_debtor": round(1e6 / rate, 1) if rate else None,
        "seconds_for_1m_debtors": round(TARGET_DEBTORS / rate, 1) if rate else None,
        "extrapolated": debtors < TARGET_DEBTORS,
        "cpu_seconds": day["cpu_seconds"],
        "load_average": day["load_average"],
        "first_day": {
            "seconds": round(first["seconds"], 3),
            "published_seconds": round(first["published_seconds"], 3),
            "score_events_published": first["score_events_published"],
            "debtors_per_s": round(first_rate, 1),
            "microseconds_per_debtor": round(1e6 / first_rate, 1) if first_rate else None,
            "seconds_for_1m_debtors": round(TARGET_DEBTORS / first_rate, 1) if first_rate else None,
            "cpu_seconds": first["cpu_seconds"],
            "load_average": first["load_average"],
        },
        "scoring_workers": len(pids),
        "scorer_alone": scorer,
        "scorer_alone_after_the_days": scorer_after,
        "copy_scores": copy.as_json(columns=columns),
        "binding_limit": {
            "name": "scorer_alone" if scorer["debtors_per_s"] <= copy_per_s else "postgres_copy_scores",
            "figure": round(limit, 1),
        },
        "ratio_to_limit": round(rate / limit, 3) if limit else None,
        "target": f"one business day for {TARGET_DEBTORS:,} debtors in under {TARGET_SECONDS:.0f} s",
        "state": (
            f"{debtors:,} synthetic debtors, {invoices:,} invoices generated in {built_s:.1f} s, COPYed in"
        ),
    }


async def measure_scoring_facts(ctx: Context, ledger_facts_per_s: float | None) -> dict[str, Any]:
    """(7a) Records per second the scoring service applies from its topics on a fresh database,
    features and scores of every debtor touched kept up to date, beside the rate at which the ledger
    published those facts (`ledger_facts_per_s`: balance facts published / seconds, in (2))."""
    url = await ctx.infra.create_database("scoring-facts")
    records = await topic_records(ctx.infra, ScoringProjection.topics)
    batches_before = batch_metrics(ScoringProjection.group_id)
    async with open_stack(settings(ctx.infra, url), [NAME], background=False) as stack:
        service = stack.scoring
        cpu_before = ctx.processes.cpu()
        with contextlib.ExitStack() as profiling:
            if ctx.profiler:
                profiling.enter_context(ctx.profiler.attach(os.getpid(), "scoring-facts"))
            await stack.start_background()
            await asyncio.wait_for(service.consumer.started.wait(), 120)
            assigned = time.perf_counter()
            deadline = assigned + 600 + records / 50
            await caught_up_by(service.consumer, deadline, f"scoring with {records} records")
            seconds = time.perf_counter() - assigned
        cpu = cpu_delta(cpu_before, ctx.processes.cpu())
        applied, published = service.consumer.applied, service.relay.published
    batches = metrics_delta(batches_before, batch_metrics(ScoringProjection.group_id))
    connection = await asyncpg.connect(libpq(url))
    try:
        invoices = await connection.fetchval("SELECT count(*) FROM scoring.invoices")
        scores = await connection.fetchval("SELECT count(*) FROM scoring.scores")
    finally:
        await connection.close()
    rate = applied / seconds if seconds else 0.0
    return {
        "figure": round(rate, 1),
        "unit": "records/s",
        "records": records,
        "records_read_per_s": round(records / seconds, 1) if seconds else None,
        "applied": applied,
        "duplicates": records - applied,
        "seconds": round(seconds, 3),
        "invoices": invoices,
        "scores": scores,
        "score_events_published_meanwhile": published,
        "batches": int(batches["count"]),
        "records_per_batch": round(records / batches["count"], 1) if batches["count"] else None,
        "batch_seconds_mean": round(batches["sum"] / batches["count"], 4) if batches["count"] else None,
        "cpu_seconds": cpu,
        "ledger_facts_per_s": ledger_facts_per_s,
        "ratio_to_ledger": round(rate / ledger_facts_per_s, 3) if ledger_facts_per_s else None,
    }


def summary_lines(measures: dict[str, Any]) -> list[str]:
    lines = []
    facts = measures.get("scoring_facts")
    if facts and "figure" in facts:
        ledger = facts.get("ledger_facts_per_s")
        lines.append(
            f"  (7a) scoring facts  {facts['figure']:>10,.0f} rec/s   ({facts['applied']:,} applied and"
            f" {facts['duplicates']:,} repeats dropped in {facts['seconds']:.1f} s, {facts['invoices']:,}"
            f" invoices, {facts['scores']:,} scores)"
            + (
                f"; the ledger published facts at {ledger:,.0f}/s, ratio {facts['ratio_to_ledger']:.2f}"
                if ledger
                else ""
            )
        )
    day = measures.get("scoring_day")
    if day and "figure" in day:
        limit = day["binding_limit"]
        lines.append(
            f"  (7b) scoring day    {day['seconds']:>10.1f} s       ({day['debtors_scored']:,} scored,"
            f" {day['debtors_per_s']:,.0f} debtors/s, {day['microseconds_per_debtor']:,.0f} us each,"
            f" {day['score_events_published']:,} events, {day.get('scoring_workers', 0)} worker processes;"
            f" 1M debtors: {day['seconds_for_1m_debtors']:,.0f} s"
            + (" extrapolated" if day["extrapolated"] else "")
            + f"; scorer alone {day['scorer_alone']['debtors_per_s']:,.0f}/s"
            f" ({day['scorer_alone'].get('debtor_by_debtor_per_s', 0):,.0f}/s debtor by debtor;"
            f" {day.get('scorer_alone_after_the_days', {}).get('debtors_per_s', 0):,.0f}/s after the days),"
            f" COPY of scores {day['copy_scores']['records_per_s']:,.0f}/s;"
            f" {day['ratio_to_limit']:.2f} x {limit['name']})"
        )
        if first := day.get("first_day"):
            lines.append(
                f"       the first day  {first['seconds']:>10.1f} s"
                f"       ({first['debtors_per_s']:,.0f} debtors/s,"
                f" every score published: {first['score_events_published']:,} events;"
                f" 1M debtors: {first['seconds_for_1m_debtors']:,.0f} s"
                + (" extrapolated" if day["extrapolated"] else "")
                + ")"
            )
    return lines


async def _main(debtors: int, seed: int, profile: Path | None) -> dict[str, Any]:
    async with standalone(profile) as ctx:
        measure = await measure_scoring_day(ctx, debtors, seed)
        measure["memory"] = ctx.processes.memory()
        if profiles := summaries(ctx.profiler):
            measure["profiles"] = profiles
        return measure


def main() -> None:

    parser = argparse.ArgumentParser(prog="python -m bench.scoring_day", description=__doc__.split("\n")[0])
    parser.add_argument("--debtors", type=int, default=DAY_DEBTORS["tiny"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="write the figures as JSON to this file")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the consumer and workers into DIR")
    args = parser.parse_args()
    entry.prepare()
    measure = asyncio.run(_main(args.debtors, args.seed, args.profile))
    print("\n".join(summary_lines({"scoring_day": measure})))
    print(orjson.dumps(measure, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
