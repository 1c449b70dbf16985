"""(8) Policy what-if: seconds to replay a candidate dunning policy over a tenant's recorded history
beside the published one (`arrears policy simulate`, `services.dunning.replay`), for N debtors.

The history: one tenant, the default policy from 2024-12-01, a business day every day from 2024-12-01
to 2025-03-31, and per debtor one to three invoices (issued in December to February, terms 14 to 45
days, log-normal amounts) of which about six in ten are paid, some late, some never. A few hundred
distinct debtors ("templates") are encoded with the real contracts and cloned under other debtor ids
by renaming the id in the encoded records, which are produced to the broker with the times a live
run would have given them (a fact during its day, a clock record at its day's start). The window is
2025-02-01 to 2025-03-31; the candidate brings the formal notice forward to 9 days and has no agency
placement.

Timed: the replay from the start of the topics (policies and clock read whole, every partition of
the four debtor topics read, decoded, replayed debtor by debtor and dropped), in one process and with
two worker processes, each with its CPU seconds (the workers' own for the second) and peak memory
(the bench process's, which holds the harness too, and each worker's), and whether both reports are
the same. The raw limit beside it, in the same run: reading the same partitions without decoding
anything (`EventLog.read_partition`), the least any replay of that log can take. `--report FILE`
writes the report (tenant renamed "whatif") to compare the report of the same history across
versions.

`python -m bench.policy_whatif --debtors 20000` runs this measure alone on a broker started for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import resource
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench import entry
from bench.pipeline import Context, standalone
from bench.processes import children_of
from contracts.clock import BusinessDayStarted, clock_event_id
from contracts.money import Money
from contracts.policy import DunningPolicy, PolicyPublished
from contracts.receivables import ReceivableBalance
from contracts.registry import encode_event, make_event
from contracts.topics import RECEIVABLES
from services.dunning.policies import default_policy
from services.dunning.replay import DEBTOR_TOPICS, simulate
from services.dunning.simulation import Window, report_json
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from services.runtime.settings import Settings

WHATIF_DEBTORS = {"tiny": 300, "small": 10_000, "medium": 50_000, "full": 100_000}
"""Debtors replayed per `--size`; a million is extrapolated from the rate (see docs/benchmarks.md)."""
TEMPLATES = 500
FIRST_DAY, LAST_DAY = dt.date(2024, 12, 1), dt.date(2025, 3, 31)
WINDOW = Window(dt.date(2025, 2, 1), LAST_DAY)
DAY_MS = 1_000
T0_MS = 1_733_011_200_000  # 2024-12-01T00:00Z


def day_ms(day: dt.date) -> int:
    """When the (compressed) business day started in the log."""
    return T0_MS + (day - FIRST_DAY).days * DAY_MS


def candidate() -> DunningPolicy:
    raw = default_policy().model_dump(mode="json")
    raw["steps"] = [s for s in raw["steps"] if s["name"] != "agency_placement"]
    for step in raw["steps"]:
        if step["name"] == "formal_notice":
            step["days"] = 9
    return DunningPolicy.model_validate(raw)


def _message(tenant: str, debtor: str | None, data: Any, event_id: str, at_ms: int, kind: str) -> Message:
    event = make_event(
        kind,
        data,
        event_id=event_id,
        tenant_id=tenant,
        debtor_id=debtor,
        source="bench",
        time=dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC),
    )
    return Message(data.TOPIC, event.key.encode(), encode_event(event), timestamp_ms=at_ms)


def _balance(
    invoice: str,
    issued: dt.date,
    due: dt.date,
    amount: int,
    outstanding: int,
    change: int,
    on: dt.date,
    cause: str,
) -> ReceivableBalance:
    eur = "EUR"
    return ReceivableBalance(
        invoice_id=invoice,
        issue_date=issued,
        due_date=due,
        amount=Money(amount_minor=amount, currency=eur),
        outstanding=Money(amount_minor=outstanding, currency=eur),
        change=Money(amount_minor=change, currency=eur),
        status="open" if outstanding else "settled",
        effective_date=on,
        cause_type=cause,
        cause_id=f"{invoice}:{cause}",
    )


def template(tenant: str, token: str, rng: random.Random) -> list[Message]:
    """One debtor's balance facts, its debtor id `token` (renamed in every clone)."""
    out = []
    for n in range(rng.randint(1, 3)):
        invoice = f"{token}-I{n}"
        issued = FIRST_DAY + dt.timedelta(days=rng.randint(0, 80))
        due = issued + dt.timedelta(days=rng.choice((14, 30, 45)))
        amount = max(1_000, int(rng.lognormvariate(math.log(150_000), 1.0)))
        facts = [
            (issued, _balance(invoice, issued, due, amount, amount, amount, issued, "ar.invoice.issued.v1"))
        ]
        if rng.random() < 0.6:
            paid_on = due + dt.timedelta(days=rng.randint(-5, 60))
            if paid_on <= LAST_DAY:
                cause = "ar.payment.received.v1"
                facts.append((paid_on, _balance(invoice, issued, due, amount, 0, -amount, paid_on, cause)))
        for k, (on, data) in enumerate(facts):
            kind = "ar.receivable.opened.v1" if k == 0 else "ar.receivable.settled.v1"
            out.append(_message(tenant, token, data, f"{invoice}-{k}", day_ms(on) + 1 + k, kind))
    return out


