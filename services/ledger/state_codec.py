"""How a debtor's ledger state is stored: the JSON of its working part, of its archive and of the
archive's index, and back; and whether a batch's events can be applied without reading the archive."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not
from typing import NamedTuple, TypeVar

import orjson
from pydantic import TypeAdapter

from contracts.journal import DebtorProfile, InvoiceIssued
from services.ledger.domain import CashSource, DebtorLedger, Invoice, LedgerEvent, Timeline, replace
from services.runtime.json_default import json_default

_ledger_codec: TypeAdapter[DebtorLedger] = TypeAdapter(DebtorLedger)
_Item = TypeVar("_Item")


def encode_ledger(state: DebtorLedger) -> bytes:
    """The state as JSON: orjson serializes the dataclasses field by field, the same bytes as
    pydantic's `TypeAdapter(DebtorLedger).dump_json` (a unit test checks), a fifth faster."""
    return orjson.dumps(state, default=json_default)


# --- a state's archive ---------------------------------------------------------------------------
#
# A debtor's state grows with its history, but an event touches one or a few of its invoices and
# cash sources. The row's `archive` holds the invoices, sources and timelines as they were when it
# was last written; the `state` a batch rewrites is the working part: every other field, and the
# items added or changed since (which take precedence over their archived copies when the row is
# read). The archive is rewritten once the working part has gathered `_rewrite_after` items. This
# is a matter of storage only: where each item is stored changes nothing `evolve` decides, and it
# sees every invoice and source but where an event provably needs none of the archived ones
# (below).


@dataclass(frozen=True)
class LedgerArchive:
    invoices: Mapping[str, Invoice] = field(default_factory=dict)
    sources: Mapping[str, CashSource] = field(default_factory=dict)
    timelines: Mapping[str, Timeline] = field(default_factory=dict)


_archive_codec: TypeAdapter[LedgerArchive] = TypeAdapter(LedgerArchive)

_STORED = "_stored_archive"
"""The state's archive as its row holds it, kept in the state's __dict__ (the domain's `replace`
carries it to every later state; the leading underscore keeps it out of the JSON)."""
_NOTHING_STORED = LedgerArchive()
_LEDGER_FIELDS = tuple(DebtorLedger.__dataclass_fields__)

ARCHIVE_EVERY = 8
"""The fewest items an archive rewrite waits for."""


def _rewrite_after(archived: int) -> int:
    """Items the working part gathers before the archive is written again: a batch writes the
    working part, and every so many items the archive, so about sqrt(2 x archived) keeps the bytes
    written per item changed smallest (a debtor with 128 invoices and sources: 16)."""
    return max(ARCHIVE_EVERY, math.isqrt(2 * archived))


def _changed(items: Mapping[str, _Item], archived: Mapping[str, _Item]) -> Mapping[str, _Item]:
    """The items added or changed since they were archived (not the archived instance: the domain's
    instances never change, a change makes a new one), in the state's order."""
    if not archived:
        return items
    keys = items.keys()
    return {key: items[key] for key in compress(keys, map(is_not, map(archived.get, keys), items.values()))}


def _archive_of(state: DebtorLedger) -> LedgerArchive:
    return LedgerArchive(invoices=state.invoices, sources=state.sources, timelines=state.timelines)


# --- reading the working part alone --------------------------------------------------------------
#
# Most events need nothing of a debtor's archived items: an invoice issued to a debtor with no free
# or earmarked cash and no parked event reads only whether its id is known, master data changes the
# profile alone. The row's `archive_index` (written with the archive) holds what tells them apart
# without reading the archive, so a batch reads the working part of every debtor it touches and the
# archive only of those whose events need it. `evolve` runs on the partial state of the others: its
# items are the working part's, which are the latest of each, and every item it adds or changes is
# a working item too, so the state written back is the same as the whole state's would be.


@dataclass(frozen=True)
class ArchiveIndex:
    """What a row's archive holds, as far as deciding whether an event needs it goes."""

    invoice_ids: frozenset[str] = frozenset()
    items: int = 0
    """Invoices and cash sources archived."""
    idle: bool = False
    """No archived cash source had free or earmarked cash (False for a row written before there was
    an index: such a row is read whole until its archive is written again)."""


_INDEX = "_archive_index"
"""On a partial state (its working part only): the index of the archive it was read without."""


