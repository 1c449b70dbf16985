"""The Kafka adapter of the event log: an idempotent producer (acks=all) and group consumers whose
offsets live in PostgreSQL, so nothing is ever committed to Kafka by Arrears."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from services.runtime.log import AssignmentCallback, EventLog, LogConsumer, Message, Record, TopicPartition


class KafkaLog(EventLog):
    def __init__(self, bootstrap_servers: str, *, linger_ms: int = 5, timeout_s: float = 30.0) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def start(self) -> None:
        await asyncio.wait_for(self._producer.start(), self._timeout_s)

    async def stop(self) -> None:
        # aiokafka's stop() can hang while the broker is unreachable.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._producer.stop(), self._timeout_s)

    async def publish(self, messages: Sequence[Message]) -> None:
        deliveries = [
            await self._producer.send(
                m.topic, value=m.value, key=m.key, headers=list(m.headers), timestamp_ms=m.timestamp_ms
            )
            for m in messages
        ]
        if deliveries:
            await asyncio.wait_for(asyncio.gather(*deliveries), self._timeout_s)

    def consumer(self, group_id: str, topics: Sequence[str]) -> LogConsumer:
        return KafkaGroupConsumer(self._bootstrap, group_id, list(topics))

    async def read_all(self, topic: str) -> list[Record]:
        reader = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            partitions = [KafkaTopicPartition(topic, p) for p in sorted(await _partitions(reader, topic))]
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            out: list[Record] = []
            while [tp for tp in partitions if await reader.position(tp) < ends[tp]]:
                batches = await reader.getmany(timeout_ms=500)
                out.extend(_record(r) for tp in partitions for r in batches.get(tp, []))
            return sorted(out, key=lambda r: (r.partition, r.offset))
        finally:
            await reader.stop()

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5)
        except Exception:
            return False
        return True


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
    raise LookupError(f"topic {topic} does not exist")


def _record(r: Any) -> Record:
    return Record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=tuple(r.headers or ()),
        timestamp_ms=r.timestamp,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._on_assigned([(tp.topic, tp.partition) for tp in assigned])


class KafkaGroupConsumer(LogConsumer):
    def __init__(self, bootstrap_servers: str, group_id: str, topics: list[str]) -> None:
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            max_poll_interval_ms=300_000,
        )

    async def start(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None:
        await self._consumer.start()
        self._consumer.subscribe(topics=self._topics, listener=_Listener(on_assigned, on_revoked))

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [_record(r) for records in batches.values() for r in records]

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        tp = KafkaTopicPartition(*partition)
        if offset is None:
            await self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, offset)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consumer.stop(), 30)