def history(tenant: str, debtors: int, seed: int) -> tuple[list[Message], list[Message]]:
    """(policy and clock records, debtor records) of the tenant."""
    rng = random.Random(seed)
    tenant_records = [
        _message(
            tenant,
            None,
            PolicyPublished(version=1, effective_from=FIRST_DAY, document=default_policy()),
            f"policy:{tenant}:1",
            T0_MS - 1,
            "collections.policy.published.v1",
        )
    ]
    day = FIRST_DAY
    while day <= LAST_DAY:
        started = BusinessDayStarted(business_date=day)
        tenant_records.append(
            _message(tenant, None, started, clock_event_id(tenant, day), day_ms(day), started.TYPES[0])
        )
        day += dt.timedelta(days=1)
    templates = [template(tenant, f"tpl{n:05d}x", rng) for n in range(min(TEMPLATES, debtors))]
    debtor_records: list[Message] = []
    for n in range(debtors):
        records = templates[n % len(templates)]
        token = f"tpl{n % len(templates):05d}x".encode()
        name = f"W{n:08d}".encode()
        debtor_records.extend(
            Message(
                m.topic,
                m.key.replace(token, name) if m.key else None,
                m.value.replace(token, name),
                (),
                m.timestamp_ms,
            )
            for m in records
        )
    return tenant_records, debtor_records


async def raw_read(log: KafkaLog) -> tuple[int, float]:
    """(records, seconds) reading every partition of the debtor topics, nothing decoded."""
    started = time.perf_counter()
    records = 0
    for partition in range(RECEIVABLES.partitions):
        async for chunk in log.read_partition(DEBTOR_TOPICS, partition):
            records += len(chunk)
    return records, time.perf_counter() - started


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _reset_peak_rss() -> None:
    """Start VmHWM (the process's peak RSS) over from its current RSS (Linux 4.0+)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def within_margins(exact: dict[str, Any], estimate: dict[str, Any]) -> tuple[int, int]:
    """How many of the sampled report's figures (each command row, placements, legal actions and
    payments, each side and the difference) hold the exact figure within their margin, of how many."""
    pairs = [
        (exact_row, row)
        for key in ("commands", "paid_within")
        for exact_row, row in zip(exact[key], estimate[key], strict=False)
    ] + [(exact[key], estimate[key]) for key in ("agency_placements", "legal_actions")]
    held = total = 0
    for exact_row, row in pairs:
        for side in ("current", "candidate", "difference"):
            total += 1
            held += abs(row[side] - exact_row[side]) <= row["margin"][side]
    return held, total


async def produce_history(log: KafkaLog, tenant: str, debtors: int, seed: int) -> tuple[float, int]:
    """Generate the tenant's history and produce it: seconds to generate, debtor records produced. The
    harness's copy is gone before anything is timed: not the replay's memory, nor its collector's work."""
    generated = time.perf_counter()
    tenant_records, debtor_records = history(tenant, debtors, seed)
    generated_s = time.perf_counter() - generated
    for start in range(0, len(debtor_records), 20_000):
        await log.publish(debtor_records[start : start + 20_000])
    await log.publish(tenant_records)
    return generated_s, len(debtor_records)


async def timed_sample(
    log: KafkaLog, tenant: str, settings: Settings, sample: float
) -> tuple[dict[str, Any], float, float]:
    """The what-if report estimated from a sample, in two workers; its wall and CPU seconds (the
    workers' and this process's)."""
    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu_s()
    report = await simulate(log, tenant, candidate(), WINDOW, workers=2, settings=settings, sample=sample)
    seconds = time.perf_counter() - started
    return report_json(report), seconds, _children_cpu_s() - children + time.process_time() - cpu


