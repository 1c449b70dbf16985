"""The collections loop on real Kafka and PostgreSQL: invoices fall due, dunning escalates by the
default policy, the notifier sends, payments stop it, agencies see only their own cases."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice, payment

D = dt.date


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


def debtor(tenant: str, debtor_id: str, email: str | None = None, language: str = "en") -> dict[str, object]:
    profile: dict[str, object] = {"name": f"Debtor {debtor_id}", "language": language}
    if email:
        profile["email"] = email
    else:
        profile["postal_address"] = [f"Debtor {debtor_id}", "1 Main Street"]
    return envelope("ar.debtor.registered.v1", tenant, debtor_id, f"reg-{debtor_id}", profile)


async def post(stack: CollectionsStack, events: list[dict[str, object]]) -> None:
    async with stack.client("ledger", "erp") as api:
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(events)


async def test_reminders_follow_the_policy_and_a_payment_stops_the_next_one(stack: CollectionsStack) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 5))
    await post(
        stack,
        [
            debtor(t, "D1", f"d1@{t}.example"),
            debtor(t, "D2", f"d2@{t}.example", language="ru"),
            invoice(t, "D1", "A-1", "2026-01-05", "2026-02-04", 50_000),
            invoice(t, "D1", "A-2", "2026-01-06", "2026-02-04", 20_000),
            invoice(t, "D2", "B-1", "2026-01-05", "2026-02-04", 80_000),
        ],
    )
    await stack.run_days(D(2026, 1, 6), D(2026, 2, 1))
    courtesy_d1 = stack.received.to(f"d1@{t}.example")
    assert len(courtesy_d1) == 1, "one courtesy reminder for both invoices falling due"
    assert "A-1" in courtesy_d1[0].get_content() and "A-2" in courtesy_d1[0].get_content()
    assert len(stack.received.to(f"d2@{t}.example")) == 1

    # D2 pays in full before its friendly reminder (due + 1 day, + 3 for a small amount); D1 does not.
    await post(stack, [payment(t, "D2", "P-1", "2026-02-03", 80_000)])
    await stack.run_days(D(2026, 2, 2), D(2026, 2, 24))

    to_d1 = stack.received.to(f"d1@{t}.example")
    assert len(to_d1) == 3, [m["Subject"] for m in to_d1]
    assert "overdue" in to_d1[1]["Subject"].lower(), "the friendly reminder after the due date"
    assert "formal notice" in to_d1[2]["Subject"].lower()
    assert len(stack.received.to(f"d2@{t}.example")) == 1, "paid: nothing more is sent"

    async with stack.client("dunning", "collector") as api:
        closed = (await api.get("/v1/cases/D2:EUR")).json()
        assert closed["status"] == "closed"
        case = (await api.get("/v1/cases/D1:EUR")).json()
        assert case["status"] == "open" and case["overdue_minor"] == 70_000
        kinds = [e["kind"] for e in case["timeline"]]
        assert kinds.count("command.send_reminder") == 2 and "command.formal_notice" in kinds
        formal = next(e for e in case["timeline"] if e["kind"] == "command.formal_notice")
        assert formal["policy_version"] == 1 and formal["inputs"], "provenance of the decision"
        listing = (await api.get("/v1/cases", params={"status": "open"})).json()["cases"]
        assert [c["case_id"] for c in listing] == ["D1:EUR"]
    async with stack.client("notifier", "collector") as api:
        tasks = (await api.get("/v1/tasks")).json()["tasks"]
        assert [(task["case_id"], task["kind"]) for task in tasks] == [("D1:EUR", "call")]
        assert "Debtor D1" in tasks[0]["script"] and "700.00" in tasks[0]["script"]
        assert (await api.post(f"/v1/tasks/{tasks[0]['command_id']}/done")).status_code == 200
        assert (await api.get("/v1/tasks")).json()["tasks"] == []


async def test_a_promise_holds_the_case_and_a_broken_one_resumes_it(stack: CollectionsStack) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 5))
    await post(
        stack,
        [debtor(t, "D3", f"d3@{t}.example"), invoice(t, "D3", "C-1", "2026-01-05", "2026-01-20", 40_000)],
    )
    await stack.run_days(D(2026, 1, 6), D(2026, 1, 25))
    before = len(stack.received.to(f"d3@{t}.example"))
    async with stack.client("dunning", "collector") as api:
        promised = await api.post(
            "/v1/cases/D3:EUR/promises",
            json={"amount": {"amount_minor": 40_000, "currency": "EUR"}, "promised_date": "2026-02-10"},
            headers={"Idempotency-Key": "promise-d3"},
        )
        assert promised.status_code == 202, promised.text
        again = await api.post(
            "/v1/cases/D3:EUR/promises",
            json={"amount": {"amount_minor": 40_000, "currency": "EUR"}, "promised_date": "2026-02-10"},
            headers={"Idempotency-Key": "promise-d3"},
        )
        assert (again.status_code, again.json()) == (promised.status_code, promised.json())
    await stack.run_days(D(2026, 1, 26), D(2026, 2, 10))
    assert len(stack.received.to(f"d3@{t}.example")) == before, "nothing is sent while the promise holds"
    async with stack.client("dunning", "collector") as api:
        assert (await api.get("/v1/cases/D3:EUR")).json()["status"] == "held"
    await stack.run_days(D(2026, 2, 11), D(2026, 2, 20))
    assert len(stack.received.to(f"d3@{t}.example")) > before, "the broken promise resumes the ladder"
    async with stack.client("dunning", "collector") as api:
        kinds = [e["kind"] for e in (await api.get("/v1/cases/D3:EUR")).json()["timeline"]]
        assert "promise_broken" in kinds


async def test_agencies_see_only_their_own_cases(stack: CollectionsStack) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))
    await stack.start_day(D(2026, 1, 2))
    await post(
        stack,
        [
            debtor(t, "D4"),
            invoice(t, "D4", "E-1", "2026-01-02", "2026-01-10", 500_000),
        ],
    )
    await stack.run_days(D(2026, 1, 3), D(2026, 3, 20))
    async with stack.client("dunning", "agency") as agency_a, stack.client("dunning", "agency-b") as agency_b:
        feed = (await agency_a.get("/v1/agency/feed")).json()
        placed = [e for e in feed["entries"] if e["kind"] == "placed"]
        assert [e["case_id"] for e in placed] == ["D4:EUR"]
        assert placed[0]["overdue_minor"] == 500_000
        assert "timeline" not in placed[0] and "notes" not in placed[0]
        resumed = (await agency_a.get("/v1/agency/feed", params={"after": feed["next"]})).json()
        assert resumed["entries"] == [] and resumed["next"] == feed["next"]

        assert (await agency_b.get("/v1/agency/feed")).json()["entries"] == []
        assert (await agency_b.get("/v1/agency/cases/D4:EUR")).status_code == 404
        outcome = {"kind": "recovered", "amount_recovered": {"amount_minor": 1_000, "currency": "EUR"}}
        assert (await agency_b.post("/v1/agency/cases/D4:EUR/outcomes", json=outcome)).status_code == 404
        assert (await agency_b.get("/v1/agency/cases/NOPE:EUR")).status_code == 404

        assert (await agency_a.get("/v1/agency/cases/D4:EUR")).json()["agency_id"] == "agency-a"
        assert (await agency_a.post("/v1/agency/cases/D4:EUR/outcomes", json=outcome)).status_code == 202
        assert (await agency_a.get("/v1/cases")).status_code == 403, (
            "an agency cannot list the tenant's cases"
        )
        # What the agency works the case with: who the debtor is and how to reach them (consented:
        # D4 gave no e-mail, a letter needs no consent), the placed items, the letters sent so far.
        assert placed[0]["debtor"]["name"] == "Debtor D4"
        view = (await agency_a.get("/v1/agency/cases/D4:EUR")).json()
        assert view["debtor"]["postal_address"] == ["Debtor D4", "1 Main Street"]
        assert view["debtor"]["email"] is None
        assert [(i["invoice_id"], i["outstanding_minor"]) for i in view["statement"]["items"]] == [
            ("E-1", 500_000)
        ]
        assert view["statement"]["items"][0]["days_past_due"] == (D(2026, 3, 20) - D(2026, 1, 10)).days
        sent = {d["channel"] for d in view["documents"]}
        assert sent == {"letter"} and len(view["documents"]) >= 3, view["documents"]
    # The debtor pays 1,500.00 to us while the agency reports 10.00 recovered: both sides see it.
    await post(stack, [payment(t, "D4", "P-D4", "2026-03-21", 150_000, allocate_to="E-1")])
    await stack.run_days(D(2026, 3, 21), D(2026, 3, 22))
    async with stack.client("dunning", "agency") as agency_a:
        recoveries = (await agency_a.get("/v1/agency/cases/D4:EUR")).json()["recoveries"]
    assert recoveries == {
        "recovered_minor": 150_000,
        "reported_minor": 1_000,
        "difference_minor": 1_000 - 150_000,
        "agreed": False,
    }
    async with stack.client("dunning", "operations") as ops:
        report = (await ops.get("/v1/kpis/agencies", params={"as_of": "2026-03-22"})).json()["agencies"]
    assert [(a["agency_id"], a["recovered_minor"], a["reported_minor"]) for a in report] == [
        ("agency-a", 150_000, 1_000)
    ]
    async with stack.client("dunning", "collector") as api:
        timeline = (await api.get("/v1/cases/D4:EUR")).json()["timeline"]
    claim = next(e for e in timeline if e["kind"] == "command.claim_letter")
    assert claim["penalty_minor"] > 0 and claim["deadline"], (
        "the claim letter carries the penalty and deadline"
    )
    letters = sorted((stack.letters / t).glob("*.pdf"))
    assert letters and all(p.read_bytes().startswith(b"%PDF-") for p in letters), "no e-mail: letters"
    # Only this tenant's: a fresh database replays earlier tests' tenants from the topics too.
    ours = [w for w in stack.received.webhooks if w[1]["tenantid"] == t]
    placements = [w for w in ours if w[0] == "agency"]
    assert [w[1]["data"]["agency_id"] for w in placements] == ["agency-a"]
    assert [w[1]["data"]["action"] for w in ours if w[0] == "erp"] == ["request_credit_hold"]
