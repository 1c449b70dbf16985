"""The dunning service's tables (schema `dunning`): cases, their timelines, the agency feed, policies,
debtor data and business dates; and every statement the consumer runs on them."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.journal import DebtorProfile
from contracts.policy import PolicyPublished, policy_in_force
from services.dunning.agencies import AgencyPerformance
from services.dunning.domain import Case
from services.runtime.consumer import StaleOffsets
from services.runtime.database import driver_connection
from services.runtime.tables import RuntimeTables

SCHEMA = "dunning"
DebtorKey = tuple[str, str]
metadata = MetaData(schema=SCHEMA)
runtime = RuntimeTables(metadata, SCHEMA)


class CaseChanged(StaleOffsets):
    """A case row changed between a batch's read and its write (another member of the group wrote it,
    as partitions moved in a rebalance): the batch is rolled back and read again from the stored
    offsets, so neither write is lost."""

    def __init__(self, cases: list[tuple[str, str]]) -> None:
        self.cases = cases
        super().__init__(f"changed since read: {', '.join(f'{t}/{c}' for t, c in cases[:10])}")

    def __reduce__(self) -> tuple[type[CaseChanged], tuple[list[tuple[str, str]]]]:
        # Raised in a worker process, it reaches the consumer pickled.
        return (type(self), (self.cases,))


# One row per debtor and currency. `state` is the domain's case; the other columns are copies of
# its fields for listing and for selecting the cases due on a business date in one query.
cases = Table(
    "cases",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("case_id", String(200), primary_key=True),
    Column("debtor_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("step", String(64), nullable=True),
    Column("overdue_minor", BigInteger, nullable=False),
    Column("oldest_due_date", Date, nullable=True),
    Column("next_action_date", Date, nullable=True),
    Column("agency_id", String(128), nullable=True),
    Column("version", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("cases_due", "tenant_id", "next_action_date"),
    Index("cases_by_debtor", "tenant_id", "debtor_id"),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("case_id", String(200), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("entry", JSONB, nullable=False),
    Index("timeline_by_case", "tenant_id", "case_id", "id"),
)

agency_feed = Table(
    "agency_feed",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("agency_id", String(128), nullable=False),
    Column("case_id", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("entry", JSONB, nullable=False),
    Index("agency_feed_by_agency", "tenant_id", "agency_id", "position"),
)

policies = Table(
    "policies",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("effective_from", Date, nullable=False),
    Column("document", JSONB, nullable=False),
)

debtors = Table(
    "debtors",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("profile", JSONB, nullable=False),
)

business_dates = Table(
    "business_dates",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("business_date", Date, nullable=False),
    # The policy version the tenant's last business day was decided under: a day under another one
    # plans every open case again. Null in rows written before it was kept.
    Column("policy_version", Integer, nullable=True),
)

agency_performance = Table(
    "agency_performance",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("agency_id", String(128), primary_key=True),
    Column("segment", String(64), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("band", String(64), primary_key=True),
    Column("placements", Integer, nullable=False),
    Column("placed_minor", BigInteger, nullable=False),
    Column("recovered_minor", BigInteger, nullable=False),
)

# Each debtor's risk segment in each currency (its cases are per currency), from its latest score
# event in that currency (collections.scores.v1), and whether scoring proposes that debt for write-off.
segments = Table(
    "segments",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("segment", String(64), nullable=False),
    Column("write_off_proposed", Boolean, nullable=False, server_default=text("false")),
)

recorded_requests = Table(
    "recorded_requests",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("content_sha256", LargeBinary, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


QUALIFIED_CASES = f"{SCHEMA}.{cases.name}"
CASE_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("debtor_id", "text"),
    ("currency", "text"),
    ("status", "text"),
    ("step", "text"),
    ("overdue_minor", "bigint"),
    ("oldest_due_date", "date"),
    ("next_action_date", "date"),
    ("agency_id", "text"),
    ("version", "integer"),
    ("state", "bytea"),
)
_CASE_NAMES = ", ".join(c for c, _ in CASE_COLUMNS)
WRITE_CASES = (
    "WITH r AS (SELECT * FROM unnest("
    + ", ".join(f"${n}::{t}[]" for n, (_, t) in enumerate(CASE_COLUMNS, 1))
    + f", ${len(CASE_COLUMNS) + 1}::text[]) AS r({_CASE_NAMES}, read_version)),"
    f" updated AS (UPDATE {QUALIFIED_CASES} AS c SET "
    + ", ".join(f"{c} = r.{c}" for c, _ in CASE_COLUMNS[2:])
    + ", updated_at = now() FROM r"
    " WHERE c.tenant_id = r.tenant_id AND c.case_id = r.case_id AND c.xmin::text = r.read_version"
    " RETURNING c.tenant_id, c.case_id, c.xmin::text AS version),"
    f" inserted AS (INSERT INTO {QUALIFIED_CASES} ({_CASE_NAMES}, updated_at)"
    f" SELECT {_CASE_NAMES}, now() FROM r WHERE r.read_version IS NULL"
    " ON CONFLICT (tenant_id, case_id) DO NOTHING"
    " RETURNING tenant_id, case_id, xmin::text AS version)"
    " SELECT * FROM updated UNION ALL SELECT * FROM inserted"
)
"""Every changed case in one statement, one array per column and the version each row was read
with (null: it had none): a row is updated only while it has that version, inserted only while
there is none. Each row written comes back with its new version; one that does not was changed by
another writer since it was read."""
LOAD_CASES = (
    "SELECT c.tenant_id, c.debtor_id, c.case_id, c.xmin::text AS version,"
    " CASE WHEN k.version IS DISTINCT FROM c.xmin::text THEN c.state END AS state"
    f" FROM {QUALIFIED_CASES} AS c"
    " JOIN unnest($1::text[], $2::text[]) AS d(tenant_id, debtor_id)"
    " ON c.tenant_id = d.tenant_id AND c.debtor_id = d.debtor_id"
    " LEFT JOIN unnest($3::text[], $4::text[], $5::text[]) AS k(tenant_id, case_id, version)"
    " ON c.tenant_id = k.tenant_id AND c.case_id = k.case_id"
)
"""The cases of some debtors with their versions; the state only where it is not the version the
caller holds ($3..$5: tenant, case id and version of each case it holds)."""
DUE_DEBTORS = (
    f"SELECT DISTINCT debtor_id FROM {QUALIFIED_CASES} WHERE tenant_id = $1 AND next_action_date <= $2"
    " ORDER BY debtor_id"
)
"""The debtors with a case whose next action date has come (by the `cases_due` index)."""
REPLANNED_DEBTORS = (
    f"SELECT DISTINCT debtor_id FROM {QUALIFIED_CASES}"
    " WHERE tenant_id = $1 AND (next_action_date <= $2 OR status <> 'closed') ORDER BY debtor_id"
)
"""On the first business day of a policy version: the debtors with a due case or an open one, every
one of which is to be planned again under that version (`_due_debtors` leaves out those that were
already, before the day was interrupted and its clock record came again)."""
TIMELINE_COLUMNS = ("tenant_id", "case_id", "business_date", "kind", "event_id", "entry")
FEED_COLUMNS = ("tenant_id", "agency_id", "case_id", "kind", "entry")


def case_row(case: Case, state: bytes) -> tuple[Any, ...]:
    """The case as a row of the `cases` table (`CASE_COLUMNS`), its encoded state given."""
    items = case.open_items()
    return (
        case.tenant_id,
        case.case_id,
        case.debtor_id,
        case.currency,
        case.status,
        case.step,
        case.overdue(case.as_of) if case.as_of else 0,
        items[0].due_date if items else None,
        case.next_action_date,
        case.placement.agency_id if case.placement else None,
        case.version,
        state,
    )


async def save_policies(session: AsyncSession, published: list[tuple[str, PolicyPublished]]) -> None:
    for tenant, policy in published:
        await session.execute(
            pg_insert(policies)
            .values(
                tenant_id=tenant,
                version=policy.version,
                effective_from=policy.effective_from,
                document=policy.model_dump(mode="json"),
            )
            .on_conflict_do_nothing()
        )


async def load_policies(session: AsyncSession, tenants: Iterable[str]) -> dict[str, list[PolicyPublished]]:
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    rows = await session.execute(
        select(policies.c.tenant_id, policies.c.document).where(policies.c.tenant_id.in_(wanted))
    )
    found: dict[str, list[PolicyPublished]] = defaultdict(list)
    for row in rows:
        found[row.tenant_id].append(PolicyPublished.model_validate(row.document))
    return found


async def save_debtors(session: AsyncSession, profiles: dict[DebtorKey, dict[str, Any]]) -> None:
    if not profiles:
        return
    statement = pg_insert(debtors).values(
        [{"tenant_id": t, "debtor_id": d, "profile": p} for (t, d), p in sorted(profiles.items())]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "debtor_id"], set_={"profile": statement.excluded.profile}
        )
    )


@dataclass(frozen=True)
class Chunk:
    rows: list[tuple[bytes, str]]
    """Each case's encoded state and its row's version."""
    profiles: dict[str, DebtorProfile]


async def read_chunk(session: AsyncSession, tenant: str, debtor_ids: Sequence[str]) -> Chunk:
    """The stored cases and profiles of a chunk of debtor_ids, on a connection of its own."""
    async with AsyncSession(session.bind) as reader:
        connection = await driver_connection(reader)
        rows = await connection.fetch(
            f"SELECT state, xmin::text AS version FROM {QUALIFIED_CASES}"
            " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
            tenant,
            list(debtor_ids),
        )
        profiles = await profile_rows(connection, tenant, debtor_ids)
        await reader.rollback()
    return Chunk([(r["state"], r["version"]) for r in rows], profiles)


async def save_segments(session: AsyncSession, scored: dict[tuple[str, str, str], tuple[str, bool]]) -> None:
    """Each debtor's risk segment in each currency from its latest score in that currency, and whether
    scoring proposes the currency's debt for write-off."""
    if not scored:
        return
    statement = pg_insert(segments).values(
        [
            {"tenant_id": t, "debtor_id": d, "currency": c, "segment": s, "write_off_proposed": w}
            for (t, d, c), (s, w) in sorted(scored.items())
        ]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "debtor_id", "currency"],
            set_={
                "segment": statement.excluded.segment,
                "write_off_proposed": statement.excluded.write_off_proposed,
            },
        )
    )


