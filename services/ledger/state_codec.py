"""How a debtor's ledger state is stored: the JSON of its working part and of its archive, and back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not
from typing import TypeVar

import orjson
from pydantic import TypeAdapter

from services.ledger.domain import CashSource, DebtorLedger, Invoice, Timeline, replace
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
# is a matter of storage only: in memory the state is whole, `evolve` sees every invoice and
# source, and where each one is stored changes nothing it decides.


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


def _rewrite_after(archive: LedgerArchive) -> int:
    """Items the working part gathers before the archive is written again: a batch writes the
    working part, and every so many items the archive, so about sqrt(2 x archived) keeps the bytes
    written per item changed smallest (a debtor with 128 invoices and sources: 16)."""
    return max(ARCHIVE_EVERY, math.isqrt(2 * (len(archive.invoices) + len(archive.sources))))


def _changed(items: Mapping[str, _Item], archived: Mapping[str, _Item]) -> Mapping[str, _Item]:
    """The items added or changed since they were archived (not the archived instance: the domain's
    instances never change, a change makes a new one), in the state's order."""
    if not archived:
        return items
    keys = items.keys()
    return {key: items[key] for key in compress(keys, map(is_not, map(archived.get, keys), items.values()))}


def _archive_of(state: DebtorLedger) -> LedgerArchive:
    return LedgerArchive(invoices=state.invoices, sources=state.sources, timelines=state.timelines)


def encode_stored(state: DebtorLedger) -> tuple[bytes, bytes | None]:
    """What a state's row is to hold: its working part, and its archive when that is to be rewritten
    (None: the row's archive stays as it is). The state remembers the archive from then on."""
    archive: LedgerArchive = state.__dict__.get(_STORED, _NOTHING_STORED)
    invoices = _changed(state.invoices, archive.invoices)
    sources = _changed(state.sources, archive.sources)
    rewrite = len(invoices) + len(sources) >= _rewrite_after(archive) or not (
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
    return encoded, orjson.dumps(archive) if rewrite else None


def decode_ledger(raw: bytes, archive: bytes | None = None) -> DebtorLedger:
    """A state as stored: its working part, merged with its archive when the row has one."""
    working = _ledger_codec.validate_json(raw)
    if archive is None:
        return working
    stored = _archive_codec.validate_json(archive)
    state = replace(
        working,
        invoices={**stored.invoices, **working.invoices},
        sources={**stored.sources, **working.sources},
        timelines={**stored.timelines, **working.timelines},
    )
    state.__dict__[_STORED] = stored
    return state
