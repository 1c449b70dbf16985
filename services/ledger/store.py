"""The ledger's tables (schema `ledger`) and every query on them.

The bulk statements of the hot paths (the projection's batch, the API's claim of event ids) run on
the session's asyncpg connection with one array parameter per column (`unnest`): no statement to
compile per batch, and no limit on the rows of a batch (a statement has at most 32767 parameters)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.ledger.domain import DebtorLedger
from services.ledger.state_codec import decode_ledger, decode_working, encode_stored
from services.ledger.statement import MovementLine
from services.runtime.consumer import StaleState
from services.runtime.database import driver_connection
from services.runtime.tables import RuntimeTables

SCHEMA = "ledger"
metadata = MetaData(schema=SCHEMA)
runtime = RuntimeTables(metadata, SCHEMA)

debtor_ledgers = Table(
    "debtor_ledgers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("archive", LargeBinary, nullable=True),
    Column("archive_index", LargeBinary, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

balance_movements = Table(
    "balance_movements",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("debtor_id", String(128), nullable=False),
    Column("invoice_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("due_date", Date, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("balance_movements_by_tenant", "tenant_id", "recorded_at"),
    Index("balance_movements_by_debtor", "tenant_id", "debtor_id"),
)

aging_totals = Table(
    "aging_totals",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("due_date", Date, primary_key=True),
    Column("effective_date", Date, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

credit_sales = Table(
    "credit_sales",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("sale_date", Date, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

business_dates = Table(
    "business_dates",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("business_date", Date, nullable=False),
)

ingested_events = Table(
    "ingested_events",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("payload_sha256", LargeBinary, nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)

event_outcomes = Table(
    "event_outcomes",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

event_rejections = Table(
    "event_rejections",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("event_type", String(128), nullable=True),
    Column("reason", Text, nullable=False),
    Column("rejected_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

aging_policies = Table(
    "aging_policies",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("bounds", ARRAY(Integer), nullable=False),
)

DebtorKey = tuple[str, str]


# --- the projection's writes ---------------------------------------------------------------


async def load_ledgers(session: AsyncSession, keys: Iterable[DebtorKey]) -> dict[DebtorKey, DebtorLedger]:
    wanted = list(keys)
    if not wanted:
        return {}
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"SELECT l.tenant_id, l.debtor_id, l.state, l.archive FROM {SCHEMA}.debtor_ledgers AS l"
        " JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, debtor_id)"
        " ON l.tenant_id = k.tenant_id AND l.debtor_id = k.debtor_id",
        [t for t, _ in wanted],
        [d for _, d in wanted],
    )
    return {(r["tenant_id"], r["debtor_id"]): decode_ledger(r["state"], r["archive"]) for r in rows}


Version = str
"""A debtor state row's version: the id of the transaction that last wrote it (`xmin`)."""


async def load_ledger_versions(
    session: AsyncSession, keys: Iterable[DebtorKey], known: Mapping[DebtorKey, Version]
) -> tuple[dict[DebtorKey, DebtorLedger], dict[DebtorKey, Version]]:
    """The version of every stored state among `keys`, and those states decoded from their working
    parts (`state_codec.decode_working`: partial where the row has an archive; `load_archives`
    completes them), except the ones still at the version `known` gives (the caller's copy of those
    is current)."""
    wanted = list(keys)
    if not wanted:
        return {}, {}
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"SELECT l.tenant_id, l.debtor_id, l.xmin::text AS version, l.archive IS NOT NULL AS archived,"
        " CASE WHEN k.version IS DISTINCT FROM l.xmin::text THEN l.state END AS state,"
        " CASE WHEN k.version IS DISTINCT FROM l.xmin::text THEN l.archive_index END AS archive_index"
        f" FROM {SCHEMA}.debtor_ledgers AS l"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, debtor_id, version)"
        " ON l.tenant_id = k.tenant_id AND l.debtor_id = k.debtor_id",
        [t for t, _ in wanted],
        [d for _, d in wanted],
        [known.get(key) for key in wanted],
    )
    states: dict[DebtorKey, DebtorLedger] = {}
    versions: dict[DebtorKey, Version] = {}
    for r in rows:
        key = (r["tenant_id"], r["debtor_id"])
        versions[key] = r["version"]
        if r["state"] is not None:
            states[key] = decode_working(r["state"], r["archived"], r["archive_index"])
    return states, versions


