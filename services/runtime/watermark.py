"""The business-day watermark: a clock record waits until the group has applied every record its
other topics held when the clock record was first seen.

Kafka orders records within a partition, not across partitions or topics. A business day started
at time T must be decided on every fact published before T, and those facts may sit in any partition
of any input topic, some of them another member's. When a member first meets a clock record, it
takes the end offset of every partition of its other topics (everything published before T is
below them) and holds the clock partition, paused at that record, until the group's stored offsets
(every member's, in the service's database) reach those ends. Meanwhile it goes on applying its
other partitions. Holding is always safe: when in doubt (an end offset that cannot be read), the
clock record waits and is looked at again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from services.runtime.log import LogConsumer, Record, TopicPartition

log = logging.getLogger(__name__)

Offsets = dict[TopicPartition, int]
StoredOffsets = Callable[[], Awaitable[dict[TopicPartition, int | None]]]

REPORT_EVERY_S = 30.0
"""How often a clock record still held is logged again."""


@dataclass
class _Held:
    offset: int
    targets: Offsets
    since: float
    reported: float


class BusinessDayGate:
    def __init__(self, group_id: str, clock_topic: str, consumer: LogConsumer, stored: StoredOffsets) -> None:
        self._group_id = group_id
        self._clock_topic = clock_topic
        self._consumer = consumer
        self._stored = stored
        self._targets: dict[tuple[TopicPartition, int], Offsets] = {}
        """The end offsets taken when each clock record was first met (kept across a re-fetch)."""
        self._held: dict[TopicPartition, _Held] = {}

    @property
    def holding(self) -> int:
        return len(self._held)

    async def admit(self, records: list[Record]) -> list[Record]:
        """The records without the clock records that must wait; their partitions are seeked back
        to the first of them and paused. Records of other partitions in this batch count as applied
        (they commit with it)."""
        clock = sorted((r for r in records if r.topic == self._clock_topic), key=lambda r: r.offset)
        if not clock:
            return records
        in_batch = _next_offsets(r for r in records if r.topic != self._clock_topic)
        stored: dict[TopicPartition, int | None] | None = None
        first_held: dict[TopicPartition, int] = {}
        for record in clock:
            tp = record.topic_partition
            if tp in first_held:
                continue
            if tp in self._held:  # fetched before the pause took effect
                first_held[tp] = self._held[tp].offset
                continue
            targets = await self._targets_of(record)
            if targets is not None:
                stored = stored if stored is not None else await self._stored()
                if not _behind(targets, stored, in_batch):
                    self._targets.pop((tp, record.offset), None)
                    continue
            first_held[tp] = record.offset
            await self._hold(tp, record.offset, targets or {})
        return [r for r in records if r.offset < first_held.get(r.topic_partition, r.offset + 1)]

    async def release(self) -> None:
        """Resume every held clock partition whose record the group has caught up with."""
        if not self._held:
            return
        stored = await self._stored()
        now = time.monotonic()
        for tp, held in list(self._held.items()):
            if held.targets and not _behind(held.targets, stored, {}):
                del self._held[tp]
                self._consumer.resume(tp)
                log.info(
                    "%s: the business day at %s/%d@%d goes on after %.1f s",
                    self._group_id,
                    *tp,
                    held.offset,
                    now - held.since,
                )
            elif not held.targets:
                del self._held[tp]  # its end offsets could not be read: look at it again
                self._consumer.resume(tp)
            elif now - held.reported >= REPORT_EVERY_S:
                held.reported = now
                self._report(tp, held, stored)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: another member (or this one, after seeking) meets them afresh."""
        for tp in partitions:
            self._held.pop(tp, None)
        gone = set(partitions)
        self._targets = {k: v for k, v in self._targets.items() if k[0] not in gone}

    async def _targets_of(self, record: Record) -> Offsets | None:
        key = (record.topic_partition, record.offset)
        if key not in self._targets:
            try:
                ends = await self._consumer.all_end_offsets()
            except Exception as exc:
                log.warning("%s: end offsets unknown (%s); the business day waits", self._group_id, exc)
                return None
            self._targets[key] = {
                tp: end for tp, end in ends.items() if tp[0] != self._clock_topic and end > 0
            }
        return self._targets[key]

    async def _hold(self, tp: TopicPartition, offset: int, targets: Offsets) -> None:
        await self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        now = time.monotonic()
        held = self._held[tp] = _Held(offset, targets, since=now, reported=now)
        self._report(tp, held, None)

    def _report(
        self, tp: TopicPartition, held: _Held, stored: dict[TopicPartition, int | None] | None
    ) -> None:
        behind = _behind(held.targets, stored, {}) if stored is not None else held.targets
        log.info(
            "%s: the business day at %s/%d@%d waits for %d partitions to catch up (%s)",
            self._group_id,
            *tp,
            held.offset,
            len(behind),
            ", ".join(f"{t}/{p} to {end}" for (t, p), end in sorted(behind.items())[:4]),
        )


def _next_offsets(records: Iterable[Record]) -> Offsets:
    ends: Offsets = {}
    for r in records:
        ends[r.topic_partition] = max(ends.get(r.topic_partition, 0), r.offset + 1)
    return ends


def _behind(targets: Offsets, stored: dict[TopicPartition, int | None], in_batch: Offsets) -> Offsets:
    """The partitions whose applied records do not yet reach their target."""
    return {tp: end for tp, end in targets.items() if max(stored.get(tp) or 0, in_batch.get(tp, 0)) < end}
