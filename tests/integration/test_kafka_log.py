"""The Kafka adapter publishes a large call through per-partition batches and a small one record by
record; both must place a key's records in one partition, in order, with headers and timestamps."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest

from services.runtime.kafka_admin import ensure_topics
from services.runtime.kafka_log import BATCHED_FROM, KafkaLog
from services.runtime.log import Message
from tests.infra import KafkaBroker

pytestmark = pytest.mark.integration

KEYS = [f"tenant|debtor-{n}".encode() for n in range(40)]


def messages(topic: str, count: int, start: int) -> list[Message]:
    return [
        Message(
            topic,
            KEYS[n % len(KEYS)],
            f"{start + n}".encode(),
            headers=(("seq", f"{start + n}".encode()),),
            timestamp_ms=1_700_000_000_000 + start + n,
        )
        for n in range(count)
    ]


async def test_batched_and_single_publishes_place_keys_alike(kafka: KafkaBroker, kafka_log: KafkaLog) -> None:
    topic = f"test.publish.{uuid.uuid4().hex[:8]}.v1"
    await ensure_topics(kafka.bootstrap_servers, [(topic, 6, -1)])
    large = messages(topic, BATCHED_FROM * 3, 0)
    small = messages(topic, BATCHED_FROM // 4, len(large))

    await kafka_log.publish(large)
    await kafka_log.publish(small)

    records = await kafka_log.read_all(topic)
    assert len(records) == len(large) + len(small)
    partitions: dict[bytes | None, set[int]] = defaultdict(set)
    sequence: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions[r.key].add(r.partition)
        sequence[r.key].append(int(r.value))
        assert r.header("seq") == r.value
        assert r.timestamp_ms == 1_700_000_000_000 + int(r.value)
    assert all(len(found) == 1 for found in partitions.values()), "a key's records went to two partitions"
    assert all(seq == sorted(seq) for seq in sequence.values()), "a key's records came out of order"
    assert len({p for found in partitions.values() for p in found}) > 1
