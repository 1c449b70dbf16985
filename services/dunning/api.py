"""HTTP for the collections team (cases, timelines, promises, disputes, plans, holds, notes) and for
collection agencies (their case feed and their outcomes).

What people record is written to the dunning outbox with the claim of its id (durable before the
202, broker or not), published as a contact record on `ar.contacts.v1`, and reaches the case through
the dunning consumer like every other fact, so a replay of the log reproduces it. Only an existing
case of the tenant takes a record: any other is a 404, and nothing is recorded. The answer is 202
with the event id. With an `Idempotency-Key` header the record's id is made of the key: the same
request again gets the first answer and records nothing more, another request under the key is a 409
naming it. Without one every request records anew (a case can be paused, resumed and paused again).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts import collections as c
from contracts.envelope import IDENTIFIER_PATTERN, CaseId, EventData, Identifier
from contracts.money import MAX_MINOR, Money, positive
from contracts.policy import DunningPolicy, PolicyPublished
from contracts.registry import encode_event, make_event
from contracts.scalars import MAX_INT32, MAX_INT64, Line, Text
from contracts.topics import CONTACTS, POLICIES
from services.dunning import agency_store, agency_view, store
from services.dunning.domain import load_case_json
from services.dunning.kpi_api import kpi_router
from services.dunning.simulation_api import router as simulation_router
from services.runtime.auth import Principal
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses
from services.runtime.log import Message
from services.runtime.outbox import write_outbox
from services.runtime.params import IsoDate

SOURCE = "arrears/dunning/api"
Collector = Annotated[Principal, Depends(Authorize(store.runtime, "collector"))]
"""Who records what happens on a case."""
Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]
"""Who reads cases and policies."""
Operations = Annotated[Principal, Depends(Authorize(store.runtime, "operations"))]
"""Who publishes policies."""
Agency = Annotated[Principal, Depends(Authorize(store.runtime, "agency"))]
"""A collection agency, on the cases placed with it."""
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=100, pattern=IDENTIFIER_PATTERN)
]
CasePath = Annotated[CaseId, Path(description='The case: "{debtor id}:{ISO 4217 currency}", e.g. C-1042:EUR')]
IdPath = Annotated[Identifier, Path()]
MAX_ID = 128
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def _id(text: str) -> str:
    """`text` as an event or hold id: itself when it is one, else a digest of it (stable, so a retry
    names the same record)."""
    if len(text) <= MAX_ID and _IDENTIFIER.fullmatch(text):
        return text
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, [{"field": field, "message": message}])


class PromiseBody(BaseModel):
    amount: Money
    promised_date: IsoDate

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class SettlementBody(BaseModel):
    amount: Money = Field(description="What the debtor pays to settle")
    pay_by: IsoDate
    invoice_ids: list[Identifier] = Field(
        default_factory=list,
        max_length=1000,
        description="The invoices settled (each open on the case); empty: every open invoice of the case",
    )

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class DisputeBody(BaseModel):
    invoice_id: Identifier
    reason: Text | None = Field(default=None, max_length=2000)
    owner: Line | None = Field(
        default=None,
        max_length=200,
        description="Who resolves it (opening only); a dispute open longer than the policy's "
        "dispute_limit_days is escalated to them as a task (default: who records it)",
    )


class InstalmentBody(BaseModel):
    due_date: IsoDate
    amount: Money

    @field_validator("amount")
    @classmethod
    def _amount_positive(cls, value: Money) -> Money:
        return positive(value, "amount")


class PlanBody(BaseModel):
    instalments: list[InstalmentBody] = Field(min_length=1, max_length=120)


class HoldBody(BaseModel):
    kind: Literal["manual", "insolvency"] = "manual"
    reason: Text = Field(min_length=1, max_length=2000)
    until: IsoDate | None = None
    claims_deadline: IsoDate | None = Field(
        default=None,
        description="Insolvency: the last day to lodge claims with the administrator; the legal task to "
        "lodge the claim is due by it (without it, by the policy's insolvency_claim_days)",
    )
    administrator: Line | None = Field(
        default=None,
        max_length=300,
        description="Insolvency: the administrator, with the proceedings' number",
    )

    @field_validator("claims_deadline", "administrator")
    @classmethod
    def _insolvency_only(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("kind") != "insolvency":
            raise ValueError("only an insolvency hold names a claims deadline or an administrator")
        return value


class NoteBody(BaseModel):
    text: Text = Field(min_length=1, max_length=4000)


class PauseBody(BaseModel):
    text: Text = Field(min_length=1, max_length=2000, description="Why: the reason of the pause hold")


class PolicyBody(BaseModel):
    effective_from: IsoDate
    document: DunningPolicy


def policy_message(tenant_id: str, policy: PolicyPublished, now: dt.datetime) -> Message:
    event = make_event(
        "collections.policy.published.v1",
        policy,
        event_id=f"policy:{tenant_id}:{policy.version}",
        tenant_id=tenant_id,
        source=SOURCE,
        time=now,
    )
    return Message(POLICIES.name, tenant_id.encode(), encode_event(event))


class OutcomeBody(BaseModel):
    kind: Literal["contact_made", "no_contact", "promise", "dispute", "recovered"]
    amount_recovered: Money | None = None
    detail: Text | None = Field(default=None, max_length=2000)

    @field_validator("amount_recovered")
    @classmethod
    def _amount_positive(cls, value: Money | None) -> Money | None:
        return None if value is None else positive(value, "amount_recovered")


CASE_COLUMNS = (
    store.cases.c.case_id,
    store.cases.c.debtor_id,
    store.cases.c.currency,
    store.cases.c.status,
    store.cases.c.step,
    store.cases.c.overdue_minor,
    store.cases.c.oldest_due_date,
    store.cases.c.next_action_date,
    store.cases.c.agency_id,
    store.cases.c.version,
)


def _case_row(row: Any) -> dict[str, Any]:
    return {column.name: getattr(row, column.name) for column in CASE_COLUMNS}


async def _case(session: ReadSession, principal: Principal, case_id: str) -> Any:
    """The tenant's case (its listed columns); 404 when there is none, so that what a collector
    records never opens a case of its own."""
    row = (
        await session.execute(
            select(*CASE_COLUMNS).where(
                store.cases.c.tenant_id == principal.tenant_id, store.cases.c.case_id == case_id
            )
        )
    ).first()
    if row is None:
        raise ApiError(404, f"no case {case_id}")
    return row


async def _open_items(session: ReadSession, principal: Principal, case_id: str) -> dict[str, int]:
    """Outstanding minor units per open invoice of the case, as dunning last saw them."""
    state = await session.scalar(
        select(store.cases.c.state).where(
            store.cases.c.tenant_id == principal.tenant_id, store.cases.c.case_id == case_id
        )
    )
    if state is None:
        raise ApiError(404, f"no case {case_id}")
    return {i.invoice_id: i.outstanding for i in load_case_json(state).items.values()}


def _not_before(day: dt.date, business_date: dt.date, field: str) -> None:
    if day < business_date:
        raise _invalid(field, f"{day} is before the business date {business_date}")


async def _business_date(session: ReadSession, tenant_id: str) -> dt.date:
    day: dt.date | None = await session.scalar(
        select(store.business_dates.c.business_date).where(store.business_dates.c.tenant_id == tenant_id)
    )
    if day is None:
        raise ApiError(409, "no business date yet: the clock has not started a day for this tenant")
    return day


@dataclass(frozen=True)
class _Claim:
    """The id a request records under, a digest of the request (what it asks, of which case, with
    which body, not when), and the 409 when the id was claimed by another request."""

    event_id: str
    digest: bytes
    conflict: str

    def answer(self) -> dict[str, Any]:
        """The answer to the request, the first time and every time it is repeated."""
        return {"id": self.event_id, "status": "accepted"}


def _digest(kind: str, case_id: str, body: BaseModel | None, *parts: str) -> bytes:
    request = {
        "request": kind,
        "case_id": case_id,
        "path": list(parts),
        "body": body.model_dump(mode="json") if body is not None else None,
    }
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).digest()


def _keyed(kind: str, key: str | None, case_id: str, body: BaseModel | None, *parts: str) -> _Claim:
    """The claim of a request with an optional Idempotency-Key: an id of the key, or a new one."""
    return _Claim(
        _event_id(kind, key),
        _digest(kind, case_id, body, *parts),
        f"Idempotency-Key {key} was used for another request",
    )


async def _answered(session: ReadSession, principal: Principal, claim: _Claim) -> dict[str, Any] | None:
    """The first answer if the claim's id was recorded by this very request; a 409 if by another."""
    known = await session.scalar(
        select(store.recorded_requests.c.content_sha256).where(
            store.recorded_requests.c.tenant_id == principal.tenant_id,
            store.recorded_requests.c.event_id == claim.event_id,
        )
    )
    if known is None:
        return None
    if known != claim.digest:
        raise ApiError(409, claim.conflict)
    return claim.answer()


