"""Prometheus metrics shared by the services; exposed on each service's /metrics.

Labels stay few and bounded: a group, a topic, a partition number, a service, a route template, a
status class, a channel, a reason class. Never an id, a tenant or a raw path.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "arrears_consumer_records_total",
    "Records a consumer group took from a topic, by what became of them"
    " (applied, duplicate: applied before, dead_lettered)",
    ["group", "topic", "outcome"],
)
PRODUCED = Counter(
    "arrears_produced_records_total",
    "Records a service's outbox relay published to a topic (acknowledged by the log)",
    ["service", "topic"],
)
BATCH_RECORDS = Histogram(
    "arrears_consumer_batch_records",
    "Records in one consumer batch",
    ["group"],
    buckets=(1, 5, 25, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "arrears_consumer_batch_seconds",
    "Time to apply one consumer batch",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "arrears_consumer_lag_records",
    "Records in a partition not yet applied by the consumer group member that holds it",
    ["group", "topic", "partition"],
)
OUTBOX_ROWS = Gauge("arrears_outbox_rows", "Rows in a service's outbox not yet published", ["service"])
OUTBOX_OLDEST_SECONDS = Gauge(
    "arrears_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when the outbox is empty)",
    ["service"],
)
DEAD_LETTERS = Counter(
    "arrears_dead_letters_total",
    "Records sent to a dead-letter topic, by the topic they came from and the class of reason"
    " (contract: not a valid event; rejected: refused by the service's rules; failed: failed alone"
    " three times)",
    ["group", "topic", "reason"],
)
INGESTED = Counter("arrears_ingested_events_total", "Events posted to the ledger API", ["status"])
HTTP_SECONDS = Histogram(
    "arrears_http_request_seconds",
    "Time to answer an HTTP request, by route template and status class",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERIES = Counter(
    "arrears_notifier_deliveries_total",
    "Outcomes of the notifier's send attempts, by channel (none: no channel was tried):"
    " sent, failed (for good), retrying (a transient failure), suppressed (the last look stopped it)",
    ["channel", "outcome"],
)
BUSINESS_DAY_SECONDS = Histogram(
    "arrears_business_day_seconds",
    "Time to apply the consumer batch that holds a business-day record (the day's decisions)",
    ["service"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"
