"""The index of a debtor state's archive (`state_codec.ArchiveIndex`), written with the archive, so
that a batch can tell without reading the archive whether an event needs it. Rows archived before
have none and are read whole until their archive is written again.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.add_column("debtor_ledgers", sa.Column("archive_index", sa.LargeBinary, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("debtor_ledgers", "archive_index", schema=SCHEMA)
