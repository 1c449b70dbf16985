"""The debtor's record: every fact and decision about a debtor across its currencies, each entry
hash-chained to the one before it, and each debtor's chain head.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "dunning"


def upgrade() -> None:
    op.create_table(
        "debtor_timeline",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("case_id", sa.String(200), nullable=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=True),
        sa.Column("sentence", sa.Text, nullable=False),
        sa.Column("source_id", sa.String(256), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("document", sa.Text, nullable=True),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "debtor_timeline_by_currency",
        "debtor_timeline",
        ["tenant_id", "debtor_id", "currency", "seq"],
        schema=SCHEMA,
    )
    op.create_table(
        "debtor_chain_heads",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("debtor_chain_heads", schema=SCHEMA)
    op.drop_index("debtor_timeline_by_currency", table_name="debtor_timeline", schema=SCHEMA)
    op.drop_table("debtor_timeline", schema=SCHEMA)
