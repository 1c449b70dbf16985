"""The run's results: ratios to the limits that bind each figure, targets, the printed summary and the
JSON file.

Which limit binds which figure:
- ingest: the Kafka produce rate with aiokafka's batch API (`KafkaLog.publish` builds per-partition
  batches for a call of `BATCHED_FROM` records or more, as the outbox relay's are): the API makes
  each event durable in the outbox and the relay publishes it, so the two together carry what a
  producer would;
- projection and replay: the lower of the Kafka consume rate (the consumer must read every record)
  and the COPY-equivalent rate: the events per second at which PostgreSQL could take the rows the
  projection writes per event if each table's rows came as fast as COPY puts them in. The rows per
  event come from the projection's own table statistics (inserts + updates per table / records).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.dunning_day import TARGET_SECONDS as BUSINESS_DAY_SECONDS
from bench.dunning_day import summary_line as dunning_line
from bench.latency import TARGET_P99_MS, breakdown_line
from bench.latency import summary_line as latency_line
from bench.policy_whatif import summary_line as whatif_line
from bench.scoring_day import summary_lines as scoring_lines

CONSUMER_TABLES = (
    "debtor_ledgers",
    "balance_movements",
    "aging_totals",
    "processed_events",
    "outbox",
    "business_dates",
    "consumer_offsets",
)
"""The tables the ledger's consumer writes (the API's ingested_events and api_keys are not its own)."""
FALLBACK_SHAPE = "processed_events"
"""The COPY rate used for small tables without a measured shape of their own (a few rows per batch)."""

NOT_MEASURED = "not measured in this run"


@dataclass(frozen=True)
class Target:
    measure: str
    description: str
    check: Callable[[dict[str, Any]], tuple[float | None, bool | None]]
    """(the value compared, whether it meets the target) from the results; None when not measured."""


def _ratio_target(measure: str) -> Callable[[dict[str, Any]], tuple[float | None, bool | None]]:
    def check(results: dict[str, Any]) -> tuple[float | None, bool | None]:
        ratio = results["measures"].get(measure, {}).get("ratio_to_limit")
        return (ratio, ratio >= 0.5) if ratio is not None else (None, None)

    return check


def _value_target(
    path: tuple[str, ...], meets: Callable[[float], bool]
) -> Callable[[dict[str, Any]], tuple[float | None, bool | None]]:
    def check(results: dict[str, Any]) -> tuple[float | None, bool | None]:
        value: Any = results["measures"]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return (value, meets(value)) if isinstance(value, int | float) else (None, None)

    return check


def _business_day_target(results: dict[str, Any]) -> tuple[float | None, bool | None]:
    """Seconds for one business day; the target is for 1M debtors, a smaller run is not judged."""
    measure = results["measures"].get("dunning_evaluation", {})
    seconds = measure.get("seconds")
    if not isinstance(seconds, int | float):
        return None, None
    return seconds, (seconds < BUSINESS_DAY_SECONDS) if measure.get("debtors", 0) >= 1_000_000 else None


def _scoring_day_target(results: dict[str, Any]) -> tuple[float | None, bool | None]:
    """Seconds to score every debtor again on a business day; judged for 1M debtors only."""
    measure = results["measures"].get("scoring_day", {})
    seconds = measure.get("seconds")
    if not isinstance(seconds, int | float):
        return None, None
    return seconds, (seconds < 60) if measure.get("debtors", 0) >= 1_000_000 else None


def _latency_target(results: dict[str, Any]) -> tuple[float | None, bool | None]:
    """Payment-to-case p99 in ms; a probe never seen (timed out) misses the target whatever the p99."""
    measure = results["measures"].get("payment_to_case_latency", {})
    p99 = measure.get("p99_ms")
    if not isinstance(p99, int | float):
        return (None, False) if measure.get("failed") else (None, None)
    return p99, p99 < measure.get("target_p99_ms", TARGET_P99_MS) and not measure.get("failed")


TARGETS = (
    Target("ingest", "ingest >= 25,000 events/s", _value_target(("ingest", "figure"), lambda v: v >= 25_000)),
    Target("projection", "projection >= 0.5 x binding limit", _ratio_target("projection")),
    Target("replay", "replay >= 0.5 x binding limit", _ratio_target("replay")),
    Target("dunning_evaluation", "business day < 30 s for 1M debtors", _business_day_target),
    Target("scoring_day", "scoring day < 60 s for 1M debtors", _scoring_day_target),
    Target(
        "scoring_facts",
        "scoring facts >= ledger facts/s",
        _value_target(("scoring_facts", "ratio_to_ledger"), lambda v: v >= 1),
    ),
    Target(
        "payment_to_case_latency",
        "payment to case p99 < 1 s, < 250 ms at 300 events/s or less (ms)",
        _latency_target,
    ),
    Target(
        "statement_latency",
        "statement p99 < 20 ms",
        _value_target(("statement_latency", "p99_ms"), lambda v: v < 20),
    ),
    Target(
        "aging_latency", "aging p99 < 100 ms", _value_target(("aging_latency", "p99_ms"), lambda v: v < 100)
    ),
)


def _members(measure: dict[str, Any]) -> str:
    members = measure.get("members", 1)
    return f"{members} consumer processes, " if members > 1 else ""


def copy_equivalent(projection: dict[str, Any], copy: dict[str, Any]) -> dict[str, Any] | None:
    """Events/s PostgreSQL could absorb if the projection's writes per event came at COPY speed."""
    records = projection.get("records") or 0
    tables = projection.get("database", {}).get("tables", {})
    if not records or not copy:
        return None
    seconds_per_event = 0.0
    rows_per_event: dict[str, float] = {}
    for table in CONSUMER_TABLES:
        stats = tables.get(table)
        if not stats:
            continue
        writes = (stats["inserts"] or 0) + (stats["updates"] or 0)
        shape = copy.get(table) or copy.get(FALLBACK_SHAPE)
        if not writes or not shape or not shape.get("records_per_s"):
            continue
        rows_per_event[table] = round(writes / records, 4)
        seconds_per_event += (writes / records) / shape["records_per_s"]
    if not seconds_per_event:
        return None
    return {"events_per_s": round(1 / seconds_per_event, 1), "rows_per_event": rows_per_event}