@dataclass(frozen=True)
class Scored:
    segments: dict[str, str]
    """By currency."""
    write_off_proposed: frozenset[str]


async def load_segments(session: AsyncSession, tenant: str, debtor_ids: Sequence[str]) -> dict[str, Scored]:
    if not debtor_ids:
        return {}
    t = segments
    rows = await session.execute(
        select(t.c.debtor_id, t.c.currency, t.c.segment, t.c.write_off_proposed).where(
            t.c.tenant_id == tenant, t.c.debtor_id.in_(list(debtor_ids))
        )
    )
    by_currency: dict[str, dict[str, str]] = defaultdict(dict)
    proposed: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_currency[r.debtor_id][r.currency] = r.segment
        if r.write_off_proposed:
            proposed[r.debtor_id].add(r.currency)
    return {d: Scored(by_currency[d], frozenset(proposed[d])) for d in by_currency}


async def load_profiles(
    session: AsyncSession, tenant: str, debtor_ids: Sequence[str]
) -> dict[str, DebtorProfile]:
    if not debtor_ids:
        return {}
    return await profile_rows(await driver_connection(session), tenant, debtor_ids)


async def profile_rows(connection: Any, tenant: str, debtor_ids: Sequence[str]) -> dict[str, DebtorProfile]:
    rows = await connection.fetch(
        f"SELECT debtor_id, profile::text AS profile FROM {SCHEMA}.{debtors.name}"
        " WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])",
        tenant,
        list(debtor_ids),
    )
    # Validated when its record was consumed, stored as its JSON dump: read back without validating
    # again (validating a time zone lists the whole time zone database, for every debtor).
    return {r["debtor_id"]: _profile(r["profile"]) for r in rows}


