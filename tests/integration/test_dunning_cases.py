"""Collection cases over the dunning API on real Kafka and PostgreSQL, one stack for the module and a
tenant of its own for each policy: only an existing case takes a record (any other is a 404, and no
record in the log opens one); an Idempotency-Key makes a repeat get the first answer while each new
request is recorded anew; a new policy version plans every open case again on its first business
day; a placement that was not delivered is a recall in the agency's feed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from contracts import collections as c
from contracts.money import Money
from contracts.registry import encode_event, make_event
from contracts.topics import CONTACTS
from services.dunning.policies import default_policy
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.log import Message
from services.stack import serving
from tests.infra.kafka_broker import KafkaBroker
from tests.infra.postgres_server import PostgresServer
from tests.integration.collections_stack import CollectionsStack, collections_stack, tenant_keys
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice, money

pytestmark = pytest.mark.integration

D = dt.date
TODAY = D(2026, 1, 5)


# --- one stack, served over HTTP, a tenant per policy ---------------------------------------------


async def fresh_database(postgres: PostgresServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(sqlalchemy_to_libpq(postgres.url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, query = postgres.url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@dataclass
class Tenant:
    """A tenant of the module's stack: its keys, its clock, its requests over HTTP."""

    stack: CollectionsStack
    ledger_url: str
    dunning_url: str

    @property
    def id(self) -> str:
        return self.stack.tenant

    def dunning(self, role: str = "collector") -> httpx.AsyncClient:
        """A client of the dunning API with the key of `role`, or of the agency of that id."""
        headers = {"X-API-Key": self.stack.keys[role]}
        return httpx.AsyncClient(base_url=self.dunning_url, headers=headers, timeout=30)

    async def post(self, events: list[dict[str, Any]]) -> None:
        headers = {"X-API-Key": self.stack.keys["erp"]}
        async with httpx.AsyncClient(base_url=self.ledger_url, headers=headers, timeout=30) as ledger:
            response = await ledger.post("/v1/events", json=events)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(events)

    async def publish_policy(self, version: int, effective_from: dt.date, document: dict[str, Any]) -> None:
        async with self.dunning("operations") as api:
            response = await api.put(
                f"/v1/policies/{version}",
                json={"effective_from": effective_from.isoformat(), "document": document},
            )
        assert response.status_code == 202, response.text

    async def case(self, case_id: str) -> dict[str, Any]:
        async with self.dunning() as api:
            response = await api.get(f"/v1/cases/{case_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def cases(self) -> list[str]:
        async with self.dunning() as api:
            response = await api.get("/v1/cases", params={"limit": 1000})
        return sorted(case["case_id"] for case in response.json()["cases"])

    async def feed(self, agency: str) -> list[tuple[str, str]]:
        async with self.dunning(agency) as api:
            entries = (await api.get("/v1/agency/feed")).json()["entries"]
        return [(e["kind"], e["case_id"]) for e in entries]


@dataclass
class Stack:
    stack: CollectionsStack
    ledger_url: str
    dunning_url: str

    async def tenant(self, policy: dict[str, Any], agencies: tuple[str, ...] = ()) -> Tenant:
        """A new tenant with keys for every role (and each of `agencies`, named by its id), `policy`
        in force from 2026-01-01 as version 1, and its first business day 2026-01-05."""
        tenant_id = f"t{uuid.uuid4().hex[:10]}"
        keys = await tenant_keys(self.stack.stack, tenant_id, {agency: agency for agency in agencies})
        tenant = Tenant(
            dataclasses.replace(self.stack, tenant=tenant_id, keys=keys), self.ledger_url, self.dunning_url
        )
        await tenant.publish_policy(1, D(2026, 1, 1), policy)
        await tenant.stack.start_day(TODAY)
        return tenant


@pytest.fixture(scope="module")
async def stack(
    kafka: KafkaBroker, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    settings = settings_for(await fresh_database(postgres), kafka)
    letters = tmp_path_factory.mktemp("letters")
    async with (
        collections_stack(settings, f"t{uuid.uuid4().hex[:10]}", letters) as running,
        serving(running.stack.app("ledger")) as ledger,
        serving(running.stack.app("dunning")) as dunning,
    ):
        yield Stack(running, ledger, dunning)


def default_document(**changes: Any) -> dict[str, Any]:
    """The default policy as JSON, top-level fields replaced."""
    return {**default_policy().model_dump(mode="json"), **changes}


def steps(**days: int) -> list[dict[str, Any]]:
    """The default policy's steps of these names, each that many days past due."""
    return [
        {**step.model_dump(mode="json"), "days": days[step.name]}
        for step in default_policy().steps
        if step.name in days
    ]


def debtor(tenant: Tenant, debtor_id: str) -> dict[str, Any]:
    profile = {"name": f"Debtor {debtor_id}", "email": f"{debtor_id.lower()}@{tenant.id}.example"}
    return envelope("ar.debtor.registered.v1", tenant.id, debtor_id, f"reg-{debtor_id}", profile)


@pytest.fixture(scope="module")
async def collectors(stack: Stack) -> Tenant:
    """A tenant under the default policy, on business day 2026-01-05; each test has its own debtor,
    owing 100.00 EUR due on 2026-02-04."""
    tenant = await stack.tenant(default_document(), agencies=("agency-a",))
    await tenant.post(
        [
            invoice(tenant.id, d, f"I-{d}", "2026-01-05", "2026-02-04", 10_000)
            for d in ("N1", "L1", "P1", "K1")
        ]
    )
    await tenant.stack.settled()
    return tenant


# --- unknown cases ----------------------------------------------------------------------------------


def case_requests(invoice_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every request a collector makes about one case: method, path under the case, body."""
    return [
        ("POST", "promises", {"amount": money(100), "promised_date": "2026-02-01"}),
        ("POST", "disputes", {"invoice_id": invoice_id}),
        ("POST", "disputes/DS-1/resolve", {"invoice_id": invoice_id}),
        ("POST", "plans", {"instalments": [{"due_date": "2026-02-01", "amount": money(100)}]}),
        ("POST", "holds", {"reason": "insolvency filed"}),
        ("DELETE", "holds/H-1", None),
        ("POST", "pause", {"text": "on holiday"}),
        ("POST", "resume", None),
        ("POST", "notes", {"text": "called, no answer"}),
    ]


async def test_every_request_about_a_case_that_does_not_exist_is_a_404(collectors: Tenant) -> None:
    before = await collectors.cases()
    async with collectors.dunning() as api:
        # Neither a debtor without cases nor another currency of a debtor that has one.
        for case_id in ("NOBODY:EUR", "N1:USD"):
            for method, path, body in case_requests("I-N1"):
                for key in ({}, {"Idempotency-Key": f"k-{path.replace('/', '-')}"}):
                    response = await api.request(
                        method, f"/v1/cases/{case_id}/{path}", json=body, headers=key
                    )
                    assert response.status_code == 404, (case_id, path, response.text)
                    assert response.json()["detail"] == f"no case {case_id}"
            assert (await api.get(f"/v1/cases/{case_id}")).status_code == 404
    async with collectors.dunning("agency-a") as agency:
        response = await agency.post("/v1/agency/cases/NOBODY:EUR/outcomes", json={"kind": "contact_made"})
        assert response.status_code == 404, response.text
    await collectors.stack.settled()
    assert await collectors.cases() == before


async def test_a_record_in_the_log_about_a_case_that_does_not_exist_opens_none(collectors: Tenant) -> None:
    """Records for a case that does not exist (written before the API refused them, or by another
    producer) are about nothing: the consumer opens no case for them and goes on."""
    before = await collectors.cases()
    recorded = c.Recorded(recorded_by="collector:alice", business_date=TODAY)
    records: list[tuple[str, str, str, Any]] = [
        (
            "NOBODY",
            "ar.case.noted.v1",
            "n-1",
            c.CaseNote(note_id="n-1", currency="EUR", text="hi", recorded=recorded),
        ),
        (
            "L1",
            "ar.case.noted.v1",
            "n-2",
            c.CaseNote(note_id="n-2", currency="USD", text="hi", recorded=recorded),
        ),
        (
            "NOBODY",
            "ar.hold.placed.v1",
            "h-1",
            c.HoldChanged(hold_id="h-1", kind="manual", currency="EUR", reason="filed", recorded=recorded),
        ),
        (
            "L1",
            "ar.promise.made.v1",
            "p-1",
            c.PromiseToPay(
                promise_id="p-1",
                amount=Money(amount_minor=100, currency="USD"),
                promised_date=D(2026, 2, 1),
                recorded=recorded,
            ),
        ),
    ]
    messages = []
    for debtor_id, event_type, event_id, data in records:
        event = make_event(
            event_type,
            data,
            event_id=f"{collectors.id}-{event_id}",
            tenant_id=collectors.id,
            debtor_id=debtor_id,
            source="arrears/test",
            time=dt.datetime.now(dt.UTC),
        )
        messages.append(Message(CONTACTS.name, event.key.encode(), encode_event(event)))
    await collectors.stack.resources.event_log.publish(messages)
    # And after them, a note on the case that exists is applied.
    async with collectors.dunning() as api:
        assert (await api.post("/v1/cases/L1:EUR/notes", json={"text": "still here"})).status_code == 202
    await collectors.stack.settled()

    async with collectors.dunning() as api:
        for case_id in ("NOBODY:EUR", "L1:USD"):
            response = await api.get(f"/v1/cases/{case_id}")
            assert response.status_code == 404, (case_id, response.text)
    assert await collectors.cases() == before
    timeline = (await collectors.case("L1:EUR"))["timeline"]
    assert [e.get("detail") for e in timeline if e["kind"] == "note"] == ["still here"]


# --- pauses and idempotency keys ---------------------------------------------------------------------


async def test_a_case_is_paused_resumed_and_paused_again(collectors: Tenant) -> None:
    pause, resume = "/v1/cases/P1:EUR/pause", "/v1/cases/P1:EUR/resume"
    async with collectors.dunning() as api:
        first = await api.post(pause, json={"text": "on holiday"}, headers={"Idempotency-Key": "pause-1"})
        assert first.status_code == 202, first.text
        await collectors.stack.settled()
        assert (await collectors.case("P1:EUR"))["status"] == "held"

        resumed = await api.post(resume, headers={"Idempotency-Key": "resume-1"})
        assert resumed.status_code == 202, resumed.text
        await collectors.stack.settled()
        assert (await collectors.case("P1:EUR"))["status"] == "open"

        again = await api.post(pause, json={"text": "on holiday"}, headers={"Idempotency-Key": "pause-2"})
        assert again.status_code == 202, again.text
        assert again.json()["id"] != first.json()["id"]
        await collectors.stack.settled()
        assert (await collectors.case("P1:EUR"))["status"] == "held"

        # Without keys every request is one of its own too.
        assert (await api.post(resume)).status_code == 202
        await collectors.stack.settled()
        assert (await collectors.case("P1:EUR"))["status"] == "open"
        assert (await api.post(pause, json={"text": "on holiday"})).status_code == 202
        await collectors.stack.settled()
    case = await collectors.case("P1:EUR")
    assert case["status"] == "held"
    assert [e["kind"] for e in case["timeline"] if e["kind"] in ("held", "resumed")] == [
        "held",
        "resumed",
        "held",
        "resumed",
        "held",
    ]


async def test_a_repeat_under_a_key_gets_the_first_answer_and_another_request_a_409(
    collectors: Tenant,
) -> None:
    pause, resume, note = (f"/v1/cases/K1:EUR/{p}" for p in ("pause", "resume", "notes"))
    async with collectors.dunning() as api:
        paused = await api.post(pause, json={"text": "on holiday"}, headers={"Idempotency-Key": "p-1"})
        noted = await api.post(note, json={"text": "called"}, headers={"Idempotency-Key": "n-1"})
        assert (paused.status_code, noted.status_code) == (202, 202), (paused.text, noted.text)
        await collectors.stack.settled()
        resumed = await api.post(resume, headers={"Idempotency-Key": "r-1"})
        assert resumed.status_code == 202, resumed.text
        await collectors.stack.settled()

        # The same requests again, on the next business day: the first answers, and nothing recorded.
        await collectors.stack.start_day(TODAY + dt.timedelta(days=1))
        for path, body, key, answer in (
            (pause, {"text": "on holiday"}, "p-1", paused),
            (note, {"text": "called"}, "n-1", noted),
            (resume, None, "r-1", resumed),
        ):
            repeated = await api.post(path, json=body, headers={"Idempotency-Key": key})
            assert (repeated.status_code, repeated.json()) == (answer.status_code, answer.json()), path
        await collectors.stack.settled()
        case = await collectors.case("K1:EUR")
        assert case["status"] == "open", "the repeated pause did not pause the case again"
        assert [e["kind"] for e in case["timeline"]].count("note") == 1

        # Another request under a key is refused, naming the key: another body, or another case.
        for path, body, key in (
            (pause, {"text": "not on holiday after all"}, "p-1"),
            (note, {"text": "called twice"}, "n-1"),
            ("/v1/cases/P1:EUR/notes", {"text": "called"}, "n-1"),
        ):
            conflict = await api.post(path, json=body, headers={"Idempotency-Key": key})
            assert conflict.status_code == 409, (path, conflict.text)
            assert conflict.json()["detail"] == f"Idempotency-Key {key} was used for another request"


# --- policy versions -----------------------------------------------------------------------------------


async def test_a_new_policy_version_plans_open_cases_again_on_its_first_business_day(stack: Stack) -> None:
    # Version 1: a reminder the day after the due date, legal action 40 days after it.
    ladder = {"min_days_between_steps": 1, "contact_caps": []}
    tenant = await stack.tenant(default_document(steps=steps(friendly_reminder=1, legal_action=40), **ladder))
    await tenant.post(
        [debtor(tenant, "V1"), invoice(tenant.id, "V1", "I-V1", "2026-01-05", "2026-01-10", 500_000)]
    )
    await tenant.stack.start_day(D(2026, 1, 11))
    case = await tenant.case("V1:EUR")
    assert (case["step"], case["next_action_date"]) == ("friendly_reminder", "2026-02-19")

    # Version 2 takes legal action 30 days after the due date, from 2026-02-05 on.
    version_2 = default_document(steps=steps(friendly_reminder=1, legal_action=30), **ladder)
    await tenant.publish_policy(2, D(2026, 2, 5), version_2)
    await tenant.stack.start_day(D(2026, 2, 5))
    assert (await tenant.case("V1:EUR"))["next_action_date"] == "2026-02-09"

    await tenant.stack.start_day(D(2026, 2, 9))
    case = await tenant.case("V1:EUR")
    legal = [e for e in case["timeline"] if e["kind"] == "command.start_legal_action"]
    assert [(e["business_date"], e["policy_version"]) for e in legal] == [("2026-02-09", 2)]
    assert case["step"] == "legal_action"


# --- agencies ---------------------------------------------------------------------------------------


async def test_a_placement_that_was_not_delivered_is_a_recall_in_the_agencys_feed(stack: Stack) -> None:
    # Agency C's endpoint refuses placements (a 404: a permanent failure); agency B's takes them.
    urls = stack.stack.resources.settings.webhook_urls
    urls["agency:agency-c"] = f"{urls['agency']}/refused"
    agencies = {
        "agencies": [
            {"agency_id": "agency-c", "name": "Agency C"},
            {"agency_id": "agency-b", "name": "Agency B"},
        ],
        "fallback": ["agency-c", "agency-b"],
        "min_placements": 5,
        "recall_after_days": 90,
        "replace_on_recall": True,
    }
    policy = default_document(steps=steps(agency_placement=5), agency=agencies)
    tenant = await stack.tenant(policy, agencies=("agency-c", "agency-b"))
    await tenant.post(
        [debtor(tenant, "A1"), invoice(tenant.id, "A1", "I-A1", "2026-01-05", "2026-01-10", 500_000)]
    )
    await tenant.stack.start_day(D(2026, 1, 15))

    assert await tenant.feed("agency-c") == [("placed", "A1:EUR"), ("recalled", "A1:EUR")]
    async with tenant.dunning("agency-c") as agency_c:
        assert (await agency_c.get("/v1/agency/cases/A1:EUR")).status_code == 404
    assert await tenant.feed("agency-b") == [("placed", "A1:EUR")]
    async with tenant.dunning("agency-b") as agency_b:
        placed = await agency_b.get("/v1/agency/cases/A1:EUR")
        assert placed.status_code == 200 and placed.json()["agency_id"] == "agency-b", placed.text
    kinds = [e["kind"] for e in (await tenant.case("A1:EUR"))["timeline"]]
    assert kinds.count("placed") == 2 and kinds.count("recalled") == 1
