"""A log in memory behind the same interface as Kafka, for tests that want records handed over at once
(the embedded default keeps its log in PostgreSQL: services/runtime/postgres_log.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Sequence

from contracts.topics import catalogue
from services.runtime.log import (
    AssignmentCallback,
    EventLog,
    LogConsumer,
    Message,
    Record,
    SoleMemberConsumer,
    TopicPartition,
)


class InProcessLog(EventLog):
    def __init__(self, topics: Sequence[tuple[str, int, int]] | None = None) -> None:
        self._partitions: dict[str, list[list[Record]]] = {
            name: [[] for _ in range(count)] for name, count, _ in (topics or catalogue())
        }
        self._appended = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def partition_count(self, topic: str) -> int:
        return len(self._partitions[topic])

    def _partition_for(self, topic: str, key: bytes | None, counter: int) -> int:
        count = len(self._partitions[topic])
        return (zlib.crc32(key) if key is not None else counter) % count

    async def publish(self, messages: Sequence[Message]) -> None:
        now_ms = int(time.time() * 1000)
        for i, message in enumerate(messages):
            if message.topic not in self._partitions:
                raise KeyError(f"unknown topic {message.topic}")
            index = self._partition_for(message.topic, message.key, i)
            partition = self._partitions[message.topic][index]
            partition.append(
                Record(
                    topic=message.topic,
                    partition=index,
                    offset=len(partition),
                    key=message.key,
                    value=message.value,
                    headers=message.headers,
                    timestamp_ms=message.timestamp_ms if message.timestamp_ms is not None else now_ms,
                )
            )
        async with self._appended:
            self._appended.notify_all()

    def consumer(self, group_id: str, topics: Sequence[str]) -> LogConsumer:
        return _InProcessConsumer(self, list(topics))

    async def read_all(self, topic: str) -> list[Record]:
        return [r for partition in self._partitions[topic] for r in partition]

    async def healthy(self) -> bool:
        return True

    def records(self, topic: str, partition: int) -> list[Record]:
        return self._partitions[topic][partition]

    async def wait_for_append(self, timeout_s: float) -> None:
        async with self._appended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._appended.wait(), timeout_s)


class _InProcessConsumer(SoleMemberConsumer):
    def __init__(self, log: InProcessLog, topics: list[str]) -> None:
        super().__init__()
        self._log = log
        self._positions: dict[TopicPartition, int] = {
            (t, p): 0 for t in topics for p in range(log.partition_count(t))
        }

    async def start(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None:
        await on_assigned(list(self._positions))

    def _available(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp, position in self._positions.items():
            if len(out) >= max_records:
                break
            if tp in self._paused:
                continue
            records = self._log.records(*tp)
            if position > len(records):  # past the end: from the beginning, as Kafka's earliest reset
                position = 0
            chunk = records[position : position + max_records - len(out)]
            if chunk:
                out.extend(chunk)
                self._positions[tp] = position + len(chunk)
        return out

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        records = self._available(max_records)
        if not records:
            await self._log.wait_for_append(timeout_ms / 1000)
            records = self._available(max_records)
        return records

    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        self._positions[partition] = offset or 0

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return {tp: len(self._log.records(*tp)) for tp in self._positions}

    async def stop(self) -> None:
        return None
