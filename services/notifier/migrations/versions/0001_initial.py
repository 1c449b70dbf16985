"""The notifier's first schema: deliveries, cancellations, what the last look reads, team tasks,
and the runtime tables.

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

SCHEMA = "notifier"


def upgrade() -> None:
    create_runtime_tables(op, SCHEMA)
    op.create_table(
        "deliveries",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("command_id", sa.String(128), primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("command", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("reference", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("deliveries_due", "deliveries", ["status", "next_attempt_at"], schema=SCHEMA)
    op.create_table(
        "cancellations",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("command_id", sa.String(128), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "item_balances",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("outstanding", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "case_states",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("change", sa.String(32), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "disputes",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("open", sa.Boolean, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "addressees",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("profile", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "tasks",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("command_id", sa.String(128), primary_key=True),
        sa.Column("debtor_id", sa.String(128), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("script", sa.Text, nullable=False),
        sa.Column("due_on", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "tasks",
        "addressees",
        "disputes",
        "case_states",
        "item_balances",
        "cancellations",
        "deliveries",
    ):
        op.drop_table(table, schema=SCHEMA)
