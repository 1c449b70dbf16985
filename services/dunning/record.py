"""The debtor's record in PostgreSQL: the hash-chained entries (`debtor_timeline`) and each debtor's
chain head (`debtor_chain_heads`), written in the transaction of the state they describe; read by the
API a page at a time and by `arrears audit verify` in keyset pages.

One debtor's entries are chained in one order whichever member, batch or business-day slice writes
them: a writer locks the debtor's head row (`FOR UPDATE`, debtors in sorted order so that two
writers never wait for each other in a cycle) and appends after the seq and hash it finds there. The
consumer's batches are exactly-once (offsets and processed event ids commit with the entries), so a
replayed batch appends nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, String, Table, Text

from services.dunning.domain.audit import LINE_FIELDS, Break, Entry, Head, Line, Verifier, append
from services.dunning.store import SCHEMA, metadata

debtor_timeline = Table(
    "debtor_timeline",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("currency", String(3), nullable=True),
    Column("case_id", String(200), nullable=True),
    Column("amount_minor", BigInteger, nullable=True),
    Column("sentence", Text, nullable=False),
    Column("source_id", String(256), nullable=False),
    Column("channel", String(16), nullable=True),
    Column("document", Text, nullable=True),
    Column("previous_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("debtor_timeline_by_currency", "tenant_id", "debtor_id", "currency", "seq"),
)

debtor_chain_heads = Table(
    "debtor_chain_heads",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

ENTRIES = f"{SCHEMA}.{debtor_timeline.name}"
HEADS = f"{SCHEMA}.{debtor_chain_heads.name}"
ENTRY_COLUMNS = (
    "tenant_id",
    "debtor_id",
    "seq",
    "business_date",
    "recorded_at",
    "kind",
    "currency",
    "case_id",
    "amount_minor",
    "sentence",
    "source_id",
    "channel",
    "document",
    "previous_hash",
    "hash",
)

Pending = list[tuple[str, str, Line]]
"""Lines to append: (tenant, debtor, line), in the order they happened."""


async def append_lines(connection: Any, pending: Pending, recorded_at: dt.datetime) -> set[tuple[str, str]]:
    """Chain the lines after their debtors' heads (locked until the transaction ends) and write them;
    returns the debtors written."""
    by_debtor: dict[tuple[str, str], list[Line]] = defaultdict(list)
    for tenant, debtor, line in pending:
        by_debtor[(tenant, debtor)].append(line)
    if not by_debtor:
        return set()
    keys = sorted(by_debtor)
    tenants, debtors = [t for t, _ in keys], [d for _, d in keys]
    await connection.execute(
        f"INSERT INTO {HEADS} (tenant_id, debtor_id, seq, hash)"
        " SELECT t, d, 0, $3 FROM unnest($1::text[], $2::text[]) AS k(t, d) ORDER BY t, d"
        " ON CONFLICT (tenant_id, debtor_id) DO NOTHING",
        tenants,
        debtors,
        Head().hash,
    )
    rows = await connection.fetch(
        f"SELECT h.tenant_id, h.debtor_id, h.seq, h.hash FROM {HEADS} AS h"
        " JOIN unnest($1::text[], $2::text[]) AS k(t, d) ON h.tenant_id = k.t AND h.debtor_id = k.d"
        " ORDER BY h.tenant_id, h.debtor_id FOR UPDATE OF h",
        tenants,
        debtors,
    )
    heads = {(r["tenant_id"], r["debtor_id"]): Head(r["seq"], r["hash"]) for r in rows}
    records: list[tuple[Any, ...]] = []
    new_heads: list[tuple[str, str, Head]] = []
    for tenant, debtor in keys:
        entries, head = append(
            tenant, debtor, heads[(tenant, debtor)], recorded_at, by_debtor[(tenant, debtor)]
        )
        records.extend(_record(e) for e in entries)
        new_heads.append((tenant, debtor, head))
    await connection.copy_records_to_table(
        debtor_timeline.name, schema_name=SCHEMA, columns=ENTRY_COLUMNS, records=records
    )
    await connection.execute(
        f"UPDATE {HEADS} AS h SET seq = k.seq, hash = k.hash"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS k(t, d, seq, hash)"
        " WHERE h.tenant_id = k.t AND h.debtor_id = k.d",
        [t for t, _, _ in new_heads],
        [d for _, d, _ in new_heads],
        [h.seq for _, _, h in new_heads],
        [h.hash for _, _, h in new_heads],
    )
    return set(keys)


def _record(entry: Entry) -> tuple[Any, ...]:
    """The entry as a row (`ENTRY_COLUMNS`)."""
    values: dict[str, Any] = {name: getattr(entry.line, name) for name in LINE_FIELDS}
    values.update(
        tenant_id=entry.tenant_id,
        debtor_id=entry.debtor_id,
        seq=entry.seq,
        recorded_at=entry.recorded_at,
        previous_hash=entry.previous_hash,
        hash=entry.hash,
    )
    return tuple(values[column] for column in ENTRY_COLUMNS)


def entry_of(row: Any) -> Entry:
    line = Line(**{name: row[name] for name in LINE_FIELDS})
    return Entry(
        row["tenant_id"],
        row["debtor_id"],
        row["seq"],
        row["recorded_at"],
        line,
        row["previous_hash"],
        row["hash"],
    )


async def page(
    connection: Any, tenant: str, debtor: str, after: int, limit: int, currency: str | None
) -> list[Entry]:
    """A debtor's entries after seq `after`, in order, in one currency or all."""
    rows = await connection.fetch(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM {ENTRIES}"
        " WHERE tenant_id = $1 AND debtor_id = $2 AND seq > $3 AND ($4::text IS NULL OR currency = $4)"
        " ORDER BY seq LIMIT $5",
        tenant,
        debtor,
        after,
        currency,
        limit,
    )
    return [entry_of(r) for r in rows]


