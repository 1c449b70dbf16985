"""Each debtor's risk segment from scoring, per currency as its cases are, so that a policy's segment
shifts take effect, with scoring's write-off proposal for the currency.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "dunning"


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("debtor_id", sa.String(128), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("segment", sa.String(64), nullable=False),
        sa.Column("write_off_proposed", sa.Boolean, nullable=False, server_default=sa.text("false")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("segments", schema=SCHEMA)
