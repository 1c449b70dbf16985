"""The ledger's HTTP API: ERP events in, statements and aging out."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field, StrictInt

from contracts.envelope import DebtorId, Envelope, Identifier
from contracts.registry import ERP_TYPES, BatchError, ContractError, parse_batch
from contracts.scalars import MAX_DAYS, MAX_INT64
from services.ledger import admission, store
from services.ledger.aging import AgingPolicy, age_by_currency
from services.ledger.ingest import Conflicts, IngestResult, ingest
from services.ledger.open_items_csv import (
    LineError,
    OpenItemsError,
    conflict_errors,
    load_report,
    open_items_from_csv,
)
from services.ledger.statement import statement
from services.runtime.auth import Principal
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses
from services.runtime.params import IsoDate, IsoMoment
from services.runtime.settings import Settings

Erp = Annotated[Principal, Depends(Authorize(store.runtime, "erp"))]
"""The ERP: posts its events, reads statements and aging, sets the aging buckets."""
Reader = Annotated[Principal, Depends(Authorize(store.runtime, "erp", "operations"))]
"""Who reads the portfolio's aging and KPIs: the ERP, and finance and operations."""


class AgingPolicyBody(BaseModel):
    bounds: list[Annotated[StrictInt, Field(ge=1, le=MAX_DAYS)]] = Field(
        min_length=1,
        max_length=20,
        description="Upper bounds of the past-due buckets in days",
        examples=[[30, 60, 90]],
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes; split the batch")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes; split the batch")
    return bytes(body)


def _parse_batch(body: bytes, max_events: int) -> list[Envelope[Any]]:
    try:
        events = parse_batch(body, ERP_TYPES)
    except ContractError as exc:  # the body as a whole
        raise ApiError(422, [{"field": e.field, "message": e.message} for e in exc.errors]) from None
    except BatchError as exc:
        _check_count(len(exc.ids), max_events)
        raise ApiError(
            422,
            [{"event": i, "id": exc.ids[i], "field": e.field, "message": e.message} for i, e in exc.errors],
        ) from None
    _check_count(len(events), max_events)
    return events


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise ApiError(413, f"{count} events in one request; at most {max_events}")


def _check_tenant(events: Sequence[Envelope[Any]], principal: Principal) -> None:
    for index, event in enumerate(events):
        if event.tenantid != principal.tenant_id:
            raise ApiError(
                403, f"event {index} (id {event.id}) is for tenant {event.tenantid}; this key is not"
            )


def _summary(results: list[IngestResult]) -> dict[str, Any]:
    counts = Counter(r.status for r in results)
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "conflicts": counts["conflict"],
        "results": [{"id": r.id, "status": r.status} for r in results],
    }


def _not_utf8(body: bytes, exc: UnicodeDecodeError) -> LineError:
    line = body.count(b"\n", 0, exc.start) + 1
    return LineError(line, None, f"byte {body[exc.start]:#04x} is not UTF-8: save the file as UTF-8")


async def _as_of(session: ReadSession, tenant_id: str, as_of: dt.date | None) -> dt.date:
    if as_of:
        return as_of
    current = await store.business_date(session, tenant_id)
    if current is None:
        raise ApiError(409, "no business date yet: advance the clock (arrears clock advance) or pass as_of")
    return current


AsOf = Annotated[IsoDate | None, Query(description="Business date; default: the current one")]
KnownAt = Annotated[
    IsoMoment | None,
    Query(description="Only what Arrears had recorded by this moment (ISO 8601 with offset)"),
]


async def _policy(session: ReadSession, tenant_id: str) -> AgingPolicy:
    bounds = await store.aging_policy_bounds(session, tenant_id)
    return AgingPolicy(bounds) if bounds else AgingPolicy()


