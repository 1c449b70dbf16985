"""Bad input is refused at the API, naming the field, so it never reaches a consumer: the ledger's
contracts refuse what PostgreSQL cannot store, the dunning API refuses malformed case ids (422) and
cases that do not exist (404), and the consumers go on applying what comes after."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.stack import serving
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice

pytestmark = pytest.mark.integration

D = dt.date
NO_CASE = "A1:XYZ"


@dataclass
class Http:
    stack: CollectionsStack
    ledger_url: str
    dunning_url: str

    def ledger(self) -> httpx.AsyncClient:
        return self._client(self.ledger_url, "erp")

    def dunning(self, role: str = "collector") -> httpx.AsyncClient:
        return self._client(self.dunning_url, role)

    def _client(self, url: str, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, headers={"X-API-Key": self.stack.keys[role]}, timeout=30)


@pytest.fixture
async def http(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[Http]:
    settings = settings_for(await new_database(), kafka)
    async with (
        collections_stack(settings, tenant, tmp_path / "letters") as stack,
        serving(stack.stack.app("ledger")) as ledger,
        serving(stack.stack.app("dunning")) as dunning,
    ):
        await stack.publish_policy(D(2026, 1, 1))
        await stack.start_day(D(2026, 1, 5))
        yield Http(stack, ledger, dunning)


def eur(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": "EUR"}


def registration(tenant: str, debtor: str, name: str) -> dict[str, Any]:
    return envelope("ar.debtor.registered.v1", tenant, debtor, f"reg-{debtor}", {"name": name})


def refused(response: httpx.Response) -> list[dict[str, Any]]:
    """The fields a 422 names, each as {"field", "message"} (and the event and its id, for a batch).
    FastAPI's own validation names it by its location, here without the part of the request."""
    assert response.status_code == 422, response.text
    return [
        item if "field" in item else {"field": _dotted(item["loc"][1:]), "message": item["msg"]}
        for item in response.json()["detail"]
    ]