async def _record(
    request: Request,
    principal: Principal,
    debtor_id: str,
    event_type: str,
    data: EventData,
    claim: _Claim,
) -> dict[str, Any]:
    """Publish a contact record once per claimed id: a repeat of the request that claimed it gets the
    same answer and publishes nothing; another request under the id is a 409."""
    event_id = claim.event_id
    event = make_event(
        event_type,
        data,
        event_id=event_id,
        tenant_id=principal.tenant_id,
        debtor_id=debtor_id,
        source=SOURCE,
        time=dt.datetime.now(dt.UTC),
    )
    sessions = request.app.state.sessions
    async with sessions() as session, session.begin():
        claimed = await session.scalar(
            pg_insert(store.recorded_requests)
            .values(tenant_id=principal.tenant_id, event_id=event_id, content_sha256=claim.digest)
            .on_conflict_do_nothing()
            .returning(store.recorded_requests.c.event_id)
        )
        if claimed is None:  # the same request, at the same time
            answer = await _answered(session, principal, claim)
            assert answer is not None
            return answer
        await write_outbox(
            session, store.runtime, [Message(CONTACTS.name, event.key.encode(), encode_event(event))]
        )
    request.app.state.outbox_written()
    return claim.answer()


async def _recorded(session: ReadSession, principal: Principal) -> c.Recorded:
    """Who records something, and the tenant's business date it takes effect on."""
    return c.Recorded(
        recorded_by=f"{principal.role}:{principal.name}",
        business_date=await _business_date(session, principal.tenant_id),
    )