async def measure_sampled_whatif(ctx: Context, debtors: int, seed: int, sample: float) -> dict[str, Any]:
    """The sampled what-if alone (no exact replay to compare with): for sizes the exact one takes too
    long at, such as a million debtors."""
    tenant = f"whatif-{uuid.uuid4().hex[:8]}"
    log_settings = Settings(kafka_bootstrap_servers=ctx.infra.bootstrap_servers)
    log = KafkaLog(ctx.infra.bootstrap_servers)
    await log.start()
    try:
        generated_s, produced = await produce_history(log, tenant, debtors, seed)
        records, raw_s = await raw_read(log)
        _reset_peak_rss()
        estimate, seconds, cpu_s = await timed_sample(log, tenant, log_settings, sample)
    finally:
        await log.stop()
    return {
        "debtors": debtors,
        "tenant_records": produced,
        "records_read": records,
        "generated_seconds": round(generated_s, 1),
        "sample": sample,
        "debtors_replayed": estimate["sample"]["debtors_replayed"],
        "debtors_estimate": estimate["debtors"],
        "seconds_two_workers": round(seconds, 2),
        "cpu_seconds": round(cpu_s, 2),
        "binding_limit": {
            "what": "raw read of the debtor topics",
            "seconds": round(raw_s, 2),
            "records_per_s": round(records / raw_s, 1),
        },
        "ratio_to_limit": round(raw_s / seconds, 3),
        "bench_process_peak_mb": _status_mb("VmHWM"),
        "commands": estimate["commands"],
    }


