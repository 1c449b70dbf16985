"""Score rows keep their JSON as written (`json`, not `jsonb`), and a score's open invoices as a list
per field: a business day rewrites every score row, and PostgreSQL then neither converts each
document into `jsonb` nor reads the field names once per invoice. Only whole documents are read back.

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCORES = "scoring.scores"
FIELDS = ("invoice_id", "outstanding_minor", "due_date", "p_late", "expected_settle_date")
"""Each open invoice's fields, each stored as a list in the invoices' order."""


def upgrade() -> None:
    lists = ", ".join(f"'{f}', coalesce(jsonb_agg(e->'{f}' ORDER BY o), '[]')" for f in FIELDS)
    op.execute(
        f"UPDATE {SCORES} SET invoices = (SELECT jsonb_build_object({lists}, 'write_off_reasons',"
        " coalesce(jsonb_object_agg(e->>'invoice_id', e->'write_off_reasons')"
        " FILTER (WHERE jsonb_array_length(e->'write_off_reasons') > 0), '{}'))"
        " FROM jsonb_array_elements(invoices) WITH ORDINALITY AS x(e, o))"
        " WHERE jsonb_typeof(invoices) = 'array'"
    )
    op.execute(
        f"ALTER TABLE {SCORES}"
        " ALTER reasons TYPE json USING reasons::json,"
        " ALTER invoices TYPE json USING invoices::json,"
        " ALTER write_off_reasons DROP DEFAULT,"
        " ALTER write_off_reasons TYPE json USING write_off_reasons::json,"
        " ALTER write_off_reasons SET DEFAULT '[]'::json"
    )


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE {SCORES}"
        " ALTER reasons TYPE jsonb USING reasons::jsonb,"
        " ALTER invoices TYPE jsonb USING invoices::jsonb,"
        " ALTER write_off_reasons DROP DEFAULT,"
        " ALTER write_off_reasons TYPE jsonb USING write_off_reasons::jsonb,"
        " ALTER write_off_reasons SET DEFAULT '[]'::jsonb"
    )
    fields = ", ".join(f"'{f}', invoices->'{f}'->(o - 1)" for f in FIELDS)
    reasons = "coalesce(invoices->'write_off_reasons'->(invoices->'invoice_id'->>(o - 1)), '[]')"
    op.execute(
        f"UPDATE {SCORES} SET invoices = coalesce((SELECT jsonb_agg(jsonb_build_object({fields},"
        f" 'write_off_reasons', {reasons}) ORDER BY o)"
        " FROM generate_series(1, jsonb_array_length(invoices->'invoice_id')) AS o), '[]')"
        " WHERE jsonb_typeof(invoices) = 'object'"
    )
