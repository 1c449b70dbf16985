"""The benchmark harness runs end to end at its smallest size on the session's broker and database,
and writes a results file with every measure and the raw limits. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.infra import Infrastructure, new_run_id
from bench.run import Options, run_benchmark
from tests.infra.kafka_broker import KafkaBroker
from tests.infra.postgres_server import PostgresServer


async def test_the_benchmark_runs_at_tiny_size(
    kafka: KafkaBroker, postgres: PostgresServer, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    options = Options(size="tiny", clients=2, batch=100, reads=20, out=out, command="pytest smoke")

    await run_benchmark(options, Infrastructure(kafka, postgres, new_run_id()))

    results = orjson.loads(out.read_bytes())
    measures = results["measures"]
    for name in ("ingest", "projection", "replay"):
        assert measures[name]["unit"] == "events/s"
        assert measures[name]["figure"] > 0, name
        assert measures[name]["ratio_to_limit"] > 0, name
    projection, replay = measures["projection"], measures["replay"]
    assert projection["members"] == replay["members"] == 2
    assert projection["applied_by_this_process"] > 0 and replay["applied_by_this_process"] > 0
    # Two members, a rebalance on the backlog, two databases: the same balance facts, none twice.
    assert projection["facts_published"] == replay["facts_published"] > 0
    assert measures["replay"]["database"]["open_items"] > 0
    for name in ("statement_latency", "aging_latency", "aging_known_at_latency"):
        assert measures[name]["p50_ms"] > 0 and measures[name]["p99_ms"] > 0, name
    day = measures["dunning_evaluation"]
    assert day["figure"] > 0 and day["commands"] > 0 and day["cases_due"] > 0, day
    assert day["published"] >= day["commands"] and day["ratio_to_limit"] > 0
    facts = measures["scoring_facts"]
    assert facts["figure"] > 0 and facts["scores"] > 0 and facts["ratio_to_ledger"] > 0, facts
    scoring = measures["scoring_day"]
    assert scoring["debtors_scored"] == scoring["debtors"] and scoring["seconds_for_1m_debtors"] > 0
    assert scoring["scorer_alone"]["debtors_per_s"] > 0 and scoring["ratio_to_limit"] > 0
    assert scoring["scorer_alone_after_the_days"]["debtors"] == scoring["scorer_alone"]["debtors"]
    latency = measures["payment_to_case_latency"]
    assert latency["probes"] > 0 and latency["probes"] == latency["planned"], latency["failures"]
    assert latency["observed"] == latency["probes"] and latency["failed"] == 0, latency["failures"]
    assert latency["p50_ms"] > 0 and latency["p99_ms"] >= latency["p50_ms"]
    assert latency["background"]["achieved_events_per_s"] > 0
    assert latency["stages_ms"]["fact_published"]["p50_ms"] is not None, "the breakdown is measured"

    limits = results["limits"]
    for name in ("kafka_produce", "kafka_produce_batched", "kafka_consume"):
        assert limits[name]["records_per_s"] > 0 and limits[name]["bytes_per_s"] > 0, name
    copy = limits["postgres_copy"]
    for table in ("debtor_ledgers", "balance_movements", "processed_events", "aging_totals", "outbox"):
        assert copy[table]["records_per_s"] > 0, table

    memory = results["memory"]
    assert memory["bench"]["peak_rss_bytes"] > 0
    assert memory["kafka"]["peak_rss_max_process_bytes"] > 0
    if postgres.data_dir is not None:
        assert memory["postgres"]["peak_pss_sum_bytes"] > 0
    assert {row["measure"] for row in results["targets"]} >= {"ingest", "projection", "replay"}
    assert results["machine"]["nproc"] >= 1 and results["portfolio"]["events"] > 0
