"""The collections team's task queue: calls to make, legal files to open, write-offs to review."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select, update

from contracts.envelope import Identifier
from services.notifier import store
from services.runtime.auth import Principal
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses

Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]
"""Who reads the task queue."""
Collector = Annotated[Principal, Depends(Authorize(store.runtime, "collector"))]
"""Who does the tasks."""


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["tasks"], responses=api_responses())

    @api.get("/tasks", summary="Open tasks for the collections team, oldest first")
    async def list_tasks(
        principal: Reader,
        session: ReadSession,
        kind: Literal["call", "legal", "writeoff_review", "find_address", "dispute"] | None = None,
        include_done: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        t = store.tasks
        query = select(
            t.c.command_id, t.c.debtor_id, t.c.case_id, t.c.kind, t.c.script, t.c.due_on, t.c.done_at
        )
        query = query.where(t.c.tenant_id == principal.tenant_id)
        if kind is not None:
            query = query.where(t.c.kind == kind)
        if not include_done:
            query = query.where(t.c.done_at.is_(None))
        rows = await session.execute(query.order_by(t.c.due_on, t.c.command_id).limit(limit))
        return {"tasks": [dict(r._mapping) for r in rows]}

    @api.post("/tasks/{command_id}/done", summary="Mark a task done", responses=error_responses(404))
    async def done(
        command_id: Annotated[Identifier, Path()], request: Request, principal: Collector
    ) -> dict[str, Any]:
        t = store.tasks
        async with request.app.state.sessions() as session, session.begin():
            result = await session.execute(
                update(t)
                .where(
                    t.c.tenant_id == principal.tenant_id, t.c.command_id == command_id, t.c.done_at.is_(None)
                )
                .values(done_at=dt.datetime.now(dt.UTC))
                .returning(t.c.command_id)
            )
            if result.first() is None:
                raise ApiError(404, f"no open task {command_id}")
        return {"command_id": command_id, "status": "done"}

    return api