_PROFILE_FIELDS = frozenset(DebtorProfile.model_fields)


def _profile(raw: str) -> DebtorProfile:
    """A stored profile (a validated profile's JSON dump) as the model, without validating it again;
    one stored without every field (by an older version) is validated, which fills in defaults."""
    values = orjson.loads(raw)
    if values.keys() >= _PROFILE_FIELDS:
        return DebtorProfile.model_construct(**values)
    return DebtorProfile.model_validate(values)


async def load_business_dates(session: AsyncSession, tenants: Iterable[str]) -> dict[str, dt.date]:
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    rows = await session.execute(
        select(business_dates.c.tenant_id, business_dates.c.business_date).where(
            business_dates.c.tenant_id.in_(wanted)
        )
    )
    return {r.tenant_id: r.business_date for r in rows}


async def save_business_dates(session: AsyncSession, dates: dict[str, dt.date], tenants: set[str]) -> None:
    rows = [{"tenant_id": t, "business_date": d} for t, d in sorted(dates.items()) if t in tenants]
    if not rows:
        return
    statement = pg_insert(business_dates).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "business_date": func.greatest(
                    business_dates.c.business_date, statement.excluded.business_date
                )
            },
        )
    )


async def load_applied_policies(
    session: AsyncSession, tenants: Iterable[str], versions: dict[str, list[PolicyPublished]]
) -> dict[str, int]:
    """The policy version each tenant's open cases were last planned under on a business day (0:
    none). A row without one (written before it was kept) counts the version in force on its date."""
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    t = business_dates
    rows = await session.execute(
        select(t.c.tenant_id, t.c.business_date, t.c.policy_version).where(t.c.tenant_id.in_(wanted))
    )
    applied: dict[str, int] = {}
    for row in rows:
        if row.policy_version is not None:
            applied[row.tenant_id] = row.policy_version
            continue
        in_force = policy_in_force(versions.get(row.tenant_id, []), row.business_date)
        applied[row.tenant_id] = in_force.version if in_force is not None else 0
    return applied