async def load_archives(
    session: AsyncSession, versions: Mapping[DebtorKey, Version]
) -> dict[DebtorKey, bytes]:
    """The archives of the rows, each as of the version given; raise `StaleState` if a row has
    changed since (its archive would not belong to the working part read)."""
    if not versions:
        return {}
    wanted = list(versions.items())
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"SELECT l.tenant_id, l.debtor_id, l.archive FROM {SCHEMA}.debtor_ledgers AS l"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, debtor_id, version)"
        " ON l.tenant_id = k.tenant_id AND l.debtor_id = k.debtor_id AND l.xmin::text = k.version",
        [t for (t, _), _ in wanted],
        [d for (_, d), _ in wanted],
        [version for _, version in wanted],
    )
    archives = {(r["tenant_id"], r["debtor_id"]): r["archive"] for r in rows if r["archive"] is not None}
    if len(archives) != len(wanted):
        changed = [key for key, _ in wanted if key not in archives]
        raise StaleState(f"{len(changed)} debtor states changed since read, e.g. {changed[:3]}")
    return archives


async def save_ledgers(
    session: AsyncSession, states: Mapping[DebtorKey, DebtorLedger], read: Mapping[DebtorKey, Version]
) -> dict[DebtorKey, Version]:
    """Write the states, each only if its row is still as this batch read it: at the version in
    `read`, or still absent when `read` has none. Return the version each row has once this
    transaction commits; raise `StaleState` (nothing may be kept) when a row changed meanwhile."""
    if not states:
        return {}
    ordered = sorted(states.items())  # one lock order for every writer
    existing = [(key, state) for key, state in ordered if key in read]
    new = [(key, state) for key, state in ordered if key not in read]
    connection = await driver_connection(session)
    rows = []
    if existing:
        encoded = [encode_stored(state) for _, state in existing]
        rows += await connection.fetch(
            f"UPDATE {SCHEMA}.debtor_ledgers AS l"
            " SET state = k.state, archive = coalesce(k.archive, l.archive),"
            " archive_index = CASE WHEN k.archive IS NULL THEN l.archive_index ELSE k.archive_index END,"
            " updated_at = now()"
            " FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::text[])"
            " AS k(tenant_id, debtor_id, state, archive, archive_index, version)"
            " WHERE l.tenant_id = k.tenant_id AND l.debtor_id = k.debtor_id AND l.xmin::text = k.version"
            " RETURNING l.tenant_id, l.debtor_id, l.xmin::text AS version",
            [t for (t, _), _ in existing],
            [d for (_, d), _ in existing],
            [stored.working for stored in encoded],
            [stored.archive for stored in encoded],
            [stored.archive_index for stored in encoded],
            [read[key] for key, _ in existing],
        )
    if new:
        encoded = [encode_stored(state) for _, state in new]
        rows += await connection.fetch(
            f"INSERT INTO {SCHEMA}.debtor_ledgers (tenant_id, debtor_id, state, archive, archive_index)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[])"
            " ON CONFLICT (tenant_id, debtor_id) DO NOTHING"
            " RETURNING tenant_id, debtor_id, xmin::text AS version",
            [t for (t, _), _ in new],
            [d for (_, d), _ in new],
            [stored.working for stored in encoded],
            [stored.archive for stored in encoded],
            [stored.archive_index for stored in encoded],
        )
    if len(rows) != len(ordered):
        written = {(r["tenant_id"], r["debtor_id"]) for r in rows}
        changed = [key for key, _ in ordered if key not in written]
        raise StaleState(f"{len(changed)} debtor states changed since read, e.g. {changed[:3]}")
    return {(r["tenant_id"], r["debtor_id"]): r["version"] for r in rows}


class MovementRow(NamedTuple):
    """A `balance_movements` row, its fields in the table's column order (COPY takes it as it is)."""

    tenant_id: str
    debtor_id: str
    invoice_id: str
    currency: str
    due_date: dt.date
    delta: int
    effective_date: dt.date
    recorded_at: dt.datetime


_MOVEMENT_COLUMNS = MovementRow._fields


SaleKey = tuple[str, str, dt.date]
"""(tenant, currency, sale date) of the credit sales totals (what counts as a sale: `kpi_sales`)."""


async def record_movements(
    session: AsyncSession, movements: Sequence[MovementRow], sales: Sequence[tuple[SaleKey, int]] = ()
) -> None:
    """Append the movements (COPY) and fold them into the per-tenant aging totals, and the signed
    credit sales into the per-day sales totals."""
    if not movements and not sales:
        return
    connection = await driver_connection(session)
    await _record_sales(connection, sales)
    if not movements:
        return
    await connection.copy_records_to_table(
        "balance_movements",
        schema_name=SCHEMA,
        columns=_MOVEMENT_COLUMNS,
        records=movements,
    )
    totals: dict[tuple[str, str, dt.date, dt.date], int] = {}
    for m in movements:
        key = (m.tenant_id, m.currency, m.due_date, m.effective_date)
        totals[key] = totals.get(key, 0) + m.delta
    ordered = sorted(totals.items())
    await connection.execute(
        f"INSERT INTO {SCHEMA}.aging_totals AS a (tenant_id, currency, due_date, effective_date, amount)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::date[], $5::bigint[])"
        " ON CONFLICT (tenant_id, currency, due_date, effective_date)"
        " DO UPDATE SET amount = a.amount + EXCLUDED.amount",
        [tenant for (tenant, _, _, _), _ in ordered],
        [currency for (_, currency, _, _), _ in ordered],
        [due for (_, _, due, _), _ in ordered],
        [effective for (_, _, _, effective), _ in ordered],
        [amount for _, amount in ordered],
    )