def _event_id(kind: str, key: str | None) -> str:
    return _id(f"{kind}:{key}" if key else f"{kind}:{uuid.uuid4()}")


def _pause_hold(case_id: str) -> str:
    """The hold a pause puts on the case, and a resume releases."""
    return _id(f"pause:{case_id}")


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", responses=api_responses())

    @api.get("/cases", tags=["cases"], summary="List and filter cases, largest overdue first")
    async def list_cases(
        principal: Reader,
        session: ReadSession,
        status: Literal["open", "held", "closed"] | None = None,
        step: Annotated[Line | None, Query(max_length=64)] = None,
        currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
        agency_id: Annotated[Identifier | None, Query()] = None,
        debtor_id: Annotated[Identifier | None, Query()] = None,
        min_overdue_minor: Annotated[int | None, Query(ge=0, le=MAX_MINOR)] = None,
        due_by: Annotated[IsoDate | None, Query(description="Next action on or before this date")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    ) -> dict[str, Any]:
        t = store.cases
        conditions = [t.c.tenant_id == principal.tenant_id]
        for column, value in (
            (t.c.status, status),
            (t.c.step, step),
            (t.c.currency, currency),
            (t.c.agency_id, agency_id),
            (t.c.debtor_id, debtor_id),
        ):
            if value is not None:
                conditions.append(column == value)
        if min_overdue_minor is not None:
            conditions.append(t.c.overdue_minor >= min_overdue_minor)
        if due_by is not None:
            conditions.append(t.c.next_action_date <= due_by)
        rows = await session.execute(
            select(*CASE_COLUMNS)
            .where(and_(*conditions))
            .order_by(t.c.overdue_minor.desc(), t.c.case_id)
            .limit(limit)
            .offset(offset)
        )
        return {"cases": [_case_row(r) for r in rows], "limit": limit, "offset": offset}

    @api.get(
        "/cases/{case_id}",
        tags=["cases"],
        summary="One case with its full timeline",
        responses=error_responses(404),
    )
    async def get_case(case_id: CasePath, principal: Reader, session: ReadSession) -> dict[str, Any]:
        row = await _case(session, principal, case_id)
        entries = await session.execute(
            select(store.timeline.c.business_date, store.timeline.c.kind, store.timeline.c.entry)
            .where(store.timeline.c.tenant_id == principal.tenant_id, store.timeline.c.case_id == case_id)
            .order_by(store.timeline.c.id)
        )
        return {
            **_case_row(row),
            "timeline": [{"business_date": e.business_date, "kind": e.kind, **e.entry} for e in entries],
        }

    @api.post(
        "/cases/{case_id}/promises",
        status_code=202,
        tags=["cases"],
        summary="Record a promise to pay",
        responses=error_responses(404, 409),
    )
    async def promise(
        case_id: CasePath,
        body: PromiseBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("promise", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        case = await _case(session, principal, case_id)
        if body.amount.currency != case.currency:
            raise _invalid("amount.currency", f"the case is in {case.currency}")
        recorded = await _recorded(session, principal)
        _not_before(body.promised_date, recorded.business_date, "promised_date")
        data = c.PromiseToPay(
            promise_id=claim.event_id,
            amount=body.amount,
            promised_date=body.promised_date,
            recorded=recorded,
        )
        return await _record(request, principal, case.debtor_id, "ar.promise.made.v1", data, claim)

    @api.post(
        "/cases/{case_id}/settlements",
        status_code=202,
        tags=["cases"],
        summary="Record an agreed settlement: pay an amount by a date, the rest forgiven",
        description="Holds the case like a promise. Once the debtor has paid `amount` (counted from now), "
        "dunning writes the rest of the settled invoices off in the ledger with the agreement as the "
        "reason; not paid by `pay_by` plus the policy's promise grace days, it is a broken promise and "
        "escalation resumes with the next step.",
        responses=error_responses(404, 409),
    )
    async def settlement(
        case_id: CasePath,
        body: SettlementBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("settlement", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        case = await _case(session, principal, case_id)
        if body.amount.currency != case.currency:
            raise _invalid("amount.currency", f"the case is in {case.currency}")
        if len(set(body.invoice_ids)) != len(body.invoice_ids):
            raise _invalid("invoice_ids", "an invoice is named twice")
        outstanding = await _open_items(session, principal, case_id)
        for index, invoice_id in enumerate(body.invoice_ids):
            if invoice_id not in outstanding:
                raise _invalid(f"invoice_ids[{index}]", f"invoice {invoice_id!r} is not open on the case")
        owed = sum(outstanding[i] for i in body.invoice_ids or outstanding)
        if body.amount.amount_minor >= owed:
            raise _invalid(
                "amount",
                f"{body.amount.amount_minor} is not less than the {owed} owed: that is a promise to pay",
            )
        recorded = await _recorded(session, principal)
        _not_before(body.pay_by, recorded.business_date, "pay_by")
        data = c.SettlementAgreed(
            settlement_id=claim.event_id,
            amount=body.amount,
            pay_by=body.pay_by,
            invoice_ids=body.invoice_ids,
            recorded=recorded,
        )
        return await _record(request, principal, case.debtor_id, "ar.settlement.agreed.v1", data, claim)

    @api.post(
        "/cases/{case_id}/disputes",
        status_code=202,
        tags=["cases"],
        summary="Open a dispute on an item",
        responses=error_responses(404, 409),
    )
    async def open_dispute(
        case_id: CasePath,
        body: DisputeBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("dispute", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        debtor_id = (await _case(session, principal, case_id)).debtor_id
        data = c.DisputeChanged(
            dispute_id=claim.event_id,
            invoice_id=body.invoice_id,
            reason=body.reason,
            owner=body.owner,
            recorded=await _recorded(session, principal),
        )
        return await _record(request, principal, debtor_id, "ar.dispute.opened.v1", data, claim)

    @api.post(
        "/cases/{case_id}/disputes/{dispute_id}/resolve",
        status_code=202,
        tags=["cases"],
        summary="Resolve a dispute; escalation of that item resumes",
        responses=error_responses(404, 409),
    )
    async def resolve_dispute(
        case_id: CasePath,
        dispute_id: IdPath,
        body: DisputeBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
    ) -> dict[str, Any]:
        claim = _Claim(
            _id(f"{dispute_id}:resolved"),
            _digest("resolve", case_id, body, dispute_id),
            f"dispute {dispute_id} was resolved by another request",
        )
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        debtor_id = (await _case(session, principal, case_id)).debtor_id
        data = c.DisputeChanged(
            dispute_id=dispute_id,
            invoice_id=body.invoice_id,
            reason=body.reason,
            recorded=await _recorded(session, principal),
        )
        return await _record(request, principal, debtor_id, "ar.dispute.resolved.v1", data, claim)

    @api.post(
        "/cases/{case_id}/plans",
        status_code=202,
        tags=["cases"],
        summary="Record an agreed payment plan",
        responses=error_responses(404, 409),
    )
    async def plan(
        case_id: CasePath,
        body: PlanBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("plan", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        case = await _case(session, principal, case_id)
        for index, instalment in enumerate(body.instalments):
            if instalment.amount.currency != case.currency:
                raise _invalid(f"instalments[{index}].amount.currency", f"the case is in {case.currency}")
        recorded = await _recorded(session, principal)
        _not_before(body.instalments[0].due_date, recorded.business_date, "instalments[0].due_date")
        try:
            data = c.PaymentPlanAgreed(
                plan_id=claim.event_id,
                currency=case.currency,
                instalments=[c.Instalment(due_date=i.due_date, amount=i.amount) for i in body.instalments],
                recorded=recorded,
            )
        except ValueError as exc:
            raise _invalid("instalments", str(exc)) from None
        return await _record(request, principal, case.debtor_id, "ar.plan.agreed.v1", data, claim)

    async def _hold(
        request: Request,
        principal: Principal,
        session: ReadSession,
        case_id: str,
        claim: _Claim,
        hold_id: str,
        kind: c.HoldKind,
        reason: str | None,
        until: dt.date | None,
        placed: bool,
        *,
        claims_deadline: dt.date | None = None,
        administrator: str | None = None,
    ) -> dict[str, Any]:
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        case = await _case(session, principal, case_id)
        recorded = await _recorded(session, principal)
        if until is not None:
            _not_before(until, recorded.business_date, "until")
        if claims_deadline is not None:
            _not_before(claims_deadline, recorded.business_date, "claims_deadline")
        data = c.HoldChanged(
            hold_id=hold_id,
            kind=kind,
            currency=case.currency,
            reason=reason,
            until=until,
            claims_deadline=claims_deadline,
            administrator=administrator,
            recorded=recorded,
        )
        event_type = "ar.hold.placed.v1" if placed else "ar.hold.released.v1"
        return await _record(request, principal, case.debtor_id, event_type, data, claim)

    @api.post(
        "/cases/{case_id}/holds",
        status_code=202,
        tags=["cases"],
        summary="Put a hold on the case",
        responses=error_responses(404, 409),
    )
    async def hold(
        case_id: CasePath,
        body: HoldBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        hold_id = _event_id("hold", idempotency_key)
        claim = _Claim(
            _id(f"{hold_id}:on"),
            _digest("hold", case_id, body),
            f"Idempotency-Key {idempotency_key} was used for another request",
        )
        return await _hold(
            request,
            principal,
            session,
            case_id,
            claim,
            hold_id,
            body.kind,
            body.reason,
            body.until,
            True,
            claims_deadline=body.claims_deadline,
            administrator=body.administrator,
        )

    @api.delete(
        "/cases/{case_id}/holds/{hold_id}",
        status_code=202,
        tags=["cases"],
        summary="Release a hold",
        responses=error_responses(404, 409),
    )
    async def release(
        case_id: CasePath, hold_id: IdPath, request: Request, principal: Collector, session: ReadSession
    ) -> dict[str, Any]:
        claim = _Claim(
            _id(f"{hold_id}:off"),
            _digest("release", case_id, None, hold_id),
            f"hold {hold_id} was released by another request",
        )
        return await _hold(request, principal, session, case_id, claim, hold_id, "manual", None, None, False)

    @api.post(
        "/cases/{case_id}/pause",
        status_code=202,
        tags=["cases"],
        summary="Pause escalation",
        responses=error_responses(404, 409),
    )
    async def pause(
        case_id: CasePath,
        body: PauseBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        # The case's one pause hold; each request is a record of its own (paused, resumed, paused again).
        claim = _keyed("pause", idempotency_key, case_id, body)
        return await _hold(
            request, principal, session, case_id, claim, _pause_hold(case_id), "paused", body.text, None, True
        )

    @api.post(
        "/cases/{case_id}/resume",
        status_code=202,
        tags=["cases"],
        summary="Resume a paused case",
        responses=error_responses(404, 409),
    )
    async def resume(
        case_id: CasePath,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("resume", idempotency_key, case_id, None)
        return await _hold(
            request, principal, session, case_id, claim, _pause_hold(case_id), "paused", None, None, False
        )

    @api.post(
        "/cases/{case_id}/notes",
        status_code=202,
        tags=["cases"],
        summary="Add a note to the timeline",
        responses=error_responses(404, 409),
    )
    async def note(
        case_id: CasePath,
        body: NoteBody,
        request: Request,
        principal: Collector,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed("note", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        case = await _case(session, principal, case_id)
        data = c.CaseNote(
            note_id=claim.event_id,
            currency=case.currency,
            text=body.text,
            recorded=await _recorded(session, principal),
        )
        return await _record(request, principal, case.debtor_id, "ar.case.noted.v1", data, claim)

    # --- policies -------------------------------------------------------------------------------

    @api.put(
        "/policies/{version}",
        status_code=202,
        tags=["policies"],
        summary="Publish a version of the tenant's dunning policy, in force from a business date",
        responses=error_responses(409),
    )
    async def publish_policy(
        version: Annotated[int, Path(ge=1, le=MAX_INT32)],
        body: PolicyBody,
        request: Request,
        principal: Operations,
    ) -> dict[str, Any]:
        published = PolicyPublished(
            version=version, effective_from=body.effective_from, document=body.document
        )
        message = policy_message(principal.tenant_id, published, dt.datetime.now(dt.UTC))
        event_id = f"policy:{principal.tenant_id}:{version}"
        digest = hashlib.sha256(message.value).digest()
        async with request.app.state.sessions() as session, session.begin():
            claimed = await session.scalar(
                pg_insert(store.recorded_requests)
                .values(tenant_id=principal.tenant_id, event_id=event_id, content_sha256=digest)
                .on_conflict_do_nothing()
                .returning(store.recorded_requests.c.event_id)
            )
            if claimed is None:
                raise ApiError(409, f"policy version {version} was published already; publish a new version")
            await write_outbox(session, store.runtime, [message])
        request.app.state.outbox_written()
        return {"id": event_id, "status": "accepted"}

    @api.get("/policies", tags=["policies"], summary="The tenant's policy versions")
    async def list_policies(principal: Reader, session: ReadSession) -> dict[str, Any]:
        rows = await session.execute(
            select(store.policies.c.version, store.policies.c.effective_from, store.policies.c.document)
            .where(store.policies.c.tenant_id == principal.tenant_id)
            .order_by(store.policies.c.version)
        )
        return {
            "policies": [
                {"version": r.version, "effective_from": r.effective_from, **r.document} for r in rows
            ]
        }

    # --- agencies -------------------------------------------------------------------------------

    async def _placed_with(session: ReadSession, principal: Principal, case_id: str) -> Any:
        """The case if it is placed with this agency now; 404 otherwise, so nothing can be probed."""
        row = (
            await session.execute(
                select(*CASE_COLUMNS).where(
                    store.cases.c.tenant_id == principal.tenant_id,
                    store.cases.c.case_id == case_id,
                    store.cases.c.agency_id == principal.name,
                )
            )
        ).first()
        if row is None:
            raise ApiError(404, f"no case {case_id}")
        return row

    @api.get("/agency/feed", tags=["agencies"], summary="Placements, updates and recalls, in order")
    async def agency_feed(
        principal: Agency,
        session: ReadSession,
        after: Annotated[
            int, Query(ge=0, le=MAX_INT64, description="The cursor: the position of the last entry seen")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        feed = store.agency_feed
        rows = (
            await session.execute(
                select(feed.c.position, feed.c.case_id, feed.c.kind, feed.c.entry)
                .where(
                    feed.c.tenant_id == principal.tenant_id,
                    feed.c.agency_id == principal.name,
                    feed.c.position > after,
                )
                .order_by(feed.c.position)
                .limit(limit)
            )
        ).all()
        entries = [{"position": r.position, "case_id": r.case_id, "kind": r.kind, **r.entry} for r in rows]
        debtor_ids = [e["debtor_id"] for e in entries if "debtor_id" in e]
        profiles = await agency_store.profiles(session, principal.tenant_id, debtor_ids)
        policy = await _policy_today(session, principal.tenant_id)
        for entry in entries:
            if "debtor_id" in entry:
                debtor = entry["debtor_id"]
                entry["debtor"] = agency_view.debtor_details(debtor, profiles.get(debtor), policy)
        return {"entries": entries, "next": rows[-1].position if rows else after}

    async def _policy_today(session: ReadSession, tenant_id: str) -> DunningPolicy | None:
        day = await session.scalar(
            select(store.business_dates.c.business_date).where(store.business_dates.c.tenant_id == tenant_id)
        )
        return None if day is None else await agency_store.policy(session, tenant_id, day)

    @api.get(
        "/agency/cases/{case_id}",
        tags=["agencies"],
        summary="A case placed with this agency: the debtor as far as consented, the statement of the "
        "placed items, the documents sent so far and the recoveries reconciled with the ledger's payments",
        responses=error_responses(404),
    )
    async def agency_case(case_id: CasePath, principal: Agency, session: ReadSession) -> dict[str, Any]:
        row = await _placed_with(session, principal, case_id)
        tenant = principal.tenant_id
        case = await agency_store.case_state(session, tenant, case_id)
        if case is None:
            raise ApiError(404, f"no case {case_id}")
        day = await _business_date(session, tenant)
        profiles = await agency_store.profiles(session, tenant, [row.debtor_id])
        sent = await agency_store.documents_sent(session, tenant, row.debtor_id, case_id)
        ledger, reported = await agency_store.recoveries(session, tenant, case_id, principal.name)
        return {
            **{k: v for k, v in _case_row(row).items() if k not in ("version",)},
            "debtor": agency_view.debtor_details(
                row.debtor_id, profiles.get(row.debtor_id), await agency_store.policy(session, tenant, day)
            ),
            "statement": agency_view.statement(case, day),
            "documents": agency_view.documents(sent),
            "recoveries": agency_view.reconciliation(ledger, reported),
        }

    @api.post(
        "/agency/cases/{case_id}/outcomes",
        status_code=202,
        tags=["agencies"],
        summary="Report a contact result, promise, dispute or recovery",
        responses=error_responses(404, 409),
    )
    async def agency_outcome(
        case_id: CasePath,
        body: OutcomeBody,
        request: Request,
        principal: Agency,
        session: ReadSession,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        claim = _keyed(f"agency:{principal.name}", idempotency_key, case_id, body)
        if (answer := await _answered(session, principal, claim)) is not None:
            return answer
        row = await _placed_with(session, principal, case_id)
        if body.amount_recovered is not None and body.amount_recovered.currency != row.currency:
            raise _invalid("amount_recovered.currency", f"the case is in {row.currency}")
        data = c.AgencyOutcome(
            outcome_id=claim.event_id,
            agency_id=principal.name,
            case_id=case_id,
            kind=body.kind,
            amount_recovered=body.amount_recovered,
            detail=body.detail,
            recorded=await _recorded(session, principal),
        )
        return await _record(request, principal, row.debtor_id, "ar.agency.outcome.v1", data, claim)

    api.include_router(kpi_router())
    api.include_router(simulation_router())
    return api
