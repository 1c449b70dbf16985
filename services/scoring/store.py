"""The scoring service's tables (schema `scoring`): what it knows of each invoice and debtor, the
tenants' business dates, and each debtor's latest score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.ext.asyncio import AsyncSession

from services.runtime.tables import RuntimeTables
from services.scoring.model import DebtorScore, segment_of
from services.scoring.worklist import WorklistItem, candidate, rank

SCHEMA = "scoring"
metadata = MetaData(schema=SCHEMA)
runtime = RuntimeTables(metadata, SCHEMA)

# One row per invoice, as its balance facts leave it, with the business date of each change.
invoices = Table(
    "invoices",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("invoice_id", String(128), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("outstanding_minor", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("settled_date", Date, nullable=True),
    Column("written_off_date", Date, nullable=True),
    Column("disputed_date", Date, nullable=True),
    Index("invoices_by_currency", "tenant_id", "currency"),
    Index("invoices_open", "tenant_id", "debtor_id", postgresql_where=text("status = 'open'")),
)

debtors = Table(
    "debtors",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("paperless", Boolean, nullable=True),
    Column("collector", String(200), nullable=True),
    postgresql_with={"fillfactor": 50},
)
"""One row per debtor scoring knows of. Every writer of a debtor's invoices or scores writes this row
first, only while it has the version (`xmin`) the writer read: the debtor's lock and version."""

business_dates = Table(
    "business_dates",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("business_date", Date, nullable=False),
)

# The latest score of each debtor and currency; `published_*` are those of the last score event. Its
# JSON is kept as written (`json`, not `jsonb`): only whole documents are read back (migration 0004).
scores = Table(
    "scores",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("debtor_id", String(128), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("as_of", Date, nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("p_late", Float, nullable=False),
    Column("segment", String(16), nullable=False),
    Column("expected_days_to_settle", Float, nullable=False),
    Column("open_minor", BigInteger, nullable=False),
    Column("overdue_minor", BigInteger, nullable=False),
    Column("oldest_days_past_due", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("invoices", JSON, nullable=False),
    Column("model_kind", String(32), nullable=False),
    Column("model_version", Integer, nullable=True),
    Column("published_score", SmallInteger, nullable=True),
    Column("published_segment", String(16), nullable=True),
    Column("usual_monthly_billing_minor", BigInteger, nullable=True),
    Column("recommended_limit_minor", BigInteger, nullable=True),
    Column("write_off_proposed", Boolean, nullable=False, server_default=text("false")),
    Column("write_off_reasons", JSON, nullable=False, server_default=text("'[]'::json")),
    Column("published_write_off", Boolean, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("scores_worklist", "tenant_id", "overdue_minor"),
    postgresql_with={"fillfactor": 50},  # room for the next day's version of each row (migration 0003)
)


async def worklist(
    session: AsyncSession,
    tenant: str,
    *,
    segments: Sequence[str] = (),
    buckets: Sequence[str] = (),
    currencies: Sequence[str] = (),
    collectors: Sequence[str] = (),
    limit: int | None = None,
) -> list[WorklistItem]:
    """The tenant's ranked worklist from its stored scores and its debtors' collectors."""
    s, d = scores, debtors
    query = (
        select(s, d.c.collector)
        .select_from(s.outerjoin(d, and_(d.c.tenant_id == s.c.tenant_id, d.c.debtor_id == s.c.debtor_id)))
        .where(s.c.tenant_id == tenant, s.c.overdue_minor > 0)
    )
    if currencies:
        query = query.where(s.c.currency.in_(list(currencies)))
    if collectors:
        query = query.where(d.c.collector.in_(list(collectors)))
    rows = (await session.execute(query)).all()
    found = [c for r in rows if (c := candidate(stored_score(r), collector=r.collector)) is not None]
    return rank(found, segments=segments, buckets=buckets, collectors=collectors, limit=limit)


def stored_score(row: Any) -> DebtorScore:
    """A score row as the pure modules take it (without its invoices)."""
    return DebtorScore(
        tenant_id=row.tenant_id,
        debtor_id=row.debtor_id,
        currency=row.currency,
        as_of=row.as_of,
        score=row.score,
        p_late=row.p_late,
        segment=segment_of(row.p_late),
        expected_days_to_settle=row.expected_days_to_settle,
        reasons=tuple(row.reasons),
        open_minor=row.open_minor,
        overdue_minor=row.overdue_minor,
        oldest_days_past_due=row.oldest_days_past_due,
        invoices=(),
        model_kind=row.model_kind,
        usual_monthly_billing_minor=row.usual_monthly_billing_minor,
        recommended_limit_minor=row.recommended_limit_minor,
    )


def stored_invoices(stored: dict[str, Any]) -> list[dict[str, Any]]:
    """A score row's open invoices, stored as a list per field (`invoices`), one mapping each: id,
    outstanding amount, due date, probability of paying late, expected settlement date and the
    write-off reasons of the invoice."""
    reasons = stored["write_off_reasons"]
    return [
        {
            "invoice_id": invoice,
            "outstanding_minor": outstanding,
            "due_date": due,
            "p_late": p_late,
            "expected_settle_date": settle,
            "write_off_reasons": reasons.get(invoice, []),
        }
        for invoice, outstanding, due, p_late, settle in zip(
            stored["invoice_id"],
            stored["outstanding_minor"],
            stored["due_date"],
            stored["p_late"],
            stored["expected_settle_date"],
            strict=True,
        )
    ]


async def tenant_history(
    session: AsyncSession, tenant: str
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bool | None]]:
    """Every invoice scoring has recorded for the tenant, by debtor, and each debtor's billing channel
    (True: paperless): the history `arrears scoring train --tenant` learns from."""
    by_debtor: dict[str, list[dict[str, Any]]] = {}
    for row in (await session.execute(select(invoices).where(invoices.c.tenant_id == tenant))).mappings():
        by_debtor.setdefault(row["debtor_id"], []).append(dict(row))
    query = select(debtors.c.debtor_id, debtors.c.paperless).where(debtors.c.tenant_id == tenant)
    paperless = {r.debtor_id: r.paperless for r in (await session.execute(query)).all()}
    return by_debtor, paperless