async def _record_sales(connection: Any, sales: Sequence[tuple[SaleKey, int]]) -> None:
    totals: dict[SaleKey, int] = {}
    for key, amount in sales:
        totals[key] = totals.get(key, 0) + amount
    ordered = sorted((key, amount) for key, amount in totals.items() if amount)
    if not ordered:
        return
    await connection.execute(
        f"INSERT INTO {SCHEMA}.credit_sales AS s (tenant_id, currency, sale_date, amount)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[])"
        " ON CONFLICT (tenant_id, currency, sale_date) DO UPDATE SET amount = s.amount + EXCLUDED.amount",
        [tenant for (tenant, _, _), _ in ordered],
        [currency for (_, currency, _), _ in ordered],
        [day for (_, _, day), _ in ordered],
        [amount for _, amount in ordered],
    )


async def advance_business_dates(session: AsyncSession, dates: Mapping[str, dt.date]) -> None:
    if not dates:
        return
    ordered = sorted(dates.items())
    connection = await driver_connection(session)
    await connection.execute(
        f"INSERT INTO {SCHEMA}.business_dates AS b (tenant_id, business_date)"
        " SELECT * FROM unnest($1::text[], $2::date[])"
        " ON CONFLICT (tenant_id)"
        " DO UPDATE SET business_date = greatest(b.business_date, EXCLUDED.business_date)",
        [t for t, _ in ordered],
        [d for _, d in ordered],
    )


# --- the API's reads -------------------------------------------------------------------------


async def load_ledger(session: AsyncSession, tenant_id: str, debtor_id: str) -> DebtorLedger | None:
    return (await load_ledgers(session, [(tenant_id, debtor_id)])).get((tenant_id, debtor_id))


async def business_date(session: AsyncSession, tenant_id: str) -> dt.date | None:
    value: dt.date | None = await session.scalar(
        select(business_dates.c.business_date).where(business_dates.c.tenant_id == tenant_id)
    )
    return value


async def aging_policy_bounds(session: AsyncSession, tenant_id: str) -> tuple[int, ...] | None:
    bounds: list[int] | None = await session.scalar(
        select(aging_policies.c.bounds).where(aging_policies.c.tenant_id == tenant_id)
    )
    return tuple(bounds) if bounds else None


async def set_aging_policy_bounds(session: AsyncSession, tenant_id: str, bounds: Sequence[int]) -> None:
    statement = pg_insert(aging_policies).values(tenant_id=tenant_id, bounds=list(bounds))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id"], set_={"bounds": statement.excluded.bounds}
        )
    )


async def outstanding_by_due_date(
    session: AsyncSession, tenant_id: str, as_of: dt.date, known_at: dt.datetime | None
) -> list[tuple[str, dt.date, int]]:
    """(currency, due date, outstanding) as of a business date: with everything known now (from the
    folded totals), or with only what had been recorded by `known_at` (from the movements)."""
    source: Any = aging_totals if known_at is None else balance_movements
    amount = source.c.amount if known_at is None else source.c.delta
    query = (
        select(source.c.currency, source.c.due_date, func.sum(amount).label("outstanding"))
        .where(source.c.tenant_id == tenant_id, source.c.effective_date <= as_of)
        .group_by(source.c.currency, source.c.due_date)
    )
    if known_at is not None:
        query = query.where(source.c.recorded_at <= known_at)
    rows = await session.execute(query)
    return [(r.currency, r.due_date, int(r.outstanding)) for r in rows if r.outstanding]


async def debtor_movements(
    session: AsyncSession, tenant_id: str, debtor_id: str, as_of: dt.date, known_at: dt.datetime | None
) -> list[MovementLine]:
    """One debtor's balance movements effective by a business date, netted per invoice, due date and
    effective date (nets of zero kept: an invoice settled the day it was issued is still known), all
    of them or only those recorded by `known_at`. The rows the portfolio aging sums, for one debtor."""
    m = balance_movements.c
    query = (
        select(m.invoice_id, m.currency, m.due_date, m.effective_date, func.sum(m.delta).label("delta"))
        .where(m.tenant_id == tenant_id, m.debtor_id == debtor_id, m.effective_date <= as_of)
        .group_by(m.invoice_id, m.currency, m.due_date, m.effective_date)
    )
    if known_at is not None:
        query = query.where(m.recorded_at <= known_at)
    rows = await session.execute(query)
    return [MovementLine(r.invoice_id, r.currency, r.due_date, r.effective_date, int(r.delta)) for r in rows]


