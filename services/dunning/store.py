"""The dunning service's tables (schema `dunning`): cases, their timelines, the agency feed, policies,
debtor data and business dates."""

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
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.runtime.consumer import StaleOffsets
from services.runtime.tables import RuntimeTables

SCHEMA = "dunning"
metadata = MetaData(schema=SCHEMA)
runtime = RuntimeTables(metadata, SCHEMA)


class CaseChanged(StaleOffsets):
    """A case row changed between a batch's read and its write (another member of the group wrote it,
    as partitions moved in a rebalance): the batch is rolled back and read again from the stored
    offsets, so neither write is lost."""

    def __init__(self, cases: list[tuple[str, str]]) -> None:
        self.cases = cases
        super().__init__(f"changed since read: {', '.join(f'{t}/{c}' for t, c in cases[:10])}")


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
