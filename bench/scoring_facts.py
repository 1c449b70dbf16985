"""(7a) alone: the portfolio of a size posted to the ledger's topics, projected by the ledger (its
balance facts published), then the scoring service catching up on those topics on a fresh database,
beside the rate at which the ledger published the facts in the same run.

    python -m bench.scoring_facts --size medium [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from bench import entry, limits, pipeline, scoring_day
from bench.portfolio import SIZES, generate, spec_for
from bench.profiling import summaries
from services.runtime.collector import settle as settle_collector


async def _main(size: str, seed: int, profile: Path | None) -> dict[str, Any]:
    async with pipeline.standalone(profile) as ctx:
        portfolio = generate(spec_for(size, seed=seed))
        settle_collector()  # the portfolio, kept to the end, out of the collector's sight as in `bench.run`
        await limits.produce_batched(ctx.infra.bootstrap_servers, portfolio.events)
        ledger_url = await ctx.infra.create_database("ledger")
        projection = await pipeline.measure_projection(ctx, ledger_url, "projection")
        published_per_s = projection["facts_published"] / max(projection["outbox_drained_seconds"], 1e-9)
        measure = await scoring_day.measure_scoring_facts(ctx, round(published_per_s, 1))
        measure["size"] = size
        measure["ledger_projection"] = {
            k: projection.get(k)
            for k in ("figure", "unit", "seconds", "facts_published", "outbox_drained_seconds")
        }
        measure["memory"] = ctx.processes.memory()
        if profiles := summaries(ctx.profiler):
            measure["profiles"] = profiles
        return measure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_facts", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the ledger and scoring into DIR")
    args = parser.parse_args()
    entry.prepare()
    measure = asyncio.run(_main(args.size, args.seed, args.profile))
    print("\n".join(scoring_day.summary_lines({"scoring_facts": measure})))
    print(orjson.dumps(measure, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        args.out.write_bytes(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
