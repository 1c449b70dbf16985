"""An index of the balance movements by debtor: a statement as of a date reads one debtor's.

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.create_index(
        "balance_movements_by_debtor", "balance_movements", ["tenant_id", "debtor_id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("balance_movements_by_debtor", table_name="balance_movements", schema=SCHEMA)
