"""A state's items read back from its row: the recent ones over an archive decoded on first need.

A debtor's settled invoices and spent cash sources are most of its history, and an event rarely
touches them. A state read back holds them undecoded: `Layered` answers from the recent items (a
plain dict), and from the archive only when asked for an id the archive holds or for every item. To
the domain it is an ordinary read-only mapping; `with_item` is how the domain adds or replaces an
item in any mapping of items, so the archive stays undecoded through `evolve` as well."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import orjson

from services.runtime.json_default import json_default

_V = TypeVar("_V")
_ABSENT: Any = object()


Validate = Callable[[Any], Any]
"""Makes one item of a part from its JSON data."""


class _Part(Mapping[str, Any]):
    """One part of an archive as JSON data, each item made when it is first read (`made` holds the
    items made so far, and those the archive was written from)."""

    __slots__ = ("data", "made", "validate")

    def __init__(self, data: dict[str, Any], validate: Validate, made: dict[str, Any] | None = None) -> None:
        self.data = data
        self.made = made if made is not None else {}
        self.validate = validate

    def __getitem__(self, key: str) -> Any:
        item = self.made.get(key, _ABSENT)
        if item is _ABSENT:
            item = self.made[key] = self.validate(self.data[key])
        return item

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Archive:
    """A row's archive: its JSON, parsed on first need for every state and mapping that shares it,
    and each item made when first read (a payment naming one settled invoice makes that one)."""

    __slots__ = ("_parts", "_validators", "raw")

    def __init__(self, raw: bytes, validators: Mapping[str, Validate]) -> None:
        self.raw = raw
        self._validators = validators
        self._parts: dict[str, _Part] | None = None

    @property
    def is_decoded(self) -> bool:
        return self._parts is not None

    def part(self, name: str) -> Mapping[str, Any]:
        return self._parsed()[name]

    def _parsed(self) -> dict[str, _Part]:
        if self._parts is None:
            data = orjson.loads(self.raw)
            self._parts = {part: _Part(data.get(part, {}), check) for part, check in self._validators.items()}
        return self._parts

    def spliced(
        self, archived: Mapping[str, Mapping[str, Any]], taken: Mapping[str, Iterable[str]]
    ) -> Archive:
        """This archive with the `archived` items added or replaced and the `taken` ids taken out
        (both by part name), and its JSON; what this one had parsed and made is not done again."""
        data: dict[str, dict[str, Any]] = {}
        made: dict[str, dict[str, Any]] = {}
        for name, part in self._parsed().items():
            data[name], made[name] = dict(part.data), dict(part.made)
            for key in taken.get(name, ()):
                data[name].pop(key, None)
                made[name].pop(key, None)
            data[name].update(archived.get(name, {}))
            made[name].update(archived.get(name, {}))
        spliced = Archive(orjson.dumps(data, default=json_default), self._validators)
        spliced._parts = {name: _Part(data[name], self._validators[name], made[name]) for name in data}
        return spliced


class Layered(Mapping[str, _V]):
    """`recent` over the archive's part `name`, whose keys are among `archived_ids` (`exact`: are
    those ids); a recent item replaces its archived copy. Iterates the archived keys first, in the
    archive's order."""

    __slots__ = ("archive", "archived_ids", "exact", "name", "recent")

    def __init__(
        self,
        recent: dict[str, _V],
        archived_ids: frozenset[str],
        archive: Archive,
        name: str,
        *,
        exact: bool = True,
    ) -> None:
        self.recent = recent
        self.archived_ids = archived_ids
        self.archive = archive
        self.name = name
        self.exact = exact

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
        if key in self.recent:
            return True
        return key in self.archived_ids and (self.exact or key in self._archived())

    def __iter__(self) -> Iterator[str]:
        recent = self.recent
        yield from (key for key in self._archived() if key not in recent)
        yield from recent

    def __len__(self) -> int:
        recent = self.recent
        return len(recent) + sum(1 for key in self._archived() if key not in recent)

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping.get would go through __getitem__ and its exception: this is the hot path.
        item = self.recent.get(key, _ABSENT)
        if item is not _ABSENT:
            return item
        return self._archived().get(key, default) if key in self.archived_ids else default

    def __eq__(self, other: object) -> bool:
        """Compared without decoding the archive where the recent items tell (a state against the
        one an event made from it)."""
        if (
            isinstance(other, Layered)
            and other.archive is self.archive
            and other.archived_ids is self.archived_ids
        ):
            mine, theirs = self.recent, other.recent
            if mine == theirs:
                return True
            keys, their_keys = mine.keys(), theirs.keys()
            if len(mine) == len(theirs) and keys == their_keys:
                return False  # the same keys, a recent item differs
            if not (keys ^ their_keys) <= self.archived_ids:
                return False  # an item one of them has and the other has not
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Layered({dict(self)!r})"


def with_item(items: Mapping[str, _V], key: str, value: _V) -> Mapping[str, _V]:
    """`items` with `key` set to `value`, as a new mapping (an archive stays undecoded)."""
    if type(items) is not Layered:
        return {**items, key: value}
    layered: Layered[_V] = object.__new__(Layered)  # not __init__: this runs per item an event stores
    layered.recent = {**items.recent, key: value}
    layered.archived_ids = items.archived_ids
    layered.archive = items.archive
    layered.name = items.name
    layered.exact = items.exact
    return layered
