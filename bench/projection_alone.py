"""(2) alone: the portfolio of a size posted to the ledger's topics, then projected by the ledger's
consumers on a fresh database, with the CPU, rows written per table, memory and (with `--profile`)
a py-spy profile of the first consumer's process. No raw limits: `python -m bench` measures those
beside the same figure.

    python -m bench.projection_alone --size full [--members 2] [--profile DIR] [--statements] [--out FILE]

The consumers keep as many decoded debtor states between batches as `ARREARS_LEDGER_STATE_CACHE`
says (the service's setting; 10,000 by default).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from bench import entry, limits, pipeline, statements
from bench.portfolio import SIZES, generate, spec_for
from bench.profiling import summaries
from services.runtime.collector import settle as settle_collector
from services.runtime.settings import Settings


async def _main(
    size: str, seed: int, members: int, profile: Path | None, with_statements: bool
) -> dict[str, Any]:
    async with pipeline.standalone(profile, statements.SETTINGS if with_statements else None) as ctx:
        portfolio = generate(spec_for(size, seed=seed))
        settle_collector()  # the portfolio, kept to the end, out of the collector's sight as in `bench.run`
        await limits.produce_batched(ctx.infra.bootstrap_servers, portfolio.events)
        ledger_url = await ctx.infra.create_database("ledger")
        if with_statements:
            await statements.reset(ledger_url)
        measure = await pipeline.measure_projection(ctx, ledger_url, "projection", members=members)
        if with_statements:
            measure["statements"] = await statements.recorded(ledger_url)
        measure["size"] = size
        measure["state_cache"] = Settings().ledger_state_cache
        measure["memory"] = ctx.processes.memory()
        if profiles := summaries(ctx.profiler):
            measure["profiles"] = profiles
        return measure


_GROUP_NAMES = {
    "bench": "the first consumer's process (it holds the portfolio)",
    "projection_member_2": "the second consumer",
    "postgres": "PostgreSQL",
    "kafka": "Kafka",
}


def summary_lines(measure: dict[str, Any]) -> list[str]:
    records = measure["records"]
    cpu = measure["cpu_seconds"]
    ledger = sum(seconds for name, seconds in cpu.items() if name not in ("kafka", "postgres"))
    tables = measure["database"]["tables"]
    written = {
        name: (t["inserts"] + t["updates"]) / records
        for name, t in sorted(tables.items())
        if t["inserts"] + t["updates"] > records / 100
    }
    per_record = {name: seconds / records * 1e6 for name, seconds in cpu.items()}
    cache = measure.get("state_cache")
    cached = f", each keeping up to {cache:,} debtor states decoded" if cache is not None else ""
    lines = [
        f"  (2) projection {measure['figure']:>10,.0f} events/s"
        f" ({records:,} records in {measure['seconds']:.1f} s, {measure['members']} consumer(s){cached})",
        f"      CPU per record: ledger processes {ledger / records * 1e6:.0f} us,"
        f" PostgreSQL {per_record.get('postgres', 0):.0f} us, Kafka {per_record.get('kafka', 0):.0f} us",
        "      rows written per event: " + ", ".join(f"{name} {rows:.2f}" for name, rows in written.items()),
        "      updates written on the same page (HOT): "
        + ", ".join(
            f"{name} {t['hot_updates'] / t['updates']:.0%}"
            for name, t in sorted(tables.items())
            if t["updates"] > records / 100
        ),
        "      peak memory (PSS): "
        + ", ".join(
            f"{_GROUP_NAMES.get(name, name)} {entry['peak_pss_sum_bytes'] / 1e6:,.0f} MB"
            for name, entry in measure.get("memory", {}).items()
            if entry.get("peak_pss_sum_bytes")
        ),
    ]
    return lines + statements.summary_lines(measure.get("statements", []))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.projection_alone", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--members", type=int, default=2, help="ledger consumer processes (default 2)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--profile", type=Path, help="py-spy profile of the first consumer into DIR")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="record PostgreSQL's time per statement (pg_stat_statements; the bench's own server only)",
    )
    args = parser.parse_args()
    entry.prepare()
    measure = asyncio.run(_main(args.size, args.seed, args.members, args.profile, args.statements))
    print("\n".join(summary_lines(measure)))
    if args.out:
        args.out.write_bytes(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
