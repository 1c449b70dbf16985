"""Raw limits of this machine with the run's broker and database, to judge the pipeline figures by.

- Kafka produce: the portfolio's own records (same keys, values and partitioning) sent to a scratch
  topic with the ledger's producer settings (idempotent, acks=all, linger 5 ms, 1 MiB batches), once
  one `send` per record (`KafkaLog.publish` for a small call), once with aiokafka's batch API
  (`create_batch`/`send_batch`, records pre-partitioned with the default partitioner's murmur2).
- Kafka consume: the same records read back from the beginning by a plain consumer with the fetch
  settings of the ledger's group consumer.
- PostgreSQL COPY: `copy_records_to_table` of rows shaped like the ledger's main tables (rows taken
  from the projection the run built) into copies of those tables (same columns, keys and indexes),
  the median of three or more trials per table.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from bench.infra import Infrastructure, libpq
from bench.portfolio import PortfolioEvent
from contracts.topics import JOURNAL
from services.runtime.kafka_admin import ensure_topics

IN_FLIGHT = 20_000
"""Records sent before waiting for their acknowledgements (KafkaLog waits once per publish call)."""


MIN_TRIALS = 3
"""Times each table is copied into, at the least, for its COPY rate."""


@dataclass(frozen=True)
class Rate:
    records: int
    bytes: int
    seconds: float
    trials: int = 1
    """Measurements taken; with more than one, records, bytes and seconds are the median one's."""

    def as_json(self, **extra: Any) -> dict[str, Any]:
        return {
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds else None,
            "bytes_per_s": round(self.bytes / self.seconds, 1) if self.seconds else None,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            **({"trials": self.trials} if self.trials > 1 else {}),
            **extra,
        }