# --- the API's idempotent ingest --------------------------------------------------------------


async def claim_event_ids(
    session: AsyncSession, tenant_id: str, digests: Mapping[str, bytes], accepted_at: dt.datetime
) -> set[str]:
    """Record the ids as accepted; return those that were new. A concurrent request posting the
    same id waits on the unique index until this transaction ends, then sees it as taken."""
    if not digests:
        return set()
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"INSERT INTO {SCHEMA}.ingested_events (tenant_id, event_id, payload_sha256, accepted_at)"
        " SELECT $1, e.event_id, e.digest, $4 FROM unnest($2::text[], $3::bytea[]) AS e(event_id, digest)"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        tenant_id,
        list(digests),
        list(digests.values()),
        accepted_at,
    )
    return {r["event_id"] for r in rows}


async def known_digests(session: AsyncSession, tenant_id: str, event_ids: Iterable[str]) -> dict[str, bytes]:
    ids = list(event_ids)
    if not ids:
        return {}
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"SELECT event_id, payload_sha256 FROM {SCHEMA}.ingested_events"
        " WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
        tenant_id,
        ids,
    )
    return {r["event_id"]: r["payload_sha256"] for r in rows}


# --- what became of accepted events ---------------------------------------------------------------

EventStatus = Literal["accepted", "applied", "parked", "rejected"]


@dataclass(frozen=True)
class Outcome:
    tenant_id: str
    event_id: str
    outcome: Literal["applied", "parked", "rejected"]
    reason: str | None = None
    event_type: str | None = None


async def record_outcomes(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """Record events that were parked, rejected, or applied after being parked; a rejection also
    joins the tenant's rejection feed. (An event simply applied needs no row: the consumer's
    processed ids say it was seen, and no outcome row says otherwise.)"""
    if not outcomes:
        return
    latest = {(o.tenant_id, o.event_id): o for o in outcomes}
    ordered = sorted(latest.values(), key=lambda o: (o.tenant_id, o.event_id))
    connection = await driver_connection(session)
    await connection.execute(
        f"INSERT INTO {SCHEMA}.event_outcomes AS o (tenant_id, event_id, outcome, reason)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
        " ON CONFLICT (tenant_id, event_id)"
        " DO UPDATE SET outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, decided_at = now()",
        [o.tenant_id for o in ordered],
        [o.event_id for o in ordered],
        [o.outcome for o in ordered],
        [o.reason for o in ordered],
    )
    rejected = [o for o in outcomes if o.outcome == "rejected"]
    if rejected:
        await connection.copy_records_to_table(
            "event_rejections",
            schema_name=SCHEMA,
            columns=("tenant_id", "event_id", "event_type", "reason"),
            records=[(o.tenant_id, o.event_id, o.event_type, o.reason or "") for o in rejected],
        )


@dataclass(frozen=True)
class EventState:
    event_id: str
    status: EventStatus
    accepted_at: dt.datetime
    reason: str | None
    decided_at: dt.datetime | None


async def event_state(session: AsyncSession, tenant_id: str, event_id: str) -> EventState | None:
    """What became of an accepted event, or None when it was never accepted."""
    row = (
        await session.execute(
            select(
                ingested_events.c.accepted_at,
                event_outcomes.c.outcome,
                event_outcomes.c.reason,
                event_outcomes.c.decided_at,
                runtime.processed_events.c.event_id.label("processed"),
            )
            .select_from(
                ingested_events.outerjoin(
                    event_outcomes,
                    (event_outcomes.c.tenant_id == ingested_events.c.tenant_id)
                    & (event_outcomes.c.event_id == ingested_events.c.event_id),
                ).outerjoin(
                    runtime.processed_events,
                    (runtime.processed_events.c.tenant_id == ingested_events.c.tenant_id)
                    & (runtime.processed_events.c.event_id == ingested_events.c.event_id),
                )
            )
            .where(ingested_events.c.tenant_id == tenant_id, ingested_events.c.event_id == event_id)
        )
    ).first()
    if row is None:
        return None
    status: EventStatus = row.outcome or ("applied" if row.processed is not None else "accepted")
    return EventState(event_id, status, row.accepted_at, row.reason, row.decided_at)


async def rejections(session: AsyncSession, tenant_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    r = event_rejections.c
    rows = await session.execute(
        select(r.seq, r.event_id, r.event_type, r.reason, r.rejected_at)
        .where(r.tenant_id == tenant_id, r.seq > after)
        .order_by(r.seq)
        .limit(limit)
    )
    return [
        {
            "seq": x.seq,
            "id": x.event_id,
            "type": x.event_type,
            "reason": x.reason,
            "rejected_at": x.rejected_at,
        }
        for x in rows
    ]