def router(settings: Settings) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["ledger"], responses=api_responses())

    @api.post(
        "/events",
        status_code=202,
        summary="Post a batch of ERP events (idempotent by event id)",
        responses=error_responses(413),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
            }
        },
    )
    async def post_events(request: Request, principal: Erp) -> dict[str, Any]:
        body = await _read_body(request, settings.max_request_bytes)
        events = _parse_batch(body, settings.max_events_per_request)
        _check_tenant(events, principal)
        await admission.check(request.app.state.sessions, principal.tenant_id, events)
        now = dt.datetime.now(dt.UTC)
        results = await ingest(request.app.state.sessions, principal.tenant_id, events, now)
        request.app.state.outbox_written()
        return _summary(results)

    @api.post(
        "/imports/open-items",
        status_code=202,
        summary="Load an initial open-item list from CSV: the whole file, or nothing and every error",
        responses=error_responses(413),
    )
    async def import_open_items(
        request: Request, principal: Erp, session: ReadSession, as_of: AsOf = None
    ) -> dict[str, Any]:
        body = await _read_body(request, settings.max_request_bytes * 8)
        now = dt.datetime.now(dt.UTC)
        valued_at = as_of or await store.business_date(session, principal.tenant_id)
        try:
            loaded = open_items_from_csv(body.decode("utf-8-sig"), principal.tenant_id, valued_at, now)
        except OpenItemsError as exc:
            raise ApiError(422, [e.as_json() for e in exc.lines]) from None
        except UnicodeDecodeError as exc:
            raise ApiError(422, [_not_utf8(body, exc).as_json()]) from None
        try:
            results = await ingest(
                request.app.state.sessions, principal.tenant_id, loaded.events, now, all_or_nothing=True
            )
        except Conflicts as exc:
            raise ApiError(422, [e.as_json() for e in conflict_errors(loaded, set(exc.ids))]) from None
        request.app.state.outbox_written()
        return load_report(loaded, {r.id: r.status for r in results})

    @api.get(
        "/events/{event_id}",
        summary="What became of an accepted event: accepted (not applied yet), applied, parked or rejected",
        responses=error_responses(404),
    )
    async def event_outcome(
        event_id: Annotated[Identifier, Path()], principal: Erp, session: ReadSession
    ) -> dict[str, Any]:
        found = await store.event_state(session, principal.tenant_id, event_id)
        if found is None:
            raise ApiError(404, f"no event {event_id} was accepted for tenant {principal.tenant_id}")
        return {
            "id": found.event_id,
            "status": found.status,
            "reason": found.reason,
            "accepted_at": found.accepted_at,
            "decided_at": found.decided_at,
        }

    @api.get("/rejections", summary="Accepted events the ledger rejected, with the reason, oldest first")
    async def rejection_feed(
        principal: Erp,
        session: ReadSession,
        after: Annotated[int, Query(ge=0, le=MAX_INT64, description="The `next` of the last page")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        page = await store.rejections(session, principal.tenant_id, after, limit)
        return {"rejections": page, "next": page[-1]["seq"] if page else after}

    @api.get("/business-date", summary="The tenant's current business date, as the clock set it")
    async def business_date(principal: Erp, session: ReadSession) -> dict[str, Any]:
        return {
            "tenant_id": principal.tenant_id,
            "business_date": await store.business_date(session, principal.tenant_id),
        }

    @api.get(
        "/debtors/{debtor_id}/statement",
        summary="A debtor's open items, balances, aging, payments and credit-note settlements as of a date,"
        " optionally as known at a moment",
        responses=error_responses(404, 409),
    )
    async def debtor_statement(
        debtor_id: Annotated[DebtorId, Path()],
        principal: Erp,
        session: ReadSession,
        as_of: AsOf = None,
        known_at: KnownAt = None,
    ) -> Any:
        day = await _as_of(session, principal.tenant_id, as_of)
        # The movements before the state: every invoice they name is then in the state read after.
        movements = await store.debtor_movements(session, principal.tenant_id, debtor_id, day, known_at)
        state = await store.load_ledger(session, principal.tenant_id, debtor_id)
        if state is None:
            raise ApiError(404, f"no debtor {debtor_id}")
        policy = await _policy(session, principal.tenant_id)
        return statement(state, day, policy, movements=movements, known_at=known_at).to_json()

    @api.get(
        "/aging",
        summary="Portfolio aging per currency, as of a date, optionally as known at a moment",
        responses=error_responses(409),
    )
    async def portfolio_aging(
        principal: Reader, session: ReadSession, as_of: AsOf = None, known_at: KnownAt = None
    ) -> dict[str, Any]:
        day = await _as_of(session, principal.tenant_id, as_of)
        policy = await _policy(session, principal.tenant_id)
        rows = await store.outstanding_by_due_date(session, principal.tenant_id, day, known_at)
        currencies = {
            currency: {"total_minor": sum(buckets.values()), "buckets_minor": buckets}
            for currency, buckets in age_by_currency(rows, day, policy).items()
        }
        return {
            "tenant_id": principal.tenant_id,
            "as_of": day,
            "known_at": known_at,
            "buckets": list(policy.labels),
            "currencies": currencies,
        }

    @api.get("/aging-policy", summary="The tenant's aging buckets")
    async def get_aging_policy(principal: Reader, session: ReadSession) -> dict[str, Any]:
        policy = await _policy(session, principal.tenant_id)
        return {"bounds": list(policy.bounds), "labels": list(policy.labels)}

    @api.put("/aging-policy", summary="Set the tenant's aging buckets")
    async def put_aging_policy(request: Request, body: AgingPolicyBody, principal: Erp) -> dict[str, Any]:
        try:
            policy = AgingPolicy(tuple(body.bounds))
        except ValueError as exc:
            raise ApiError(422, [{"field": "bounds", "message": str(exc)}]) from None
        async with request.app.state.sessions() as session, session.begin():
            await store.set_aging_policy_bounds(session, principal.tenant_id, policy.bounds)
        return {"bounds": list(policy.bounds), "labels": list(policy.labels)}

    return api