def _dotted(loc: list[str | int]) -> str:
    """A location the way the contracts name a field: instalments[1].amount."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def fields(response: httpx.Response) -> list[str]:
    return [item["field"] for item in refused(response)]


async def accepted(api: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await api.post("/v1/events", json=events)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


async def test_what_postgresql_cannot_store_is_refused_by_the_ledger_and_dunning_goes_on(http: Http) -> None:
    t = http.stack.tenant
    async with http.ledger() as ledger:
        bad = [
            registration(t, "D1", "Acme\x00Ltd"),
            invoice(t, "D1", "I-1", "2026-01-05", "0001-02-04", 10_000),
            invoice(t, "D1", "I-2", "2026-01-05", "2026-02-04", 2**64),
            {**invoice(t, "D1", "I-3", "2026-01-05", "2026-02-04", 10_000), "source": "erp\x1b[0m"},
        ]
        found = refused(await ledger.post("/v1/events", json=bad))
        assert [(e["event"], e["id"], e["field"]) for e in found] == [
            (0, "reg-D1", "data.name"),
            (1, "inv-I-1", "data.due_date"),
            (2, "inv-I-2", "data.amount.amount_minor"),
            (3, "inv-I-3", "source"),
        ]
        assert "control characters" in found[0]["message"]
        assert "1900-01-01" in found[1]["message"]

        await accepted(
            ledger,
            [registration(t, "D1", "Acme Ltd"), invoice(t, "D1", "I-1", "2026-01-05", "2026-02-04", 10_000)],
        )
    await http.stack.settled()
    async with http.dunning() as dunning:
        case = await dunning.get("/v1/cases/D1:EUR")
        assert case.status_code == 200 and case.json()["overdue_minor"] == 0, case.text


async def test_a_note_on_a_malformed_or_unknown_case_is_refused_and_dunning_goes_on(http: Http) -> None:
    t = http.stack.tenant
    async with http.ledger() as ledger:
        await accepted(
            ledger,
            [registration(t, "D1", "Acme Ltd"), invoice(t, "D1", "I-1", "2026-01-05", "2026-02-04", 10_000)],
        )
    await http.stack.settled()
    note = {"text": "called, no answer"}
    async with http.dunning() as dunning:
        response = await dunning.post(f"/v1/cases/{NO_CASE}/notes", json=note)
        assert fields(response) == ["case_id"]
        assert "ISO 4217" in refused(response)[0]["message"]
        for method, path, body in (
            ("POST", "promises", {"amount": eur(100), "promised_date": "2026-02-01"}),
            ("POST", "disputes", {"invoice_id": "I-1"}),
            ("POST", "disputes/DS-1/resolve", {"invoice_id": "I-1"}),
            ("POST", "plans", {"instalments": [{"due_date": "2026-02-01", "amount": eur(1)}]}),
            ("POST", "holds", {"reason": "insolvency filed"}),
            ("DELETE", "holds/H-1", None),
            ("POST", "pause", {"text": "on holiday"}),
            ("POST", "resume", None),
            ("POST", "notes", note),
        ):
            malformed = await dunning.request(method, f"/v1/cases/{NO_CASE}/{path}", json=body)
            assert fields(malformed) == ["case_id"], (path, malformed.text)
            unknown = await dunning.request(method, f"/v1/cases/A1:EUR/{path}", json=body)
            assert unknown.status_code == 404, (path, unknown.text)
        assert fields(await dunning.get("/v1/cases/A1%00:EUR")) == ["case_id"]

    async with http.dunning("agency") as agency:
        assert fields(await agency.get(f"/v1/agency/cases/{NO_CASE}")) == ["case_id"]
        outcome = {"kind": "contact_made"}
        assert fields(await agency.post(f"/v1/agency/cases/{NO_CASE}/outcomes", json=outcome)) == ["case_id"]
        assert (await agency.post("/v1/agency/cases/A1:EUR/outcomes", json=outcome)).status_code == 404
        assert fields(await agency.get("/v1/agency/feed", params={"after": 2**70})) == ["after"]

    # Later records are applied, and nothing refused opened a case.
    text = "line one\nline two"
    async with http.dunning() as dunning:
        assert (await dunning.post("/v1/cases/D1:EUR/notes", json={"text": text})).status_code == 202
        await http.stack.settled()
        timeline = (await dunning.get("/v1/cases/D1:EUR")).json()["timeline"]
        assert any(e["kind"] == "note" and e.get("detail") == text for e in timeline), timeline
        listed = (await dunning.get("/v1/cases")).json()["cases"]
        assert [c["case_id"] for c in listed] == ["D1:EUR"]


async def test_promises_plans_and_holds_are_refused_naming_the_field(http: Http) -> None:
    t = http.stack.tenant
    async with http.ledger() as ledger:
        await accepted(ledger, [invoice(t, "D1", "I-1", "2026-01-05", "2026-02-04", 10_000)])
    await http.stack.settled()

    def promise(minor: int, on: str, currency: str = "EUR") -> dict[str, Any]:
        return {"amount": {"amount_minor": minor, "currency": currency}, "promised_date": on}

    async with http.dunning() as dunning:
        path = "/v1/cases/D1:EUR/promises"
        for minor in (-5, 0):
            response = await dunning.post(path, json=promise(minor, "2026-02-01"))
            assert fields(response) == ["amount"], response.text
            assert "positive" in refused(response)[0]["message"]
        assert fields(await dunning.post(path, json=promise(100, "1900-06-01"))) == ["promised_date"]
        assert fields(await dunning.post(path, json=promise(100, "1899-12-31"))) == ["promised_date"]
        assert fields(await dunning.post(path, json=promise(100, "2026-02-01", "USD"))) == ["amount.currency"]
        assert fields(await dunning.post(path, json=promise(10**16, "2026-02-01"))) == ["amount.amount_minor"]
        key = {"Idempotency-Key": "not an id"}
        assert fields(await dunning.post(path, json=promise(100, "2026-02-01"), headers=key)) == [
            "Idempotency-Key"
        ]

        def plan(*instalments: tuple[str, int]) -> dict[str, Any]:
            return {"instalments": [{"due_date": d, "amount": eur(a)} for d, a in instalments]}

        plans = "/v1/cases/D1:EUR/plans"
        assert fields(await dunning.post(plans, json=plan(("2026-02-01", 50), ("2026-03-01", -50)))) == [
            "instalments[1].amount"
        ]
        assert fields(await dunning.post(plans, json=plan(("1950-02-01", 50)))) == ["instalments[0].due_date"]
        holds = "/v1/cases/D1:EUR/holds"
        assert fields(await dunning.post(holds, json={"reason": "filed", "until": "2000-01-01"})) == ["until"]
        assert fields(await dunning.post(holds, json={"reason": "filed\x00"})) == ["reason"]
        assert fields(await dunning.get("/v1/cases", params={"debtor_id": "D1\x00"})) == ["debtor_id"]

        assert (await dunning.post(path, json=promise(10_000, "2026-02-01"))).status_code == 202
    await http.stack.settled()
    async with http.dunning() as dunning:
        case = (await dunning.get("/v1/cases/D1:EUR")).json()
        assert "promise_recorded" in [e["kind"] for e in case["timeline"]]
