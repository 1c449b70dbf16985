"""GET /v1/debtors/{debtor_id}/timeline: the debtor's record across its currencies, for collectors
and auditors, a page at a time, each entry with the hash chaining it to the one before."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from contracts.envelope import Identifier
from contracts.scalars import MAX_INT64
from services.dunning import record, store
from services.dunning.domain.audit import Entry
from services.runtime.auth import Principal
from services.runtime.database import driver_connection
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses

Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]


def entry_json(entry: Entry) -> dict[str, Any]:
    line = entry.line
    return {
        "seq": entry.seq,
        "business_date": line.business_date.isoformat(),
        "recorded_at": entry.recorded_at.isoformat(),
        "kind": line.kind,
        "currency": line.currency,
        "case_id": line.case_id,
        "amount_minor": line.amount_minor,
        "sentence": line.sentence,
        "source_id": line.source_id,
        "channel": line.channel,
        "document": line.document,
        "previous_hash": entry.previous_hash,
        "hash": entry.hash,
    }


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", responses=api_responses())

    @api.get(
        "/debtors/{debtor_id}/timeline",
        tags=["cases"],
        summary="The debtor's record in every currency: facts, decisions and deliveries, hash-chained",
        responses=error_responses(404),
    )
    async def debtor_timeline(
        debtor_id: Annotated[Identifier, Path()],
        principal: Reader,
        session: ReadSession,
        after: Annotated[
            int, Query(ge=0, le=MAX_INT64, description="The cursor: the seq of the last entry seen")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    ) -> dict[str, Any]:
        connection = await driver_connection(session)
        entries = await record.page(connection, principal.tenant_id, debtor_id, after, limit, currency)
        if not entries and after == 0 and currency is None:
            raise ApiError(404, f"no record of debtor {debtor_id}")
        return {
            "debtor_id": debtor_id,
            "entries": [entry_json(e) for e in entries],
            "next": entries[-1].seq if entries else after,
        }

    return api
