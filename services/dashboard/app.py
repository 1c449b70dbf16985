"""The dashboard's HTTP: the page, its static files, and `/api/{service}/{path}`, a read-only
pass-through to the services' APIs that forwards the caller's API key.

The page and the APIs share one origin, so the browser needs no CORS and the key never leaves the
tab for another host. What reaches the services is each one's own answer, status and body unchanged;
a service that cannot be reached is a 502.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
FORWARDED = ("authorization", "x-api-key", "accept")
PAGE_HEADERS = {
    # The page's own files only: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def dashboard_app(upstreams: Mapping[str, httpx.AsyncClient]) -> FastAPI:
    """The dashboard, passing `/api/{name}/...` to `upstreams[name]` (clients with the service's base
    URL or ASGI transport); it closes them when it shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for client in upstreams.values():
            await client.aclose()

    app = FastAPI(
        title="Arrears dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/api/{service}/{path:path}")
    async def pass_through(service: str, path: str, request: Request) -> Response:
        client = upstreams.get(service)
        if client is None:
            return JSONResponse({"detail": f"no service {service!r}; one of {', '.join(upstreams)}"}, 404)
        headers = {name: value for name in FORWARDED if (value := request.headers.get(name))}
        try:
            answer = await client.get(f"/{path}", params=request.query_params, headers=headers)
        except httpx.HTTPError as exc:
            return JSONResponse({"detail": f"{service} cannot be reached: {type(exc).__name__}"}, 502)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers={"Cache-Control": "no-store"},
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
