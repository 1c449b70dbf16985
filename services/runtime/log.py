"""The event log interface shared by the Kafka adapter, the PostgreSQL log of the embedded default and
the in-memory log of some tests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]
AssignmentCallback = Callable[[list[TopicPartition]], Awaitable[None]]


@dataclass(frozen=True)
class Message:
    """A record to publish. `timestamp_ms` is the time Arrears accepted it (None: now)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Record:
    """A record as read back from the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class LogConsumer(ABC):
    """A member of a consumer group. Offsets are stored by the caller, never committed to the log."""

    @abstractmethod
    async def start(self, on_assigned: AssignmentCallback, on_revoked: AssignmentCallback) -> None: ...

    @abstractmethod
    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]: ...

    @abstractmethod
    async def seek(self, partition: TopicPartition, offset: int | None) -> None:
        """Position the next fetch at `offset`; None means the beginning of the partition."""

    @abstractmethod
    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to be written in each assigned partition (the consumer's lag target)."""

    @abstractmethod
    async def all_end_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to be written in every partition of the consumer's topics, assigned to
        this member or to another one."""

    @abstractmethod
    def pause(self, partition: TopicPartition) -> None:
        """Fetch nothing more from the partition until it is resumed (its position is kept)."""

    @abstractmethod
    def resume(self, partition: TopicPartition) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class SoleMemberConsumer(LogConsumer):
    """The only member of its group (the logs of the embedded default and of tests): every partition
    of its topics is assigned to it."""

    def __init__(self) -> None:
        self._paused: set[TopicPartition] = set()

    async def all_end_offsets(self) -> dict[TopicPartition, int]:
        return await self.end_offsets()

    def pause(self, partition: TopicPartition) -> None:
        self._paused.add(partition)

    def resume(self, partition: TopicPartition) -> None:
        self._paused.discard(partition)


class EventLog(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once every message is acknowledged by the log (acks=all); raise otherwise."""

    @abstractmethod
    def consumer(self, group_id: str, topics: Sequence[str]) -> LogConsumer: ...

    @abstractmethod
    async def read_all(self, topic: str) -> list[Record]:
        """Every record of a small topic (the clock), in partition and offset order."""

    async def read_partition(
        self, topics: Sequence[str], partition: int, chunk: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        """Every record of partition `partition` of each of `topics` as it stands now, each topic in
        offset order, in lists of at most `chunk`, without joining a group or storing anything (a
        read-only replay of topics that share their key and partition count)."""
        for topic in topics:
            records = [r for r in await self.read_all(topic) if r.partition == partition]
            for start in range(0, len(records), chunk):
                yield records[start : start + chunk]

    @abstractmethod
    async def healthy(self) -> bool: ...