def add_ratios(results: dict[str, Any]) -> None:
    """Put each pipeline figure beside the limit that binds it."""
    limits = results.get("limits", {})
    measures = results["measures"]
    produce = limits.get("kafka_produce_batched", {}).get("records_per_s")
    if "figure" in measures.get("ingest", {}) and produce:
        measures["ingest"]["binding_limit"] = {
            "name": "kafka_produce_batched (per-partition batches)",
            "figure": produce,
        }
        measures["ingest"]["ratio_to_limit"] = round(measures["ingest"]["figure"] / produce, 3)
    consume = limits.get("kafka_consume", {}).get("records_per_s")
    for name in ("projection", "replay"):
        measure = measures.get(name, {})
        if "figure" not in measure:
            continue
        copy = copy_equivalent(measure, limits.get("postgres_copy", {}))
        if copy:
            measure["copy_equivalent"] = copy
        candidates = [(consume, "kafka_consume")] if consume else []
        if copy:
            candidates.append((copy["events_per_s"], "postgres_copy_equivalent"))
        if candidates:
            limit, which = min(candidates)
            measure["binding_limit"] = {"name": which, "figure": limit}
            measure["ratio_to_limit"] = round(measure["figure"] / limit, 3)


def assess(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value, met = target.check(results)
        rows.append({"measure": target.measure, "target": target.description, "value": value, "met": met})
        day = results["measures"].get("dunning_evaluation", {})
        if target.measure == "dunning_evaluation" and value is not None and met is None:
            rows[-1]["note"] = f"applies to 1M debtors; this run evaluated {day.get('debtors', 0):,}"
        scoring = results["measures"].get("scoring_day", {})
        if target.measure == "scoring_day" and value is not None and met is None:
            rows[-1]["note"] = (
                f"applies to 1M debtors; this run scored {scoring.get('debtors_scored', 0):,},"
                f" 1M at its rate: {scoring.get('seconds_for_1m_debtors')} s"
            )
    results["targets"] = rows
    return rows


def write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _number(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.{digits}f}"


def _mib(value: Any) -> str:
    return f"{value / 2**20:,.0f} MiB" if isinstance(value, int | float) and value else "-"


def summary(results: dict[str, Any]) -> str:
    """The figures as text: each with its unit, and the run's parameters."""
    p = results["parameters"]
    portfolio = results["portfolio"]
    m = results["measures"]
    limits = results.get("limits", {})
    lines = [
        f"Arrears ledger benchmark, size {p['size']} (seed {p['seed']}): {portfolio['events']:,} events, "
        f"{portfolio['tenants']} tenants, {portfolio['debtors']:,} debtors, "
        f"{portfolio['events_by_type'].get('ar.invoice.issued.v1', 0):,} invoices, {portfolio['days']} days",
        f"machine: {results['machine']['nproc']} CPUs ({results['machine']['cpu_model']}), "
        f"{_mib(results['machine']['memory_total_bytes'])}; PostgreSQL {results['machine'].get('postgres')}, "
        f"Kafka {results['machine'].get('kafka')}",
        f"portfolio generated at {_number(portfolio['events'] / max(portfolio['generated_in_s'], 1e-9))}"
        " events/s",
        "",
        "raw limits",
    ]
    for name in ("kafka_produce", "kafka_produce_batched", "kafka_consume"):
        rate = limits.get(name)
        if rate:
            lines.append(
                f"  {name:<24} {_number(rate['records_per_s']):>12} records/s  "
                f"{_number(rate['bytes_per_s'] / 2**20, 1):>7} MiB/s  ({rate['method']})"
            )
    for table, rate in limits.get("postgres_copy", {}).items():
        lines.append(
            f"  COPY {table:<19} {_number(rate['records_per_s']):>12} rows/s     "
            f"{_number(rate['bytes_per_s'] / 2**20, 1):>7} MiB/s"
        )
    lines += ["", "pipeline"]
    ingest = m.get("ingest", {})
    if "figure" in ingest:
        lines.append(
            f"  (1) ingest        {_number(ingest['figure']):>10} events/s  ({ingest['events']:,} events, "
            f"{ingest['clients']} clients x {ingest['batch']} per request, "
            f"{ingest.get('api_processes', 1)} API processes){_ratio(ingest)}"
        )
        if ingest.get("relayed_events_per_s"):
            lines.append(
                f"      outbox relay  {_number(ingest['relayed_events_per_s']):>10} events/s  "
                f"(published to Kafka in {ingest['relay_seconds']:.1f} s after the last 202)"
            )
    for number, name in ((2, "projection"), (3, "replay")):
        measure = m.get(name, {})
        if "figure" in measure:
            lines.append(
                f"  ({number}) {name:<13} {_number(measure['figure']):>10} events/s  "
                f"({measure['records']:,} records, {_members(measure)}{measure['seconds']:.1f} s to lag 0)"
                f"{_ratio(measure)}"
            )
    lines.append(dunning_line(m.get("dunning_evaluation", {"status": NOT_MEASURED})))
    lines += scoring_lines(m)
    lines.append(latency_line(m.get("payment_to_case_latency", {"status": NOT_MEASURED})))
    lines.append(whatif_line(m.get("policy_whatif", {"status": NOT_MEASURED})))
    if breakdown := breakdown_line(m.get("payment_to_case_latency", {})):
        lines.append(breakdown)
    for name, label in (
        ("statement_latency", "statement"),
        ("aging_latency", "aging"),
        ("aging_known_at_latency", "aging known_at"),
    ):
        measure = m.get(name, {})
        if "p99_ms" in measure:
            lines.append(
                f"  (6) {label:<15} p50 {_number(measure['p50_ms'], 1)} ms, "
                f"p99 {_number(measure['p99_ms'], 1)} ms "
                f"({measure['requests']} requests, {_number(measure.get('open_items'))} open items)"
            )
    lines += ["", "peak memory"]
    for name, entry in results.get("memory", {}).items():
        peak = entry.get("peak_rss_bytes") or entry.get("peak_rss_max_process_bytes")
        lines.append(
            f"  {name:<12} peak RSS {_mib(peak):>10}   "
            f"peak PSS (all processes) {_mib(entry.get('peak_pss_sum_bytes')):>10}"
        )
    lines += ["", "targets"]
    for row in results.get("targets", []):
        verdict = "not measured" if row["met"] is None else ("met" if row["met"] else "MISSED")
        if row.get("note"):
            verdict = f"not judged: {row['note']}"
        lines.append(
            f"  {row['target']:<36} "
            f"{_number(row['value'], 3 if 'limit' in row['target'] else 1):>12}  {verdict}"
        )
    lines.append(f"\nresults: {results.get('results_file', '-')}; took {results.get('duration_s', 0):.0f} s")
    return "\n".join(lines)


def _ratio(measure: dict[str, Any]) -> str:
    limit = measure.get("binding_limit")
    if not limit:
        return ""
    return f"; {measure['ratio_to_limit']:.2f} x {limit['name']} ({_number(limit['figure'])}/s)"
