"""Decoded state a projection keeps between the consumer loop's batches: committed state only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CommittedCache(Generic[K, V]):
    """A bounded LRU of what a projection decoded or computed, by key, that only ever holds what
    committed. A batch stages what it leaves behind (`stage`); the staged values enter the cache when
    the consumer loop reports the batch committed (`batch_committed`). A failed batch drops every key
    it looked up or staged (`batch_failed`: after a failure the database may or may not hold its
    writes), and a change of partition assignment drops everything (`partitions_changed`).

    The cache does not know whether another writer changed a row meanwhile: a value carries the
    version of the row(s) it came from, and the projection uses it only while the rows still have it.
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._values: OrderedDict[K, V] = OrderedDict()
        self._staged: dict[K, V] = {}
        self._touched: set[K] = set()
        self.hits = 0
        self.misses = 0

    def lookup(self, keys: Iterable[K]) -> dict[K, V]:
        """The cached values of the keys there are (to be checked against their rows' versions)."""
        values = self._values
        found = {}
        for key in keys:
            self._touched.add(key)
            if key in values:
                found[key] = values[key]
        return found

    def count(self, hits: int, misses: int) -> None:
        """What the caller's version checks made of a lookup."""
        self.hits += hits
        self.misses += misses

    def stage(self, key: K, value: V) -> None:
        """What the current batch leaves behind for `key`, cached once it commits."""
        self._touched.add(key)
        self._staged[key] = value

    # --- the consumer loop's notifications (a projection forwards its hooks here) ---------------

    def batch_committed(self) -> None:
        values = self._values
        for key, value in self._staged.items():
            values[key] = value
            values.move_to_end(key)
        while len(values) > self.size:
            values.popitem(last=False)
        self._staged = {}
        self._touched = set()

    def batch_failed(self) -> None:
        for key in self._touched:
            self._values.pop(key, None)
        self._staged = {}
        self._touched = set()

    def partitions_changed(self) -> None:
        self._values.clear()
        self._staged = {}
        self._touched = set()
