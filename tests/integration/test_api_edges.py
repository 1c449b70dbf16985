"""What fuzzing the APIs found, each held by a request: malformed ids, lowercase currencies, integers
past `bigint`, NUL characters, dates out of range or given as numbers are refused with a 422 naming
the field, never a 500; a key that may not call a route gets its 403 (or 401) before any check of the
request; and each OpenAPI document declares the errors in the shapes the APIs send."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.ledger.main import LedgerService
from services.runtime.process import open_resources
from services.runtime.settings import Settings
from tests.infra.kafka_broker import KafkaBroker, free_ports
from tests.integration.api_world import CASE_ID, api_world
from tests.integration.events import envelope

pytestmark = pytest.mark.integration

CASE = f"/v1/cases/{CASE_ID}"
BIG = 2**64


@dataclass
class Apis:
    apps: dict[str, FastAPI]
    keys: dict[str, str]
    tenant: str

    def client(self, service: str, role: str | None) -> httpx.AsyncClient:
        headers = {"X-API-Key": self.keys[role]} if role else {}
        transport = httpx.ASGITransport(app=self.apps[service])
        return httpx.AsyncClient(transport=transport, base_url=f"http://{service}", headers=headers)


@pytest.fixture
async def apis(new_database: Callable[[], Awaitable[str]], tenant: str) -> AsyncIterator[Apis]:
    async with api_world(await new_database(), tenant) as world:
        apps = {name: world.stack.app(name) for name in world.stack.services}
        yield Apis(apps, world.keys, tenant)


def refused(response: httpx.Response) -> list[str]:
    """The fields a 422 names; every entry has a field and a message."""
    assert response.status_code == 422, response.text
    problems: list[dict[str, Any]] = response.json()["detail"]
    assert all(isinstance(p["field"], str) and isinstance(p["message"], str) for p in problems), problems
    return [p["field"] for p in problems]


async def test_malformed_ids_and_lowercase_currencies_in_paths_are_422s(apis: Apis) -> None:
    async with apis.client("dunning", "collector") as dunning:
        lowercase = await dunning.get("/v1/cases/c-1042:eur")
        assert refused(lowercase) == ["case_id"]
        assert "ISO 4217" in lowercase.json()["detail"][0]["message"]
        assert refused(await dunning.post("/v1/cases/C-1042:eur/notes", json={"text": "x"})) == ["case_id"]
        assert refused(await dunning.get("/v1/cases/C-1042%00:EUR")) == ["case_id"]
        body = {"invoice_id": "I-1"}
        for odd in ("%00", "a%20b", "-x", "x" * 129):
            response = await dunning.post(f"{CASE}/disputes/{odd}/resolve", json=body)
            assert refused(response) == ["dispute_id"], odd
            assert refused(await dunning.delete(f"{CASE}/holds/{odd}")) == ["hold_id"], odd
        assert (await dunning.delete(f"{CASE}/holds/H-1")).status_code == 202
    async with apis.client("dunning", "agency") as agency:
        assert refused(await agency.get("/v1/agency/cases/C-1042:usd")) == ["case_id"]
    async with apis.client("ledger", "erp") as ledger:
        assert refused(await ledger.get("/v1/events/a%00b")) == ["event_id"]
        assert refused(await ledger.get("/v1/debtors/D%001/statement")) == ["debtor_id"]
    async with apis.client("notifier", "collector") as notifier:
        assert refused(await notifier.post("/v1/tasks/a%00b/done")) == ["command_id"]
    async with apis.client("scoring", "collector") as scoring:
        assert refused(await scoring.get("/v1/debtors/a%00b/score")) == ["debtor_id"]


async def test_integers_past_bigint_are_422s_in_queries_and_aging_buckets(apis: Apis) -> None:
    async with apis.client("dunning", "collector") as dunning:
        assert refused(await dunning.get("/v1/cases", params={"offset": BIG})) == ["offset"]
        assert refused(await dunning.get("/v1/cases", params={"min_overdue_minor": BIG})) == [
            "min_overdue_minor"
        ]
    async with apis.client("dunning", "agency") as agency:
        assert refused(await agency.get("/v1/agency/feed", params={"after": BIG})) == ["after"]
    async with apis.client("dunning", "operations") as operations:
        assert "version" in refused(await operations.put(f"/v1/policies/{BIG}", json={}))
    async with apis.client("ledger", "erp") as ledger:
        assert refused(await ledger.get("/v1/rejections", params={"after": BIG})) == ["after"]
        for bounds in ([BIG], [30, BIG], [True], [30.5], [0]):
            response = await ledger.put("/v1/aging-policy", json={"bounds": bounds})
            assert refused(response)[0].startswith("bounds"), (bounds, response.text)
        assert refused(await ledger.put("/v1/aging-policy", json={"bounds": [60, 30]})) == ["bounds"]
        ok = await ledger.put("/v1/aging-policy", json={"bounds": [30, 60]})
        assert ok.status_code == 200 and ok.json()["bounds"] == [30, 60], ok.text


async def test_nul_characters_in_queries_names_and_text_are_422s(apis: Apis) -> None:
    async with apis.client("dunning", "collector") as dunning:
        assert refused(await dunning.get("/v1/cases", params={"debtor_id": "D1\x00"})) == ["debtor_id"]
        assert refused(await dunning.get("/v1/cases", params={"step": "a\x00"})) == ["step"]
        assert refused(await dunning.post(f"{CASE}/notes", json={"text": "a\x00b"})) == ["text"]
        assert refused(await dunning.post(f"{CASE}/pause", json={"text": "\x00"})) == ["text"]
        assert refused(await dunning.post(f"{CASE}/holds", json={"reason": "x\x00"})) == ["reason"]
    async with apis.client("scoring", "collector") as scoring:
        assert refused(await scoring.get("/v1/worklist", params={"collector": "a\x00"})) == ["collector[0]"]
    async with apis.client("ledger", "erp") as ledger:
        named = envelope("ar.debtor.registered.v1", apis.tenant, "D1", "reg-D1", {"name": "Acme\x00Ltd"})
        response = await ledger.post("/v1/events", json=[named])
        assert refused(response) == ["data.name"]


async def test_dates_outside_1900_to_2999_or_given_as_numbers_are_422s(apis: Apis) -> None:
    async with apis.client("ledger", "erp") as ledger:
        for as_of in ("0", "20260105", "0001-01-01", "9999-12-31", "1899-12-31", "3000-01-01"):
            assert refused(await ledger.get("/v1/aging", params={"as_of": as_of})) == ["as_of"], as_of
            assert refused(await ledger.get("/v1/debtors/D1/statement", params={"as_of": as_of})) == ["as_of"]
            response = await ledger.post("/v1/imports/open-items", params={"as_of": as_of}, content=b"")
            assert refused(response) == ["as_of"]
        for known_at in ("0", "2026-01-05T00:00:00", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"):
            params = {"known_at": known_at}
            assert refused(await ledger.get("/v1/aging", params=params)) == ["known_at"], known_at
        assert (await ledger.get("/v1/aging", params={"as_of": "1900-01-01"})).status_code == 200
        assert (await ledger.get("/v1/aging", params={"as_of": "2999-12-31"})).status_code == 200
    async with apis.client("scoring", "operations") as scoring:
        for as_of in ("0", "0001-01-01", "9999-12-31"):
            assert refused(await scoring.get("/v1/provision", params={"as_of": as_of})) == ["as_of"]
    async with apis.client("dunning", "collector") as dunning:
        assert refused(await dunning.get("/v1/cases", params={"due_by": "0"})) == ["due_by"]
        amount = {"amount_minor": 100, "currency": "EUR"}
        for day in (0, 1767571200, "0001-01-01", "9999-12-31"):
            promise = {"amount": amount, "promised_date": day}
            assert refused(await dunning.post(f"{CASE}/promises", json=promise)) == ["promised_date"], day
            plan = {"instalments": [{"due_date": day, "amount": amount}]}
            assert refused(await dunning.post(f"{CASE}/plans", json=plan)) == ["instalments[0].due_date"]


async def test_a_key_that_may_not_call_a_route_gets_403_before_any_check_of_the_request(apis: Apis) -> None:
    async with apis.client("dunning", "collector") as collector:
        for body in (b"{not json", b'{"effective_from": 0}', b"\xff\xfe"):
            response = await collector.put(
                "/v1/policies/1", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 403, response.text
        assert (await collector.put("/v1/policies/0", json={})).status_code == 403
        assert (await collector.get("/v1/agency/feed", params={"after": -1})).status_code == 403
    async with apis.client("dunning", "operations") as operations:
        response = await operations.put(
            "/v1/policies/1", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert refused(response) == ["body"]
        assert (await operations.post("/v1/cases/bad/notes", json={"text": ""})).status_code == 403
    async with apis.client("dunning", None) as anonymous:
        response = await anonymous.put(
            "/v1/policies/1", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "ApiKey"
    async with apis.client("ledger", "collector") as ledger:
        assert (await ledger.get("/v1/aging", params={"as_of": "0"})).status_code == 403
        assert (await ledger.put("/v1/aging-policy", json={"bounds": [BIG]})).status_code == 403
    async with apis.client("scoring", "agency") as scoring:
        assert (await scoring.get("/v1/provision", params={"as_of": "0"})).status_code == 403
    async with apis.client("notifier", "erp") as notifier:
        assert (await notifier.get("/v1/tasks", params={"limit": 0})).status_code == 403
        assert (await notifier.post("/v1/tasks/a%00/done")).status_code == 403
    async with apis.client("ledger", None) as anonymous:
        malformed = {"X-API-Key": "ark_zz_\x7f"}
        assert (await anonymous.get("/v1/aging", headers=malformed)).status_code == 401


async def test_every_operation_documents_its_errors_in_the_shapes_sent(apis: Apis) -> None:
    for name, app in apis.apps.items():
        document = app.openapi()
        schemas = document["components"]["schemas"]
        assert "HTTPValidationError" not in schemas, name
        assert schemas["Invalid"]["properties"]["detail"]["type"] == "array"
        assert set(schemas["FieldProblem"]["required"]) == {"field", "message"}
        assert set(schemas["Problem"]["required"]) == {"detail"}
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                responses = operation["responses"]
                assert {"401", "403", "422"} <= set(responses), (name, method, path)
                invalid = responses["422"]["content"]["application/json"]["schema"]
                assert invalid == {"$ref": "#/components/schemas/Invalid"}, (name, method, path)
                if "_id}" in path:
                    assert "404" in responses, (name, method, path)
    ledger = apis.apps["ledger"].openapi()["paths"]
    assert "413" in ledger["/v1/events"]["post"]["responses"]
    assert "409" in ledger["/v1/aging"]["get"]["responses"]
    dunning = apis.apps["dunning"].openapi()["paths"]
    assert "409" in dunning["/v1/policies/{version}"]["put"]["responses"]
    assert "409" in dunning["/v1/cases/{case_id}/notes"]["post"]["responses"]


async def test_a_database_that_cannot_be_reached_is_a_503_to_retry_not_a_500(kafka: KafkaBroker) -> None:
    (closed,) = free_ports(1)
    settings = Settings(
        database_url=f"postgresql+asyncpg://arrears@127.0.0.1:{closed}/arrears",
        kafka_bootstrap_servers=kafka.bootstrap_servers,
    )
    async with open_resources(settings) as resources:
        app = LedgerService(resources).app(run_background=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as ledger:
            headers = {"X-API-Key": "ark_0123456789abcdef_" + "x" * 32}
            event = envelope("ar.debtor.registered.v1", "t1", "D1", "reg-1", {"name": "Acme"})
            for response in (
                await ledger.post("/v1/events", json=[event], headers=headers),
                await ledger.get("/v1/aging", params={"as_of": "2026-01-05"}, headers=headers),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "1"
                assert "retry" in response.json()["detail"]
