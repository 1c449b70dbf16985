"""`python -m chaos`: fault scenarios on real Arrears processes, a Kafka broker and a PostgreSQL
started for the run. Exits non-zero if any scenario lost, applied twice or sent twice anything.

python -m chaos --short                          # every scenario, a few minutes in all (CI)
python -m chaos                                  # the long run (at least 100 kills), by hand
python -m chaos --scenario kill --scenario poison --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.infra import machine
from chaos.processes import REPO, now
from chaos.report import Outcome, summary, table
from chaos.scenarios import SCENARIOS, Infrastructure, run_scenario


@dataclass(frozen=True)
class Options:
    scenarios: list[str]
    mode: str
    seed: int
    out: Path
    argv: list[str]
    send_lease_s: float = 20.0


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description="Fault scenarios on real Arrears processes."
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="a scenario to run (repeatable; default: all of them, in order)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--short", action="store_const", const="short", dest="mode", help="a few minutes in all"
    )
    length.add_argument(
        "--long", action="store_const", const="long", dest="mode", help="the operator's run (default)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the stream's and the faults' random seed")
    parser.add_argument("--out", type=Path, help="results and logs (default var/chaos/<timestamp>)")
    parser.add_argument(
        "--send-lease",
        type=float,
        default=20.0,
        help="the notifier's send lease in seconds, ARREARS_SEND_LEASE_S (default 20)",
    )
    args = parser.parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        scenarios=args.scenario or list(SCENARIOS),
        mode=args.mode or "long",
        seed=args.seed,
        out=args.out or REPO / "var" / "chaos" / stamp,
        argv=argv,
        send_lease_s=args.send_lease,
    )


def write_results(options: Options, outcomes: list[Outcome], started_at: str, wall_s: float) -> None:
    """`results.json` in the run's folder: written after every scenario, so a run cut short keeps
    what it found."""
    results = {
        "command": shlex.join(["python", "-m", "chaos", *options.argv]),
        "started": started_at,
        "mode": options.mode,
        "seed": options.seed,
        "send_lease_s": options.send_lease_s,
        "wall_s": round(wall_s, 1),
        "machine": {**machine(), "load_average_now": list(os.getloadavg())},
        "scenarios": [o.as_dict() for o in outcomes],
    }
    (options.out / "results.json").write_text(json.dumps(results, indent=2, default=str))


async def run(options: Options, infra: Infrastructure, started_at: str) -> list[Outcome]:
    started = now()
    outcomes: list[Outcome] = []
    for name in options.scenarios:
        print(f"-- {name} ({options.mode}, seed {options.seed})", flush=True)
        outcome = await run_scenario(infra, name, options.mode, options.seed)
        print(table(outcome), flush=True)
        outcomes.append(outcome)
        write_results(options, outcomes, started_at, now() - started)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    from tests.infra import start_kafka_broker, start_postgres

    options = parse(sys.argv[1:] if argv is None else argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: every process and server started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    # The run's own producer (the business clock) is replaced after an outage, as the services' are.
    logging.getLogger("services.runtime.kafka_log").setLevel(logging.ERROR)
    # aiokafka leaves a retired producer's sender task pending when the broker is away.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    options.out.mkdir(parents=True, exist_ok=True)
    started, started_at = now(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    broker = start_kafka_broker()
    try:
        postgres = start_postgres()
        try:
            infra = Infrastructure(broker, postgres, options.out, send_lease_s=options.send_lease_s)
            outcomes = asyncio.run(run(options, infra, started_at))
        finally:
            postgres.stop()
    finally:
        broker.stop()
    wall_s = now() - started
    print(summary(outcomes, wall_s))
    write_results(options, outcomes, started_at, wall_s)
    print(f"results and logs: {options.out}")
    return 0 if all(o.passed or o.skipped for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
