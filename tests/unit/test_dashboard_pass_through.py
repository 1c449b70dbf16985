"""The dashboard's pass-through, in the process: the caller's key and query reach the service, the
service's answer comes back as it was, and the page is served with a policy that allows only its own
files."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.dashboard.app import dashboard_app
from services.dashboard.upstreams import in_process


def echo_service() -> FastAPI:
    service = FastAPI()

    @service.get("/v1/aging")
    async def aging(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer ark_1_good":
            return JSONResponse({"detail": "the API key is not valid"}, status_code=401)
        return JSONResponse(
            {"as_of": request.query_params.get("as_of"), "cookie": request.headers.get("cookie")}
        )

    return service


def client() -> httpx.AsyncClient:
    app = dashboard_app(in_process({"ledger": echo_service()}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")


async def test_the_callers_key_and_query_reach_the_service() -> None:
    async with client() as dashboard:
        answer = await dashboard.get(
            "/api/ledger/v1/aging?as_of=2013-02-28",
            headers={"Authorization": "Bearer ark_1_good", "Cookie": "session=secret"},
        )
    assert answer.status_code == 200
    assert answer.json() == {"as_of": "2013-02-28", "cookie": None}, "nothing but the key is forwarded"


async def test_the_services_refusal_comes_back_as_it_was() -> None:
    async with client() as dashboard:
        answer = await dashboard.get("/api/ledger/v1/aging", headers={"Authorization": "Bearer ark_1_bad"})
    assert (answer.status_code, answer.json()) == (401, {"detail": "the API key is not valid"})


async def test_an_unknown_service_is_not_found() -> None:
    async with client() as dashboard:
        answer = await dashboard.get("/api/payroll/v1/aging")
    assert answer.status_code == 404
    assert "ledger" in answer.json()["detail"]


async def test_the_page_and_its_files_are_served_with_a_policy_of_their_own() -> None:
    async with client() as dashboard:
        page = await dashboard.get("/")
        script = await dashboard.get("/static/dashboard.js")
    assert page.status_code == 200 and "<title>Arrears" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert script.status_code == 200 and "sessionStorage" in script.text