async def measure_policy_whatif(
    ctx: Context, debtors: int, seed: int, report_path: Path | None = None, sample: float = 0.05
) -> dict[str, Any]:
    tenant = f"whatif-{uuid.uuid4().hex[:8]}"
    bootstrap = ctx.infra.bootstrap_servers
    log_settings = Settings(kafka_bootstrap_servers=bootstrap)
    log = KafkaLog(bootstrap)
    # The replay's worker processes: the bench process's children but those already running.
    harness = {ctx.infra.broker_pid(), ctx.infra.postmaster_pid(), *children_of(os.getpid())}
    ctx.processes.add("whatif_workers", lambda: [p for p in children_of(os.getpid()) if p not in harness])
    await log.start()
    try:
        generated_s, produced = await produce_history(log, tenant, debtors, seed)
        records, raw_s = await raw_read(log)
        figures: dict[str, Any] = {}
        reports = []
        for workers in (1, 2):
            _reset_peak_rss()
            rss_before = _status_mb("VmRSS")
            started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu_s()
            report = await simulate(log, tenant, candidate(), WINDOW, workers=workers, settings=log_settings)
            figures[f"workers_{workers}"] = round(time.perf_counter() - started, 2)
            reports.append(report_json(report))
            # On a shared machine the wall time says how busy it was; the CPU time what it costs.
            if workers == 1:
                cpu_s = time.process_time() - cpu
                peak_one = {
                    "bench_process_before_mb": rss_before,
                    "bench_process_peak_mb": _status_mb("VmHWM"),
                }
            else:
                workers_cpu_s = _children_cpu_s() - children
                parent_cpu_s = time.process_time() - cpu
        # The same what-if estimated from a sample of the debtors.
        estimate, sampled_s, sampled_cpu_s = await timed_sample(log, tenant, log_settings, sample)
    finally:
        await log.stop()
    workers_peak = ctx.processes.memory()["whatif_workers"]["peak_rss_max_process_bytes"] or 0
    ctx.processes.forget("whatif_workers")
    if report_path is not None:
        written = orjson.dumps({**reports[0], "tenant": "whatif"}, option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(report_path.write_bytes, written)
    best = min(figures.values())
    per_debtor_cpu_s = cpu_s / debtors
    return {
        "debtors": debtors,
        "debtors_in_scope": report.debtors,
        "reports_identical": reports[0] == reports[1],
        "tenant_records": produced,
        "records_read": records,
        "days": (LAST_DAY - FIRST_DAY).days + 1,
        "window": [WINDOW.start.isoformat(), WINDOW.end.isoformat()],
        "generated_seconds": round(generated_s, 1),
        "seconds": figures,
        "figure": round(debtors / best, 1),
        "unit": "debtors/s",
        "commands_current": sum(report.current.commands.values()),
        "commands_candidate": sum(report.candidate.commands.values()),
        "binding_limit": {
            "what": "raw read of the debtor topics",
            "seconds": round(raw_s, 2),
            "records_per_s": round(records / raw_s, 1),
        },
        "ratio_to_limit": round(raw_s / best, 3),
        "million_debtors_seconds": round(1_000_000 / (debtors / best)),
        "cpu_seconds_one_process": round(cpu_s, 2),
        "cpu_seconds_two_workers": round(workers_cpu_s, 2),
        "cpu_seconds_two_workers_parent": round(parent_cpu_s, 2),
        "cpu_ms_per_debtor": round(per_debtor_cpu_s * 1000, 3),
        "million_debtors_cpu_seconds": round(per_debtor_cpu_s * 1_000_000),
        # Two workers on two otherwise idle cores: the CPU split evenly (each debtor is replayed alone).
        "million_debtors_two_cores_seconds": round(per_debtor_cpu_s * 1_000_000 / 2),
        "peak_memory": {**peak_one, "worker_peak_mb": round(workers_peak / 2**20, 1)},
        "sample": _sample_figures(
            sample, estimate, reports[0], sampled_s, sampled_cpu_s, debtors, records, raw_s, per_debtor_cpu_s
        ),
    }


def _sample_figures(
    fraction: float,
    estimate: dict[str, Any],
    exact: dict[str, Any],
    seconds: float,
    cpu_s: float,
    debtors: int,
    records: int,
    raw_s: float,
    per_debtor_cpu_s: float,
) -> dict[str, Any]:
    held, total = within_margins(exact, estimate)
    replayed = estimate["sample"]["debtors_replayed"]
    # A million debtors sampled alike: every record still read (the raw limit, scaled), the sampled
    # debtors' share decoded and decided, split over two idle cores.
    million_s = raw_s * 1_000_000 / debtors + fraction * 1_000_000 * per_debtor_cpu_s / 2
    return {
        "fraction": fraction,
        "debtors_replayed": replayed,
        "seconds_two_workers": round(seconds, 2),
        "cpu_seconds": round(cpu_s, 2),
        "figures_within_margin": f"{held} of {total}",
        "debtors_estimate": estimate["debtors"],
        "debtors_exact": exact["debtors"],
        "million_debtors_two_cores_seconds": round(million_s),
        "records_read_per_s": round(records / raw_s, 1),
    }


def summary_line(measure: dict[str, Any]) -> str:
    if "figure" not in measure:
        return f"  (8) policy what-if: {measure.get('status', '-')}"
    sample = measure["sample"]
    sampled = (
        f"; on a {sample['fraction']:.0%} sample ({sample['debtors_replayed']:,} debtors) in two workers"
        f" {sample['seconds_two_workers']:.1f} s, {sample['cpu_seconds']:.1f} CPU s, the exact figures within"
        f" the margins for {sample['figures_within_margin']}; a million debtors sampled alike"
        f" ~{sample['million_debtors_two_cores_seconds']:,} s on two idle cores"
    )
    seconds = ", ".join(f"{k.replace('_', ' ')}: {v:.1f} s" for k, v in measure["seconds"].items())
    limit = measure["binding_limit"]
    return (
        f"  (8) policy what-if {measure['figure']:>10,.0f} debtors/s ({measure['debtors']:,} debtors,"
        f" {measure['tenant_records']:,} records, {measure['days']} days; {seconds}); raw read of the"
        f" topics {limit['seconds']:.1f} s ({limit['records_per_s']:,.0f} records/s):"
        f" {measure['ratio_to_limit']:.2f} x the limit;"
        f" a million debtors ~{measure['million_debtors_seconds']:,} s at this rate,"
        f" {measure['million_debtors_cpu_seconds']:,} CPU s ({measure['cpu_ms_per_debtor']} ms per debtor),"
        f" ~{measure['million_debtors_two_cores_seconds']:,} s on two idle cores" + sampled
    )


async def _main(
    debtors: int, seed: int, report_path: Path | None, sample: float, exact: bool
) -> dict[str, Any]:
    async with standalone(None) as ctx:
        if not exact:
            return await measure_sampled_whatif(ctx, debtors, seed, sample)
        return await measure_policy_whatif(ctx, debtors, seed, report_path, sample)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy_whatif", description=__doc__.split("\n")[0])
    parser.add_argument("--debtors", type=int, default=WHATIF_DEBTORS["tiny"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="write the figures as JSON to this file")
    parser.add_argument("--report", type=Path, help="write the what-if report as JSON to this file")
    parser.add_argument(
        "--sample", type=float, default=0.05, help="the fraction of debtors of the sampled run"
    )
    parser.add_argument(
        "--sample-only", action="store_true", help="time the sampled what-if alone (no exact replay)"
    )
    args = parser.parse_args()
    entry.prepare()
    measure = asyncio.run(_main(args.debtors, args.seed, args.report, args.sample, not args.sample_only))
    if not args.sample_only:
        print(summary_line(measure))
    print(orjson.dumps(measure, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