async def save_applied_policies(session: AsyncSession, applied: dict[str, int]) -> None:
    """Keep the version each tenant's business day was decided under (only the batch with its clock
    record writes it, so a batch of facts on another member never sets it back)."""
    t = business_dates
    for tenant, version in sorted(applied.items()):
        await session.execute(update(t).where(t.c.tenant_id == tenant).values(policy_version=version))


async def add_performance(session: AsyncSession, tenant: str, added: AgencyPerformance) -> None:
    """Add placements and recoveries to the tenant's agency records (increments, so that a day's
    slices and the batch's transaction each add their own without waiting for one another)."""
    rows = [
        {
            "tenant_id": tenant,
            "agency_id": k.agency_id,
            "segment": k.segment,
            "currency": k.currency,
            "band": k.band,
            "placements": r.placements,
            "placed_minor": r.placed_minor,
            "recovered_minor": r.recovered_minor,
        }
        for k, r in sorted(
            added.items(), key=lambda kv: (kv[0].agency_id, kv[0].segment, kv[0].currency, kv[0].band)
        )
    ]
    if not rows:
        return
    table = agency_performance
    statement = pg_insert(table).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "agency_id", "segment", "currency", "band"],
            set_={
                c: table.c[c] + statement.excluded[c]
                for c in ("placements", "placed_minor", "recovered_minor")
            },
        )
    )
