"""The debtor's record as a hash chain: each entry's hash covers its canonical form and the hash of the
entry before it, so changing, removing or reordering a stored entry shows when the chain is recomputed.

hash(entry) = SHA-256(canonical(entry) || previous hash as hex), the first entry of a debtor has the
previous hash `GENESIS` (64 zeros). `canonical` is compact JSON of the entry's fields with sorted keys;
dates are ISO dates, the recording moment ISO 8601 in UTC with microseconds (PostgreSQL keeps them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, fields

import orjson

GENESIS = "0" * 64


@dataclass(frozen=True)
class Line:
    """What an entry says, before it takes its place in a debtor's chain."""

    business_date: dt.date
    kind: str
    sentence: str
    source_id: str
    currency: str | None = None
    case_id: str | None = None
    amount_minor: int | None = None
    channel: str | None = None
    document: str | None = None


@dataclass(frozen=True)
class Entry:
    """A line in its place: the debtor's `seq`-th entry, recorded at `recorded_at`."""

    tenant_id: str
    debtor_id: str
    seq: int
    recorded_at: dt.datetime
    line: Line
    previous_hash: str
    hash: str


LINE_FIELDS = tuple(f.name for f in fields(Line))
"""A line's field names, in order (its canonical form and its stored row name them all)."""


def canonical(tenant_id: str, debtor_id: str, seq: int, recorded_at: dt.datetime, line: Line) -> bytes:
    values: dict[str, object] = {name: getattr(line, name) for name in LINE_FIELDS}
    values["business_date"] = line.business_date.isoformat()
    values.update(
        tenant_id=tenant_id,
        debtor_id=debtor_id,
        seq=seq,
        recorded_at=recorded_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
    )
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def entry_hash(
    tenant_id: str, debtor_id: str, seq: int, recorded_at: dt.datetime, line: Line, previous_hash: str
) -> str:
    body = canonical(tenant_id, debtor_id, seq, recorded_at, line) + previous_hash.encode()
    return hashlib.sha256(body).hexdigest()


def rehash(entry: Entry) -> str:
    """The hash of a stored entry, recomputed from its fields and its stored previous hash."""
    return entry_hash(
        entry.tenant_id, entry.debtor_id, entry.seq, entry.recorded_at, entry.line, entry.previous_hash
    )


@dataclass(frozen=True)
class Head:
    """The end of a debtor's chain: its last seq (0: none yet) and that entry's hash."""

    seq: int = 0
    hash: str = GENESIS


def append(
    tenant_id: str, debtor_id: str, head: Head, recorded_at: dt.datetime, lines: Iterable[Line]
) -> tuple[list[Entry], Head]:
    """The lines chained after `head`, and the new head."""
    entries = []
    for line in lines:
        seq = head.seq + 1
        digest = entry_hash(tenant_id, debtor_id, seq, recorded_at, line, head.hash)
        entries.append(Entry(tenant_id, debtor_id, seq, recorded_at, line, head.hash, digest))
        head = Head(seq, digest)
    return entries, head


@dataclass(frozen=True)
class Break:
    """The first place a debtor's stored chain differs from the recomputed one."""

    debtor_id: str
    seq: int
    what: str
    """hash, previous hash, seq or head."""
    stored: str
    recomputed: str

    def __str__(self) -> str:
        return (
            f"debtor {self.debtor_id}, entry {self.seq}: {self.what} differs"
            f" (stored {self.stored}, recomputed {self.recomputed})"
        )


class ChainCheck:
    """Recomputes one debtor's chain entry by entry in seq order as they are read, holding nothing but
    the running head, and names the first entry that differs."""

    def __init__(self, debtor_id: str) -> None:
        self.debtor_id = debtor_id
        self.head = Head()
        self.broken: Break | None = None

    def feed(self, entry: Entry) -> None:
        if self.broken is not None:
            return
        if entry.seq != self.head.seq + 1:  # one before it removed, or moved
            self._break(entry.seq, "seq", str(entry.seq), str(self.head.seq + 1))
        elif entry.previous_hash != self.head.hash:  # the entry before it changed or was moved
            self._break(entry.seq, "previous hash", entry.previous_hash, self.head.hash)
        else:
            digest = entry_hash(
                entry.tenant_id,
                entry.debtor_id,
                entry.seq,
                entry.recorded_at,
                entry.line,
                entry.previous_hash,
            )
            if digest != entry.hash:
                self._break(entry.seq, "hash", entry.hash, digest)
            else:
                self.head = Head(entry.seq, digest)

    def finish(self, stored: Head | None) -> Break | None:
        """After the debtor's last entry: the chain head stored must be where its entries end, or the
        last ones were removed."""
        if self.broken is None and stored != self.head:
            shown = f"{stored.seq}/{stored.hash}" if stored else "none"
            self._break(self.head.seq + 1, "head", shown, f"{self.head.seq}/{self.head.hash}")
        return self.broken

    def _break(self, seq: int, what: str, stored: str, recomputed: str) -> None:
        self.broken = Break(self.debtor_id, seq, what, stored, recomputed)


class Verifier:
    """Checks the chains of a set of debtors: their stored heads are given, their entries fed in
    (debtor, seq) order; `close` names the first break of every broken chain."""

    def __init__(self, heads: dict[str, Head]) -> None:
        self.heads = heads
        self.checked = 0
        self.breaks: list[Break] = []
        self._seen: set[str] = set()
        self._current: ChainCheck | None = None

    def feed(self, entry: Entry) -> None:
        if self._current is None or self._current.debtor_id != entry.debtor_id:
            self._finish()
            self._current = ChainCheck(entry.debtor_id)
            self._seen.add(entry.debtor_id)
        self.checked += 1
        self._current.feed(entry)

    def close(self) -> list[Break]:
        self._finish()
        for debtor_id in sorted(set(self.heads) - self._seen):  # a head whose entries are all gone
            self._current = ChainCheck(debtor_id)
            self._finish()
        return self.breaks

    def _finish(self) -> None:
        done, self._current = self._current, None
        if done is not None and (found := done.finish(self.heads.get(done.debtor_id))) is not None:
            self.breaks.append(found)


def verify(entries: Iterable[Entry], heads: dict[str, Head]) -> tuple[int, list[Break]]:
    """How many entries were checked, and the first break of every broken chain."""
    verifier = Verifier(heads)
    for entry in entries:
        verifier.feed(entry)
    return verifier.checked, verifier.close()
