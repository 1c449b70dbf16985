"""Credit sales per tenant, currency and day, for the receivables KPIs (DSO, CEI).

Filled from the debtors' states for what was projected before: each invoice not cancelled counts
its current amount on its issue date (the dates of earlier amount adjustments are not kept in the
state; a replay of the journal into a fresh schema dates them exactly).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.create_table(
        "credit_sales",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("sale_date", sa.Date, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.execute(
        f"INSERT INTO {SCHEMA}.credit_sales (tenant_id, currency, sale_date, amount)"
        " SELECT l.tenant_id, i.value->>'currency', (i.value->>'issue_date')::date,"
        " sum((i.value->>'amount')::bigint)"
        f" FROM {SCHEMA}.debtor_ledgers AS l,"
        " jsonb_each(convert_from(l.state, 'UTF8')::jsonb -> 'invoices') AS i"
        " WHERE i.value->>'cancelled_on' IS NULL"
        " GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    op.drop_table("credit_sales", schema=SCHEMA)
