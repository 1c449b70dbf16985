"""The scoring service's first schema: invoices, debtors, business dates, scores, and the runtime
tables.

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

SCHEMA = "scoring"


def upgrade() -> None:
    create_runtime_tables(op, SCHEMA)
    op.create_table(
        "invoices",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("outstanding_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settled_date", sa.Date, nullable=True),
        sa.Column("written_off_date", sa.Date, nullable=True),
        sa.Column("disputed_date", sa.Date, nullable=True),
        schema=SCHEMA,
    )
    op.create_index("invoices_by_currency", "invoices", ["tenant_id", "currency"], schema=SCHEMA)
    op.create_table(
        "debtors",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("paperless", sa.Boolean, nullable=True),
        schema=SCHEMA,
    )
    op.create_table(
        "business_dates",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("business_date", sa.Date, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "scores",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("p_late", sa.Float, nullable=False),
        sa.Column("segment", sa.String(16), nullable=False),
        sa.Column("expected_days_to_settle", sa.Float, nullable=False),
        sa.Column("open_minor", sa.BigInteger, nullable=False),
        sa.Column("overdue_minor", sa.BigInteger, nullable=False),
        sa.Column("oldest_days_past_due", sa.Integer, nullable=False),
        sa.Column("reasons", JSONB, nullable=False),
        sa.Column("invoices", JSONB, nullable=False),
        sa.Column("model_kind", sa.String(32), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("published_score", sa.SmallInteger, nullable=True),
        sa.Column("published_segment", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("scores_worklist", "scores", ["tenant_id", "overdue_minor"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("scores", "business_dates", "debtors", "invoices"):
        op.drop_table(table, schema=SCHEMA)
