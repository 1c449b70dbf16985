"""The notifier's tables (schema `notifier`): deliveries to make, and what it knows for the last look."""

from __future__ import annotations

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
    Text,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.profile import ProfileVersion
from services.runtime.tables import RuntimeTables

SCHEMA = "notifier"
metadata = MetaData(schema=SCHEMA)
runtime = RuntimeTables(metadata, SCHEMA)

# status: pending -> sending -> sent | skipped | failed | cancelled; sending -> pending on a transient failure
deliveries = Table(
    "deliveries",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("command_id", String(128), primary_key=True),
    Column("debtor_id", String(128), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("command", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("channel", String(16), nullable=True),
    Column("reference", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("deliveries_due", "status", "next_attempt_at"),
)

cancellations = Table(
    "cancellations",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("command_id", String(128), primary_key=True),
    Column("reason", Text, nullable=False),
)

item_balances = Table(
    "item_balances",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("invoice_id", String(128), primary_key=True),
    Column("outstanding", BigInteger, nullable=False),
)

case_states = Table(
    "case_states",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("case_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("change", String(32), nullable=False),
)

disputes = Table(
    "disputes",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("invoice_id", String(128), primary_key=True),
    Column("open", Boolean, nullable=False),
)

addressees = Table(
    "addressees",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("profile", JSONB, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("command_id", String(128), primary_key=True),
    Column("debtor_id", String(128), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("script", Text, nullable=False),
    Column("due_on", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),
)

tenant_profiles = Table(
    "tenant_profiles",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("effective_from", Date, nullable=False),
    Column("profile", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
"""The creditor's details (`profile.py`), one row per version; a version is never changed."""


async def profile_versions(session: AsyncSession, tenant_id: str) -> list[ProfileVersion]:
    t = tenant_profiles
    rows = await session.execute(
        select(t.c.version, t.c.effective_from, t.c.profile).where(t.c.tenant_id == tenant_id)
    )
    return [
        ProfileVersion(version=r.version, effective_from=r.effective_from, profile=r.profile) for r in rows
    ]
