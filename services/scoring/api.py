"""HTTP of the scoring service for the collections team and finance: a debtor's score, the worklist,
and the provision for expected credit loss. Reads only; every answer is the tenant's own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field
from sqlalchemy import select

from contracts.envelope import Identifier
from contracts.scalars import Line
from services.runtime.auth import Principal
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses
from services.runtime.params import IsoDate
from services.scoring import store
from services.scoring.projection import history_of
from services.scoring.provision import BUCKETS, provision_matrix
from services.scoring.worklist import expected_value

Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]
"""The collections team and finance."""
Currency = Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")]
WORKLIST_BUCKETS = ("1-30", "31-60", "61-90", "default")


def _score_json(row: Any) -> dict[str, Any]:
    return {
        "debtor_id": row.debtor_id,
        "currency": row.currency,
        "as_of": row.as_of.isoformat(),
        "score": row.score,
        "probability_late": row.p_late,
        "segment": row.segment,
        "expected_days_to_settle": row.expected_days_to_settle,
        "open_minor": row.open_minor,
        "overdue_minor": row.overdue_minor,
        "oldest_days_past_due": row.oldest_days_past_due,
        "reasons": row.reasons,
        "invoices": store.stored_invoices(row.invoices),
        "model_kind": row.model_kind,
        "model_version": row.model_version,
        "credit_limit": {
            "usual_monthly_billing_minor": row.usual_monthly_billing_minor,
            "recommended_minor": row.recommended_limit_minor,
        },
        "write_off": {"proposed": row.write_off_proposed, "reasons": row.write_off_reasons},
    }


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["scoring"], responses=api_responses())

    @api.get(
        "/debtors/{debtor_id}/score",
        summary="A debtor's latest score in each currency, with reasons",
        responses=error_responses(404),
    )
    async def debtor_score(
        principal: Reader,
        session: ReadSession,
        debtor_id: Annotated[Identifier, Path()],
        currency: Currency = None,
    ) -> dict[str, Any]:
        s = store.scores
        query = select(s).where(s.c.tenant_id == principal.tenant_id, s.c.debtor_id == debtor_id)
        if currency is not None:
            query = query.where(s.c.currency == currency)
        rows = (await session.execute(query.order_by(s.c.currency))).all()
        if not rows:
            raise ApiError(404, f"no score for debtor {debtor_id}")
        return {"debtor_id": debtor_id, "scores": [_score_json(r) for r in rows]}

    @api.get("/worklist", summary="Debtors by expected recovery of the next action less its cost")
    async def worklist(
        principal: Reader,
        session: ReadSession,
        segment: Annotated[list[Literal["low", "medium", "high"]] | None, Query()] = None,
        bucket: Annotated[list[Literal["1-30", "31-60", "61-90", "default"]] | None, Query()] = None,
        currency: Annotated[list[Annotated[str, Field(pattern=r"^[A-Z]{3}$")]] | None, Query()] = None,
        collector: Annotated[list[Annotated[Line, Field(max_length=200)]] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        items = await store.worklist(
            session,
            principal.tenant_id,
            segments=segment or (),
            buckets=bucket or (),
            currencies=currency or (),
            collectors=collector or (),
            limit=limit,
        )
        return {
            "items": [
                {
                    "rank": i.rank,
                    "debtor_id": i.candidate.debtor_id,
                    "currency": i.candidate.currency,
                    "segment": i.candidate.segment,
                    "bucket": i.candidate.bucket,
                    "action": i.candidate.action,
                    "amount_at_stake_minor": i.candidate.amount_at_stake_minor,
                    "probability_of_payment": i.candidate.p_pay,
                    "cost_minor": i.candidate.cost_minor,
                    "expected_value_minor": expected_value(i.candidate),
                    "reasons": list(i.candidate.reasons),
                    "collector": i.candidate.collector,
                }
                for i in items
            ]
        }

    @api.get("/write-off-proposals", summary="Debts whose recovery costs more than it returns, with reasons")
    async def write_off_proposals(
        principal: Reader,
        session: ReadSession,
        currency: Currency = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Each debtor and currency whose overdue debt is proposed for write-off, or with overdue
        invoices proposed on their own: the debtor's reasons and each such invoice's, the largest
        overdue amounts first."""
        s = store.scores
        query = select(s).where(s.c.tenant_id == principal.tenant_id, s.c.overdue_minor > 0)
        if currency is not None:
            query = query.where(s.c.currency == currency)
        rows = (await session.execute(query.order_by(s.c.overdue_minor.desc(), s.c.debtor_id))).all()
        items = []
        for r in rows:
            invoices = [
                {
                    "invoice_id": i["invoice_id"],
                    "outstanding_minor": i["outstanding_minor"],
                    "due_date": i["due_date"],
                    "reasons": i["write_off_reasons"],
                }
                for i in store.stored_invoices(r.invoices)
                if i["write_off_reasons"]
            ]
            if r.write_off_proposed or invoices:
                items.append(
                    {
                        "debtor_id": r.debtor_id,
                        "currency": r.currency,
                        "as_of": r.as_of.isoformat(),
                        "proposed": r.write_off_proposed,
                        "overdue_minor": r.overdue_minor,
                        "oldest_days_past_due": r.oldest_days_past_due,
                        "probability_of_payment": round(1 - r.p_late, 4),
                        "reasons": r.write_off_reasons,
                        "invoices": invoices,
                    }
                )
        return {"items": items[:limit]}

    @api.get(
        "/provision",
        summary="Expected credit loss by aging bucket (provision matrix)",
        responses=error_responses(404),
    )
    async def provision(
        principal: Reader,
        session: ReadSession,
        as_of: Annotated[IsoDate | None, Query()] = None,
        currency: Currency = None,
        lookback_months: Annotated[int, Query(ge=1, le=60)] = 12,
    ) -> dict[str, Any]:
        tenant = principal.tenant_id
        if as_of is None:
            b = store.business_dates
            as_of = await session.scalar(select(b.c.business_date).where(b.c.tenant_id == tenant))
            if as_of is None:
                raise ApiError(404, "no business date yet: give as_of")
        t = store.invoices
        query = select(t).where(t.c.tenant_id == tenant, t.c.issue_date <= as_of)
        if currency is not None:
            query = query.where(t.c.currency == currency)
        rows = [dict(r) for r in (await session.execute(query)).mappings()]
        by_debtor: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            by_debtor.setdefault((r["debtor_id"], r["currency"]), []).append(r)
        histories = [
            history_of(tenant, debtor, cur, invoice_rows, None)
            for (debtor, cur), invoice_rows in sorted(by_debtor.items())
        ]
        matrices = provision_matrix(histories, as_of, lookback_months=lookback_months)
        return {
            "as_of": as_of.isoformat(),
            "buckets": list(BUCKETS),
            "matrices": [
                {
                    "currency": m.currency,
                    "window": [m.window[0].isoformat(), m.window[1].isoformat()],
                    "balance_minor": m.balance_minor,
                    "provision_minor": m.provision_minor,
                    "rows": [
                        {
                            "bucket": b.bucket,
                            "balance_minor": b.balance_minor,
                            "roll_rate": b.roll_rate,
                            "loss_rate": b.loss_rate,
                            "provision_minor": b.provision_minor,
                        }
                        for b in m.buckets
                    ],
                }
                for m in matrices
            ],
        }

    return api
