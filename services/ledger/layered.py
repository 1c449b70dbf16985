"""A state's items read back from its row: the recent ones over an archive decoded on first need.

A debtor's settled invoices and spent cash sources are most of its history, and an event rarely
touches them. A state read back holds them undecoded: `Layered` answers from the recent items (a
plain dict), and from the archive only when asked for an id the archive holds or for every item. To
the domain it is an ordinary read-only mapping; `with_item` is how the domain adds or replaces an
item in any mapping of items, so the archive stays undecoded through `evolve` as well."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

_V = TypeVar("_V")


Parts = Mapping[str, Mapping[str, Any]]
"""An archive decoded: its items by part name (invoices, sources, timelines) and id."""


class Archive:
    """A row's archive: its JSON, decoded once, on first need, for every state and mapping that
    shares it."""

    __slots__ = ("_decode", "_parts", "raw")

    def __init__(self, raw: bytes, decode: Callable[[bytes], Parts]) -> None:
        self.raw = raw
        self._decode = decode
        self._parts: Parts | None = None

    @property
    def is_decoded(self) -> bool:
        return self._parts is not None

    def part(self, name: str) -> Mapping[str, Any]:
        if self._parts is None:
            self._parts = self._decode(self.raw)
        return self._parts[name]


class Layered(Mapping[str, _V]):
    """`recent` over the archive's part `name`, whose keys are among `archived_ids`; a recent item
    replaces its archived copy. Iterates the archived keys first, in the archive's order."""

    __slots__ = ("archive", "archived_ids", "name", "recent")

    def __init__(
        self, recent: dict[str, _V], archived_ids: frozenset[str], archive: Archive, name: str
    ) -> None:
        self.recent = recent
        self.archived_ids = archived_ids
        self.archive = archive
        self.name = name

    def _archived(self) -> Mapping[str, _V]:
        return self.archive.part(self.name)

    def __getitem__(self, key: str) -> _V:
        try:
            return self.recent[key]
        except KeyError:
            if key in self.archived_ids:
                return self._archived()[key]
            raise

    def __contains__(self, key: object) -> bool:
        return key in self.recent or (key in self.archived_ids and key in self._archived())

    def __iter__(self) -> Iterator[str]:
        recent = self.recent
        yield from (key for key in self._archived() if key not in recent)
        yield from recent

    def __len__(self) -> int:
        recent = self.recent
        return len(recent) + sum(1 for key in self._archived() if key not in recent)

    def __eq__(self, other: object) -> bool:
        """Compared without decoding the archive where the recent items tell (a state against the
        one an event made from it)."""
        if (
            isinstance(other, Layered)
            and other.archive is self.archive
            and other.archived_ids is self.archived_ids
        ):
            mine, theirs = self.recent, other.recent
            if mine.keys() == theirs.keys():
                return mine == theirs
            if any(key not in self.archived_ids for key in mine.keys() ^ theirs.keys()):
                return False  # an item one of them has and the other has not
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Layered({dict(self)!r})"

    def put(self, key: str, value: _V) -> Layered[_V]:
        return Layered({**self.recent, key: value}, self.archived_ids, self.archive, self.name)


def with_item(items: Mapping[str, _V], key: str, value: _V) -> Mapping[str, _V]:
    """`items` with `key` set to `value`, as a new mapping (an archive stays undecoded)."""
    if isinstance(items, Layered):
        return items.put(key, value)
    return {**items, key: value}
