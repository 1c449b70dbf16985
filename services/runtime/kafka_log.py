"""The Kafka adapter of the event log: an idempotent producer (acks=all) and group consumers whose
offsets live in PostgreSQL, so nothing is ever committed to Kafka by Arrears.

A publish that fails leaves the producer in a state it may never leave: after a broker restart the
idempotent producer's sequence numbers have a gap and every later send fails with
OutOfOrderSequenceNumber. So a failed publish retires its producer, and the next publish starts a
new one (a new producer id, its own sequence). Nothing is lost across the switch: every caller
publishes from a durable outbox or answers the failure, and consumers drop repeats by event id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from services.runtime.log import AssignmentCallback, EventLog, LogConsumer, Message, Record, TopicPartition

BATCHED_FROM = 200
"""Calls publishing at least this many records build their own batches (aiokafka's batch API); smaller
ones join the producer's open batches record by record. A batch of a call waits until the partition's
batch before it has been sent, so small concurrent calls (API requests, idle relays) would queue behind
each other; large ones (a backlog, a bulk post) gain about ninefold."""
_HASH_CACHE_SIZE = 100_000
log = logging.getLogger(__name__)


class KafkaLog(EventLog):
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        linger_ms: int = 5,
        timeout_s: float = 30.0,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout_s = timeout_s
        self._linger_ms = linger_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._producer: AIOKafkaProducer | None = None
        self._failure: str | None = None
        self._replacing = asyncio.Lock()
        self._hashes: dict[bytes, int] = {}
        self._round_robin = 0
        self.producers_started = 0

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=int(self._timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._ready_producer()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_producer(producer, self._timeout_s)

    async def _ready_producer(self) -> AIOKafkaProducer:
        """The producer to send with: the current one, or a new one when the last publish failed."""
        producer = self._producer
        if producer is not None and self._failure is None:
            return producer
        async with self._replacing:
            if self._producer is not None and self._failure is None:
                return self._producer
            old, self._producer = self._producer, None
            if old is not None:
                log.warning("replacing the Kafka producer after a failed publish: %s", self._failure)
                await _stop_producer(old, 5.0)
            producer = self._new_producer()
            try:
                await asyncio.wait_for(producer.start(), self._timeout_s)
            except BaseException as exc:
                self._failure = f"the producer did not start: {type(exc).__name__}: {exc}"
                await _stop_producer(producer, 5.0)
                raise
            self._producer, self._failure = producer, None
            self.producers_started += 1
            return producer

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        producer = await self._ready_producer()
        try:
            if len(messages) >= BATCHED_FROM:
                deliveries = await self._send_batches(producer, messages)
            else:
                deliveries = [
                    await producer.send(
                        m.topic,
                        value=m.value,
                        key=m.key,
                        headers=list(m.headers),
                        timestamp_ms=m.timestamp_ms,
                    )
                    for m in messages
                ]
            await asyncio.wait_for(asyncio.gather(*deliveries), self._timeout_s)
        except BaseException as exc:
            if producer is self._producer and self._failure is None:
                self._failure = f"{type(exc).__name__}: {exc}"
            raise

    async def _send_batches(
        self, producer: AIOKafkaProducer, messages: Sequence[Message]
    ) -> list[asyncio.Future[Any]]:
        """The messages in per-partition batches, in their order, placed as the default partitioner
        places them (murmur2 of the key, as the Java client), so a key's records stay in order in one
        partition whichever path published them."""
        open_batches: dict[tuple[str, int], Any] = {}
        partitions_of: dict[str, list[int]] = {}
        deliveries: list[asyncio.Future[Any]] = []
        for m in messages:
            partitions = partitions_of.get(m.topic)
            if partitions is None:
                found = await asyncio.wait_for(producer.partitions_for(m.topic), self._timeout_s)
                partitions = partitions_of[m.topic] = sorted(found)
            partition = partitions[self._placement(m.key) % len(partitions)]
            where = (m.topic, partition)
            batch = open_batches.get(where)
            if batch is None:
                batch = open_batches[where] = producer.create_batch()
            headers = list(m.headers)
            if batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms, headers=headers) is None:
                deliveries.append(await producer.send_batch(batch, m.topic, partition=partition))
                batch = open_batches[where] = producer.create_batch()
                if batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms, headers=headers) is None:
                    raise ValueError(f"a {len(m.value)}-byte record does not fit in a batch for {m.topic}")
        for (topic, partition), batch in open_batches.items():
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        return deliveries

    def _placement(self, key: bytes | None) -> int:
        if key is None:
            self._round_robin += 1
            return self._round_robin
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed

    def consumer(self, group_id: str, topics: Sequence[str]) -> LogConsumer:
        return KafkaGroupConsumer(self._bootstrap, group_id, list(topics), self._fetch_max_wait_ms)

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

    async def read_partition(
        self, topics: Sequence[str], partition: int, chunk: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        reader = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            for topic in topics:
                await _partitions(reader, topic)
            wanted = [KafkaTopicPartition(topic, partition) for topic in topics]
            reader.assign(wanted)
            await reader.seek_to_beginning(*wanted)
            ends = await reader.end_offsets(wanted)
            while [tp for tp in wanted if await reader.position(tp) < ends[tp]]:
                batches = await reader.getmany(*wanted, timeout_ms=500, max_records=chunk)
                records = [_record(r) for tp, rs in batches.items() for r in rs if r.offset < ends[tp]]
                if records:
                    yield records
        finally:
            await reader.stop()

    async def healthy(self) -> bool:
        """The broker answers and the last publish did not fail (a failed producer is replaced by the
        next publish; until one succeeds the log is not healthy)."""
        if self._failure is not None:
            with contextlib.suppress(Exception):
                await self._ready_producer()
        producer = self._producer
        if producer is None or self._failure is not None:
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 5)
        except Exception:
            return False
        return True


async def _stop_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    # aiokafka's stop() can hang while the broker is unreachable.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), timeout_s)


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
    def __init__(
        self, bootstrap_servers: str, group_id: str, topics: list[str], fetch_max_wait_ms: int = 100
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group_id = group_id
        self._topics = topics
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None:
        # Made here rather than with the service: a process that only serves the API never starts it.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            max_poll_interval_ms=300_000,
            # Partition i of every topic to the same member: a debtor's journal and master data
            # (same key, same partition count) meet in one consumer. aiokafka's default, round
            # robin, spreads them over members.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await self._consumer.start()
        self._consumer.subscribe(topics=self._topics, listener=_Listener(on_assigned, on_revoked))

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError(f"the consumer of group {self._group_id} is not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        batches = await self._started().getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [_record(r) for records in batches.values() for r in records]

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        tp = KafkaTopicPartition(*partition)
        if offset is None:
            await self._started().seek_to_beginning(tp)
        else:
            self._started().seek(tp, offset)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        consumer = self._started()
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await consumer.end_offsets(assigned)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def all_end_offsets(self) -> dict[TopicPartition, int]:
        consumer = self._started()
        partitions = [
            KafkaTopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(await _partitions(consumer, topic))
        ]
        ends = await consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    def pause(self, partition: TopicPartition) -> None:
        self._started().pause(KafkaTopicPartition(*partition))

    def resume(self, partition: TopicPartition) -> None:
        self._started().resume(KafkaTopicPartition(*partition))

    async def stop(self) -> None:
        if self._consumer is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consumer.stop(), 30)
