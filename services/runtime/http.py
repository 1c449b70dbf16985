"""HTTP plumbing every service's API shares: errors and their documentation, API-key authentication
and authorization, sessions, health (`readiness.py`), metrics.

Every refusal has one shape: `{"detail": "..."}` for 401, 403, 404, 409 and 413, and for 422
`{"detail": [{"field": ..., "message": ...}, ...]}` naming each wrong parameter or body field
(`instalments[1].amount`), also when FastAPI's own validation refuses the request. Authorization comes
first: a key that may not call a route gets its 401 or 403 whatever else is wrong with the request.
An outage of the database is a 503 with `Retry-After`: nothing of the request was done.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import ErrorDetails
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.envelope import IDENTIFIER_PATTERN
from contracts.scalars import PATTERN_MEANINGS
from services.runtime.auth import Principal, verify_key
from services.runtime.consumer import is_transient
from services.runtime.logging_setup import bind
from services.runtime.readiness import Readiness
from services.runtime.tables import RuntimeTables

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A domain error with its HTTP status; rendered as {"detail": ...} by one handler."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(str(detail))


class Problem(BaseModel):
    """A refusal said in words: 401, 403, 404, 409, 413."""

    detail: str = Field(description="What is wrong, in words")


class FieldProblem(BaseModel):
    """One wrong field of a request."""

    model_config = ConfigDict(extra="allow")

    field: str = Field(
        description="The wrong parameter or body field (`case_id`, `instalments[1].amount`, `body`), "
        "or `line N, column C` of an uploaded file"
    )
    message: str = Field(description="What is wrong with it")
    event: int | None = Field(default=None, description="In a batch: the index of the event")
    id: str | None = Field(default=None, description="In a batch: the id of the event")
    line: int | None = Field(default=None, description="In a file: the line")
    column: str | None = Field(default=None, description="In a file: the column")


class Invalid(BaseModel):
    """A request refused for its content (422): every wrong field, each named."""

    detail: list[FieldProblem]


_DESCRIPTIONS = {
    401: "No API key, or one that is not valid",
    403: "The key's role may not do this, or the request is for another tenant",
    404: "Not found for the key's tenant",
    409: "In conflict with what is recorded (the request was made before, or its precondition is unmet)",
    413: "The body is too large",
    422: "A parameter or body field is wrong; each is named",
    503: "The database cannot be reached just now: nothing was done, the same request may be retried",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI declarations of these error statuses, in the shapes the handlers below send."""
    return {
        status: {
            "model": Invalid if status == 422 else Problem,
            "description": _DESCRIPTIONS[status],
            **({"headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}} if status == 401 else {}),
        }
        for status in statuses
    }


def api_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """What every authenticated route can answer (401, 403, 422, 503), and these statuses."""
    return error_responses(401, 403, 422, 503, *statuses)


async def _render(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


_PARTS = ("path", "query", "header", "cookie", "body")
_MEANINGS = {
    **PATTERN_MEANINGS,
    IDENTIFIER_PATTERN: "must be an identifier: letters, digits and . _ : / @ + -, a letter or digit first",
    r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*:[A-Z]{3}$": (
        'must be "{debtor id}:{ISO 4217 currency}", e.g. C-1042:EUR'
    ),
    r"^[A-Z]{3}$": "must be an ISO 4217 currency code in capitals, e.g. EUR",
}
"""What a pattern asks for, in words."""


def _field(loc: Sequence[int | str]) -> str:
    """A location the way the contracts name a field: `instalments[1].amount`, without the part of the
    request it is in (path, query, header, body); `body` for the body as a whole."""
    rest = loc[1:] if loc and loc[0] in _PARTS else loc
    out = ""
    for part in rest:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or (str(loc[0]) if loc else "body")


def _problem(error: ErrorDetails) -> dict[str, str]:
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error")
        return {"field": "body", "message": "the body is not valid JSON" + (f": {reason}" if reason else "")}
    message = error["msg"]
    if error["type"] == "string_pattern_mismatch":
        message = _MEANINGS.get(str(error.get("ctx", {}).get("pattern")), message)
    return {"field": _field(error["loc"]), "message": message}


async def _authorized_first(request: Request) -> JSONResponse | None:
    """The 401 or 403 of the route's key check, when the request fails it; None when it passes."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return None
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Authorize):
            try:
                await dependency.call(request)
            except ApiError as exc:
                return await _render(request, exc)
    return None


async def _refuse_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = await _authorized_first(request)
    if refused is not None:
        return refused
    return JSONResponse({"detail": [_problem(e) for e in exc.errors()]}, status_code=422)


async def _refuse_unreadable(request: Request, exc: Exception) -> Any:
    """A body FastAPI cannot read (not UTF-8, say) is a 422 on the body, after the key's check; every
    other HTTP error (an unknown path, a method the path does not have) as FastAPI renders it."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 400:
        return await http_exception_handler(request, exc)
    refused = await _authorized_first(request)
    if refused is not None:
        return refused
    problem = {"field": "body", "message": "the body cannot be read: send UTF-8 JSON"}
    return JSONResponse({"detail": [problem]}, status_code=422)


_OUTAGES = (OSError, TimeoutError, DBAPIError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """An outage of the database (or of the connection to it) is a 503 the client retries, not a
    500: the request's transaction did not commit, so nothing of it was done."""
    if not is_transient(exc):
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the database cannot be reached just now; retry the same request"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def install_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _render)
    for outage in _OUTAGES:
        app.add_exception_handler(outage, _unavailable)
    app.add_exception_handler(RequestValidationError, _refuse_invalid)
    app.add_exception_handler(StarletteHTTPException, _refuse_unreadable)


def sessions_of(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for reads; nothing is committed."""
    async with sessions_of(request)() as session:
        yield session


ReadSession = Annotated[AsyncSession, Depends(read_session)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials if scheme.lower() == "bearer" and credentials else None


class Authorize:
    """The dependency that admits a request by its API key (401 without a valid one) in one of
    `roles` (403 in another). FastAPI runs it before it validates the route's parameters and body,
    and the validation handlers run it before they refuse a request, so a key that may not call the
    route learns only that, however malformed the request."""

    def __init__(self, tables: RuntimeTables, *roles: str) -> None:
        self.tables = tables
        self.roles = roles

    async def __call__(self, request: Request) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            presented = _presented_key(request)
            if not presented:
                raise ApiError(401, "an API key is required (X-API-Key header or Authorization: Bearer)")
            async with sessions_of(request)() as session:
                principal = await verify_key(session, self.tables, presented)
            if principal is None:
                raise ApiError(401, "the API key is not valid")
            request.state.principal = principal
            bind(tenant=principal.tenant_id)
        if principal.role not in self.roles:
            needs = " or ".join(self.roles)
            raise ApiError(403, f"a {principal.role} key cannot do this; needs {needs}")
        return principal


def install_health(app: FastAPI, readiness: Readiness) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def alive() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def ready() -> JSONResponse:
        """200 while this process can do its work, 503 otherwise; the body says which check failed
        (`readiness.py`)."""
        report = await readiness.report()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)
