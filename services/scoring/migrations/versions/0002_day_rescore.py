"""Debtor rows as the version of each debtor's state, the collector who last worked a debtor, open
invoices indexed for the business-day re-score, and credit limits and write-off proposals on scores.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.add_column("debtors", sa.Column("collector", sa.String(200), nullable=True), schema=SCHEMA)
    # Every debtor with invoices has a row: its version guards its invoices and scores.
    op.execute(
        f"INSERT INTO {SCHEMA}.debtors (tenant_id, debtor_id)"
        f" SELECT DISTINCT tenant_id, debtor_id FROM {SCHEMA}.invoices ON CONFLICT DO NOTHING"
    )
    for column in (
        sa.Column("usual_monthly_billing_minor", sa.BigInteger, nullable=True),
        sa.Column("recommended_limit_minor", sa.BigInteger, nullable=True),
        sa.Column("write_off_proposed", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("write_off_reasons", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("published_write_off", sa.Boolean, nullable=True),
    ):
        op.add_column("scores", column, schema=SCHEMA)
    op.create_index(
        "invoices_open",
        "invoices",
        ["tenant_id", "debtor_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("invoices_open", "invoices", schema=SCHEMA)
    for name in (
        "published_write_off",
        "write_off_reasons",
        "write_off_proposed",
        "recommended_limit_minor",
        "usual_monthly_billing_minor",
    ):
        op.drop_column("scores", name, schema=SCHEMA)
    op.drop_column("debtors", "collector", schema=SCHEMA)
