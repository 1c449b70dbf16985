"""The dunning service's first schema: cases, timelines, the agency feed, policies, debtors, business
dates, recorded requests, and the runtime tables.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from services.runtime.tables import create_runtime_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "dunning"


def upgrade() -> None:
    create_runtime_tables(op, SCHEMA)
    op.create_table(
        "cases",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(200), primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        sa.Column("overdue_minor", sa.BigInteger, nullable=False),
        sa.Column("oldest_due_date", sa.Date, nullable=True),
        sa.Column("next_action_date", sa.Date, nullable=True),
        sa.Column("agency_id", sa.String(128), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("cases_due", "cases", ["tenant_id", "next_action_date"], schema=SCHEMA)
    op.create_index("cases_by_debtor", "cases", ["tenant_id", "debtor_id"], schema=SCHEMA)
    op.create_table(
        "timeline",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("entry", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("timeline_by_case", "timeline", ["tenant_id", "case_id", "id"], schema=SCHEMA)
    op.create_table(
        "agency_feed",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("agency_id", sa.String(128), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entry", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "agency_feed_by_agency", "agency_feed", ["tenant_id", "agency_id", "position"], schema=SCHEMA
    )
    op.create_table(
        "policies",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("document", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "debtors",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("profile", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "business_dates",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("business_date", sa.Date, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "agency_performance",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("agency_id", sa.String(128), primary_key=True),
        sa.Column("segment", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("band", sa.String(64), primary_key=True),
        sa.Column("placements", sa.Integer, nullable=False),
        sa.Column("placed_minor", sa.BigInteger, nullable=False),
        sa.Column("recovered_minor", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "recorded_requests",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("content_sha256", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "recorded_requests",
        "business_dates",
        "debtors",
        "policies",
        "agency_feed",
        "timeline",
        "cases",
    ):
        op.drop_table(table, schema=SCHEMA)
