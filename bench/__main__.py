"""`python -m bench`: the ledger benchmark on a Kafka broker and a PostgreSQL started for the run.

python -m bench --size small                  # about 130,000 events
python -m bench --size full --seed 7          # at least 2,000,000 events
python -m bench --size tiny --profile var/profiles
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

from bench import entry
from bench.infra import own_infrastructure
from bench.portfolio import SIZES
from bench.report import summary
from bench.run import Options, run_benchmark


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the Arrears ledger.")
    parser.add_argument("--size", choices=list(SIZES), default="small", help="portfolio size (default small)")
    parser.add_argument("--debtors", type=int, help="debtors across all tenants (overrides the size's)")
    parser.add_argument("--invoices", type=int, help="invoices issued in the window (overrides the size's)")
    parser.add_argument("--seed", type=int, default=42, help="the portfolio's random seed")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients for the ingest")
    parser.add_argument("--batch", type=int, default=1000, help="events per POST /v1/events")
    parser.add_argument(
        "--api-processes", type=int, default=2, help="ledger API processes the ingest posts to (default 2)"
    )
    parser.add_argument(
        "--ledger-members",
        type=int,
        default=2,
        help="ledger consumer processes for (2) projection and (3) replay (default 2)",
    )
    parser.add_argument("--reads", type=int, default=300, help="requests per read measure")
    parser.add_argument("--raw-records", type=int, default=500_000, help="records used for the Kafka limits")
    parser.add_argument(
        "--day-debtors", type=int, help="debtors for (4), the dunning business day (default: the size's)"
    )
    parser.add_argument(
        "--scoring-day-debtors",
        type=int,
        help="debtors for (7b), the scoring business day (default: the size's)",
    )
    parser.add_argument(
        "--latency-probes",
        type=int,
        help="probe payments for the payment-to-case latency (overrides the size's)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="background ERP events/s during the latency probes (overrides the size's)",
    )
    parser.add_argument(
        "--latency-poll",
        choices=("api", "db"),
        default="api",
        help="poll the dunning API or its tables (default api)",
    )
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<timestamp>.json)")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of each stage to this folder")
    args = parser.parse_args(argv)
    return Options(
        size=args.size,
        seed=args.seed,
        debtors=args.debtors,
        invoices=args.invoices,
        clients=args.clients,
        batch=args.batch,
        api_processes=args.api_processes,
        ledger_members=args.ledger_members,
        reads=args.reads,
        raw_records=args.raw_records,
        out=args.out,
        profile=args.profile,
        day_debtors=args.day_debtors,
        scoring_day_debtors=args.scoring_day_debtors,
        latency_probes=args.latency_probes,
        latency_rate=args.latency_rate,
        latency_poll=args.latency_poll,
        command=shlex.join(["python", "-m", "bench", *argv]),
    )


def main(argv: list[str] | None = None) -> None:
    options = parse(sys.argv[1:] if argv is None else argv)
    entry.prepare()
    with own_infrastructure() as infra:
        results = asyncio.run(run_benchmark(options, infra))
    print(summary(results))


if __name__ == "__main__":
    main()