class StoredLedger(NamedTuple):
    working: bytes
    archive: bytes | None
    """None: the row's archive stays as it is."""
    archive_index: bytes | None
    """The archive's index, written with the archive (None when the archive is not written)."""


def encode_stored(state: DebtorLedger) -> StoredLedger:
    """What a state's row is to hold: its working part, and its archive and the archive's index
    when those are to be rewritten. A whole state remembers the archive from then on; a partial
    state never rewrites it (its items are all working items)."""
    if _INDEX in state.__dict__:
        working = {name: getattr(state, name) for name in _LEDGER_FIELDS}
        return StoredLedger(orjson.dumps(working, default=json_default), None, None)
    archive: LedgerArchive = state.__dict__.get(_STORED, _NOTHING_STORED)
    invoices = _changed(state.invoices, archive.invoices)
    sources = _changed(state.sources, archive.sources)
    archived = len(archive.invoices) + len(archive.sources)
    rewrite = len(invoices) + len(sources) >= _rewrite_after(archived) or not (
        archive.invoices.keys() <= state.invoices.keys()
        and archive.sources.keys() <= state.sources.keys()
        and archive.timelines.keys() <= state.timelines.keys()
    )
    timelines: Mapping[str, Timeline] = {}
    if rewrite:
        archive = state.__dict__[_STORED] = _archive_of(state)
        invoices, sources = {}, {}
    else:
        timelines = _changed(state.timelines, archive.timelines)
    working = {name: getattr(state, name) for name in _LEDGER_FIELDS}
    if archive.invoices or archive.sources:
        working["invoices"] = invoices
        working["sources"] = sources
        working["timelines"] = timelines
    encoded = orjson.dumps(working, default=json_default)
    if not rewrite:
        return StoredLedger(encoded, None, None)
    return StoredLedger(encoded, orjson.dumps(archive), _encode_index(archive))


def _encode_index(archive: LedgerArchive) -> bytes:
    idle = not any(source.undirected > 0 or source.directed for source in archive.sources.values())
    return orjson.dumps(
        {
            "invoice_ids": list(archive.invoices),
            "items": len(archive.invoices) + len(archive.sources),
            "idle": idle,
        }
    )


def _decode_index(raw: bytes | None) -> ArchiveIndex:
    if raw is None:
        return ArchiveIndex()
    index = orjson.loads(raw)
    return ArchiveIndex(frozenset(index["invoice_ids"]), index["items"], index["idle"])


def decode_ledger(raw: bytes, archive: bytes | None = None) -> DebtorLedger:
    """A state as stored: its working part, merged with its archive when the row has one."""
    working = _ledger_codec.validate_json(raw)
    return working if archive is None else _merged(working, archive)


def decode_working(raw: bytes, archived: bool, index: bytes | None) -> DebtorLedger:
    """A row's working part alone: the whole state if the row has no archive, else a partial state
    that `needs_archive` and `with_archive` take."""
    state = _ledger_codec.validate_json(raw)
    if archived:
        state.__dict__[_INDEX] = _decode_index(index)
    return state


def needs_archive(state: DebtorLedger, events: Iterable[LedgerEvent]) -> bool:
    """Whether applying the events to the state needs its archived items (a whole state: never).
    False only where every event is master data or an invoice issued whose id the archive does not
    hold, to a debtor with no free or earmarked cash and no parked event, and the working part is
    not due to be archived."""
    index: ArchiveIndex | None = state.__dict__.get(_INDEX)
    if index is None:
        return False
    if not index.idle or state.parked or state.earmarked_by:
        return True
    if len(state.invoices) + len(state.sources) >= _rewrite_after(index.items):
        return True
    if any(source.undirected > 0 or source.directed for source in state.sources.values()):
        return True
    return not all(
        isinstance(event, DebtorProfile)
        or (isinstance(event, InvoiceIssued) and event.invoice_id not in index.invoice_ids)
        for event in events
    )


def with_archive(state: DebtorLedger, archive: bytes) -> DebtorLedger:
    """The whole state of a partial one, given its row's archive."""
    whole = _merged(state, archive)
    whole.__dict__.pop(_INDEX, None)
    return whole


def _merged(working: DebtorLedger, archive: bytes) -> DebtorLedger:
    stored = _archive_codec.validate_json(archive)
    state = replace(
        working,
        invoices={**stored.invoices, **working.invoices},
        sources={**stored.sources, **working.sources},
        timelines={**stored.timelines, **working.timelines},
    )
    state.__dict__[_STORED] = stored
    return state
