"""What became of accepted events that were not simply applied: parked or rejected, and the feed of
rejections an ERP collects with a cursor.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.create_table(
        "event_outcomes",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "event_rejections",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Index("event_rejections_by_tenant", "tenant_id", "seq"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("event_rejections", schema=SCHEMA)
    op.drop_table("event_outcomes", schema=SCHEMA)
