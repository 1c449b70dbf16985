"""Prometheus metrics shared by the services; exposed on each service's /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("arrears_consumer_records_total", "Records handled by a consumer", ["group", "outcome"])
BATCH_SECONDS = Histogram(
    "arrears_consumer_batch_seconds",
    "Time to apply one consumer batch",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge("arrears_consumer_lag_records", "Records not yet applied by a consumer group", ["group"])
INGESTED = Counter("arrears_ingested_events_total", "Events posted to the ledger API", ["status"])