async def _entries(
    connection: Any, tenant: str, low: str | None, high: str | None, debtors: list[str], size: int
) -> AsyncIterator[Entry]:
    """The tenant's entries of debtors in (low, high] (of `debtors` only, unless empty), in (debtor,
    seq) order, by keyset pages."""
    debtor, seq = low, None
    while True:
        rows = await connection.fetch(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM {ENTRIES} WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR (debtor_id, seq) > ($2, $3::bigint))"
            " AND ($4::text IS NULL OR debtor_id <= $4)"
            " AND (cardinality($6::text[]) = 0 OR debtor_id = ANY($6))"
            " ORDER BY debtor_id, seq LIMIT $5",
            tenant,
            debtor,
            seq if seq is not None else 2**62,
            high,
            size,
            debtors,
        )
        for row in rows:
            yield entry_of(row)
        if len(rows) < size:
            return
        debtor, seq = rows[-1]["debtor_id"], rows[-1]["seq"]


async def verify_tenant(
    connection: Any,
    tenant: str,
    debtors: Sequence[str] = (),
    heads_page: int = 1_000,
    entries_page: int = 5_000,
) -> tuple[int, list[Break]]:
    """Recompute the tenant's chains (or the given debtors') from the database, a page of chain heads
    and then their entries at a time; how many entries were checked and the first break of every
    broken chain. Run it in a repeatable-read transaction: heads and entries of one snapshot."""
    checked = 0
    breaks: list[Break] = []
    low: str | None = None
    while True:
        rows = await connection.fetch(
            f"SELECT debtor_id, seq, hash FROM {HEADS} WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR debtor_id > $2)"
            " AND (cardinality($3::text[]) = 0 OR debtor_id = ANY($3))"
            " ORDER BY debtor_id LIMIT $4",
            tenant,
            low,
            list(debtors),
            heads_page,
        )
        last = len(rows) < heads_page
        high = None if last else rows[-1]["debtor_id"]
        verifier = Verifier({r["debtor_id"]: Head(r["seq"], r["hash"]) for r in rows})
        async for entry in _entries(connection, tenant, low, high, list(debtors), entries_page):
            verifier.feed(entry)
        checked += verifier.checked
        breaks.extend(verifier.close())
        if last:
            return checked, breaks
        low = high
