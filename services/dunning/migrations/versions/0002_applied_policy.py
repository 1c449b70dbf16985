"""The policy version each tenant's last business day was decided under, so that the first business
day of a new version plans every open case again under it.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "dunning"


def upgrade() -> None:
    op.add_column("business_dates", sa.Column("policy_version", sa.Integer, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("business_dates", "policy_version", schema=SCHEMA)