def producer(bootstrap_servers: str) -> AIOKafkaProducer:
    """The producer settings of `services.runtime.kafka_log.KafkaLog`."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=30_000,
    )


async def produce_per_record(
    bootstrap_servers: str, events: Sequence[PortfolioEvent], topic: str | None = None
) -> Rate:
    """One `send` per record, acknowledgements awaited every IN_FLIGHT records (as KafkaLog does per
    publish call). With `topic` None each record goes to its own topic (the portfolio's)."""
    client = producer(bootstrap_servers)
    await client.start()
    try:
        started = time.perf_counter()
        pending = []
        for event in events:
            pending.append(await client.send(topic or event.topic, value=event.value, key=event.key))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - started
    finally:
        await client.stop()
    return Rate(len(events), _size(events), seconds)


async def produce_batched(
    bootstrap_servers: str, events: Sequence[PortfolioEvent], topic: str | None = None
) -> Rate:
    """aiokafka's batch API: records grouped per partition into ~1 MiB batches, as the default
    partitioner would place them (so a key's records stay in one partition, in order)."""
    client = producer(bootstrap_servers)
    await client.start()
    try:
        partitions: dict[str, int] = {}
        for name in {topic or e.topic for e in events}:
            partitions[name] = len(await client.partitions_for(name))
        started = time.perf_counter()
        open_batches: dict[tuple[str, int], Any] = {}
        pending = []
        for event in events:
            name = topic or event.topic
            where = (name, _partition(event.key, partitions[name]))
            batch = open_batches.get(where)
            if batch is None:
                batch = open_batches[where] = client.create_batch()
            if batch.append(key=event.key, value=event.value, timestamp=None) is None:
                pending.append(await client.send_batch(batch, name, partition=where[1]))
                batch = open_batches[where] = client.create_batch()
                batch.append(key=event.key, value=event.value, timestamp=None)
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending = []
        for (name, partition), batch in open_batches.items():
            pending.append(await client.send_batch(batch, name, partition=partition))
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - started
    finally:
        await client.stop()
    return Rate(len(events), _size(events), seconds)


async def consume(bootstrap_servers: str, topic: str, partition_count: int) -> Rate:
    """Read a topic from the beginning to its end, with the ledger consumer's fetch settings."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        wanted = sum(ends.values())
        records = size = 0
        started = time.perf_counter()
        while records < wanted:
            batches = await reader.getmany(timeout_ms=1000, max_records=10_000)
            for batch in batches.values():
                records += len(batch)
                size += sum(len(r.value or b"") + len(r.key or b"") for r in batch)
        seconds = time.perf_counter() - started
    finally:
        await reader.stop()
    return Rate(records, size, seconds)


async def kafka_limits(infra: Infrastructure, events: Sequence[PortfolioEvent]) -> dict[str, Any]:
    """Produce the records twice (per record, batched) to scratch topics and read them back once."""
    per_record_topic = f"bench.raw.{infra.run_id}.v1"
    batched_topic = f"bench.raw.{infra.run_id}.batched.v1"
    await ensure_topics(
        infra.bootstrap_servers,
        [(per_record_topic, JOURNAL.partitions, -1), (batched_topic, JOURNAL.partitions, -1)],
    )
    per_record = await produce_per_record(infra.bootstrap_servers, events, per_record_topic)
    batched = await produce_batched(infra.bootstrap_servers, events, batched_topic)
    consumed = await consume(infra.bootstrap_servers, per_record_topic, JOURNAL.partitions)
    return {
        "kafka_produce": per_record.as_json(method="one send per record (KafkaLog.publish, small calls)"),
        "kafka_produce_batched": batched.as_json(
            method="create_batch/send_batch per partition (KafkaLog.publish, large calls)"
        ),
        "kafka_consume": consumed.as_json(method="getmany from the beginning, ledger fetch settings"),
        "partitions": JOURNAL.partitions,
    }


# --- PostgreSQL COPY ----------------------------------------------------------------------------

COPY_TABLES: dict[str, str] = {
    "debtor_ledgers": "SELECT tenant_id, debtor_id, state, archive, updated_at FROM ledger.debtor_ledgers",
    "balance_movements": (
        "SELECT tenant_id, debtor_id, invoice_id, currency, due_date, delta, effective_date, recorded_at"
        " FROM ledger.balance_movements"
    ),
    "processed_events": "SELECT tenant_id, event_id FROM ledger.processed_events",
    "aging_totals": "SELECT tenant_id, currency, due_date, effective_date, amount FROM ledger.aging_totals",
}
"""The projection's main tables and the rows copied to measure them (the outbox's rows are gone once
published, so its rows are made from the portfolio's records)."""


async def copy_limits(
    database_url: str,
    outbox_sample: Sequence[PortfolioEvent],
    max_rows: int = 200_000,
    min_seconds: float = 1.5,
) -> dict[str, Any]:
    """Rows per second that COPY puts into a copy of each table, keys and indexes included; each
    table is copied into afresh until `min_seconds` have been measured."""
    connection = await asyncpg.connect(libpq(database_url))
    results: dict[str, Any] = {}
    try:
        await connection.execute("CREATE SCHEMA IF NOT EXISTS bench_copy")
        samples: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for table, query in COPY_TABLES.items():
            rows = await connection.fetch(f"{query} LIMIT {max_rows}")
            if rows:
                samples[table] = (list(rows[0].keys()), [tuple(r) for r in rows])
        samples["outbox"] = (
            ["topic", "key", "value", "headers"],
            [(e.topic, e.key, e.value, "[]") for e in outbox_sample[:max_rows]],
        )
        for table, (columns, rows) in samples.items():
            rate = await copy_rate(connection, table, columns, rows, min_seconds)
            results[table] = rate.as_json(columns=columns)
    finally:
        await connection.execute("DROP SCHEMA IF EXISTS bench_copy CASCADE")
        await connection.close()
    return results


async def copy_rate(
    connection: Any,
    table: str,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    min_seconds: float,
    schema: str = "ledger",
) -> Rate:
    """COPY the rows into a copy (same columns, keys and indexes) of `schema.table` in the scratch
    schema `bench_copy`, again and again, at least `MIN_TRIALS` times and for at least `min_seconds`;
    the rate is the median trial's. One trial can land on a checkpoint or on the machine's neighbours
    (the outbox's rate once came out at half the run before's), and every ratio of (2) and (3) is
    judged against these rates."""
    size = sum(_row_size(r) for r in rows)
    trials: list[float] = []
    while sum(trials) < min_seconds or len(trials) < MIN_TRIALS:
        await connection.execute(f"DROP TABLE IF EXISTS bench_copy.{table}")
        await connection.execute(f"CREATE TABLE bench_copy.{table} (LIKE {schema}.{table} INCLUDING ALL)")
        started = time.perf_counter()
        await connection.copy_records_to_table(table, schema_name="bench_copy", columns=columns, records=rows)
        trials.append(time.perf_counter() - started)
    return Rate(len(rows), size, statistics.median(trials), trials=len(trials))


def _row_size(row: tuple[Any, ...]) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in row)


def _size(events: Sequence[PortfolioEvent]) -> int:
    return sum(len(e.value) + len(e.key) for e in events)


@lru_cache(maxsize=1 << 20)
def _hash(key: bytes) -> int:
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


def _partition(key: bytes, count: int) -> int:
    """Where aiokafka's default partitioner puts a keyed record (murmur2, as the Java client)."""
    return _hash(key) % count
