"""HTTP plumbing every service's API shares: errors, API-key authentication, sessions, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.auth import Principal, verify_key
from services.runtime.log import EventLog
from services.runtime.supervisor import BackgroundTasks
from services.runtime.tables import RuntimeTables


class ApiError(Exception):
    """A domain error with its HTTP status; rendered as {"detail": ...} by one handler."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(str(detail))


async def _render(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


def install_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _render)


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


def authenticator(tables: RuntimeTables) -> Callable[[Request], Awaitable[Principal]]:
    async def authenticate(request: Request) -> Principal:
        presented = _presented_key(request)
        if not presented:
            raise ApiError(401, "an API key is required (X-API-Key header or Authorization: Bearer)")
        async with sessions_of(request)() as session:
            principal = await verify_key(session, tables, presented)
        if principal is None:
            raise ApiError(401, "the API key is not valid")
        return principal

    return authenticate


def require_role(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise ApiError(403, f"a {principal.role} key cannot do this; needs {' or '.join(roles)}")


def install_health(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def alive() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        """200 only while this process can do its work: the database answers and, where the process
        runs background loops, the log takes records and every loop (consumer, outbox relay,
        sender) runs without a standing failure. An API-only process writes what it accepts to
        the database alone, so the broker being away does not make it unready."""
        checks: dict[str, bool] = {"database": False}
        try:
            async with sessions_of(request)() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), 5)
            checks["database"] = True
        except Exception:
            pass
        background: BackgroundTasks | None = getattr(request.app.state, "background", None)
        loops = background.ready() if background is not None else {}
        if loops:
            event_log: EventLog = request.app.state.event_log
            checks["log"] = await event_log.healthy()
            checks.update(loops)
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)
