"""The ledger's first schema: debtor ledgers, balance movements, aging totals, business dates,
ingested event ids, aging policies, and the runtime tables.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from services.runtime.tables import create_runtime_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    create_runtime_tables(op, SCHEMA)
    op.create_table(
        "debtor_ledgers",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "balance_movements",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("invoice_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "balance_movements_by_tenant", "balance_movements", ["tenant_id", "recorded_at"], schema=SCHEMA
    )
    op.create_table(
        "aging_totals",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("due_date", sa.Date, primary_key=True),
        sa.Column("effective_date", sa.Date, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "business_dates",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("business_date", sa.Date, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "ingested_events",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("payload_sha256", sa.LargeBinary, nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "aging_policies",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("bounds", ARRAY(sa.Integer), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "aging_policies",
        "ingested_events",
        "business_dates",
        "aging_totals",
        "balance_movements",
        "debtor_ledgers",
        "api_keys",
        "outbox",
        "processed_events",
        "consumer_offsets",
    ):
        op.drop_table(table, schema=SCHEMA)
