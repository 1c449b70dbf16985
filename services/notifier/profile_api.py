"""The tenant's creditor profile over HTTP: versions recorded by operations, read by the team."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts.scalars import Version
from services.notifier import store
from services.notifier.profile import ProfileVersion, TenantProfile, in_force
from services.runtime.auth import Principal
from services.runtime.http import ApiError, Authorize, ReadSession, api_responses, error_responses
from services.runtime.params import IsoDate

Operations = Annotated[Principal, Depends(Authorize(store.runtime, "operations"))]
"""Who records the creditor's details."""
Reader = Annotated[Principal, Depends(Authorize(store.runtime, "collector", "operations"))]


class ProfileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effective_from: IsoDate
    profile: TenantProfile


def router() -> APIRouter:
    api = APIRouter(prefix="/v1/tenant-profile", tags=["tenant profile"], responses=api_responses())

    @api.put(
        "/versions/{version}",
        summary="Record a version of the creditor's details, in force from a business date",
        description="Versions are never changed: the same version again with the same content is "
        "answered 200, with other content 409. Letters and e-mails of a command carry the version in "
        "force on the command's business date.",
        status_code=201,
        responses={
            200: {"description": "The version was recorded before, with this content"},
            **error_responses(409),
        },
    )
    async def put_version(
        version: Annotated[Version, Path()], body: ProfileBody, request: Request, principal: Operations
    ) -> Any:
        recorded = ProfileVersion(version=version, effective_from=body.effective_from, profile=body.profile)
        t = store.tenant_profiles
        async with request.app.state.sessions() as session, session.begin():
            inserted = await session.execute(
                pg_insert(t)
                .values(
                    tenant_id=principal.tenant_id,
                    version=version,
                    effective_from=body.effective_from,
                    profile=body.profile.model_dump(mode="json"),
                )
                .on_conflict_do_nothing()
                .returning(t.c.version)
            )
            if inserted.first() is None:
                existing = {v.version: v for v in await store.profile_versions(session, principal.tenant_id)}[
                    version
                ]
                if existing != recorded:
                    raise ApiError(
                        409, f"version {version} is recorded with other content; record a new version"
                    )
                return JSONResponse(recorded.model_dump(mode="json"), status_code=200)
        return recorded.model_dump(mode="json")

    @api.get(
        "",
        summary="The creditor's details in force on a business date (the latest version without one)",
        responses=error_responses(404),
    )
    async def get_profile(principal: Reader, session: ReadSession, as_of: IsoDate | None = None) -> Any:
        versions = await store.profile_versions(session, principal.tenant_id)
        found = (
            in_force(versions, as_of)
            if as_of is not None
            else max(versions, key=lambda v: v.version, default=None)
        )
        if found is None:
            raise ApiError(404, "no tenant profile in force" + (f" on {as_of}" if as_of else ""))
        return found.model_dump(mode="json")

    @api.get("/versions", summary="Every recorded version of the creditor's details")
    async def list_versions(principal: Reader, session: ReadSession) -> dict[str, Any]:
        versions = sorted(await store.profile_versions(session, principal.tenant_id), key=lambda v: v.version)
        return {"versions": [v.model_dump(mode="json") for v in versions]}

    return api
