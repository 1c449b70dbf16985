"""Collections KPIs over the dunning API, on a real broker and database: six debtors driven through
January 2026 by the ledger's and dunning's HTTP APIs (payments, promises, disputes, an agency placement
and the agency's report), and the figures checked against what was worked out by hand."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.dunning.policies import default_policy
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice, money, payment

pytestmark = pytest.mark.integration

D = dt.date
DEBTORS = {"KA": 100_000, "KB": 200_000, "KC": 300_000, "KD": 500_000, "KE": 80_000, "KF": 60_000}
"""Each debtor's one invoice, issued 2026-01-05 and due 2026-01-10."""


def policy() -> dict[str, Any]:
    """A reminder a day after the due date, a formal notice after 5 days, placement with agency A
    (a 20 % fee) after 10 days from 4,000.00 EUR; no tiers, no contact caps; disputes overdue after
    10 days."""
    document = default_policy().model_dump(mode="json")
    days = {"friendly_reminder": 1, "formal_notice": 5, "agency_placement": 10}
    steps = [{**s, "days": days[s["name"]]} for s in document["steps"] if s["name"] in days]
    steps[-1]["min_overdue"] = {"EUR": 400_000}
    agency = {**document["agency"], "agencies": [{"agency_id": "agency-a", "fee_rate": "0.2"}]}
    agency["fallback"] = ["agency-a"]
    return {
        **document,
        "steps": steps,
        "tiers": {},
        "contact_caps": [],
        "min_days_between_steps": 1,
        "agency": agency,
        "dispute_limit_days": 10,
    }


class January:
    def __init__(self, stack: CollectionsStack) -> None:
        self.stack = stack

    async def day(self, day: int) -> None:
        await self.stack.start_day(D(2026, 1, day))

    async def ledger(self, events: list[dict[str, Any]]) -> None:
        async with self.stack.client("ledger", "erp") as api:
            response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text
        await self.stack.settled()

    async def pay(self, debtor: str, minor: int, day: int) -> None:
        on = D(2026, 1, day).isoformat()
        await self.ledger([payment(self.stack.tenant, debtor, f"{debtor}-{day}", on, minor, f"I-{debtor}")])

    async def record(self, role: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.stack.client("dunning", role) as api:
            response = await api.post(path, json=body)
        assert response.status_code == 202, response.text
        await self.stack.settled()
        answer: dict[str, Any] = response.json()
        return answer

    async def get(self, path: str, role: str = "operations", **params: Any) -> Any:
        async with self.stack.client("dunning", role) as api:
            response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


async def test_collections_agency_and_dispute_kpis_as_of_dates_in_january(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, f"t{uuid.uuid4().hex[:10]}", tmp_path) as stack:
        month = January(stack)
        tenant = stack.tenant
        async with stack.client("dunning", "operations") as api:
            body = {"effective_from": "2026-01-01", "document": policy()}
            assert (await api.put("/v1/policies/1", json=body)).status_code == 202
        await month.day(5)
        await month.ledger(
            [
                envelope(
                    "ar.debtor.registered.v1",
                    tenant,
                    d,
                    f"reg-{d}",
                    {"name": f"Debtor {d}", "email": f"{d.lower()}@example.com"},
                )
                for d in DEBTORS
            ]
            + [
                invoice(tenant, d, f"I-{d}", "2026-01-05", "2026-01-10", minor)
                for d, minor in DEBTORS.items()
            ]
        )
        await month.day(11)  # every case: the friendly reminder
        await month.day(12)
        await month.record(
            "collector",
            "/v1/cases/KB:EUR/promises",
            {"amount": money(200_000), "promised_date": "2026-01-20"},
        )
        await month.record(
            "collector",
            "/v1/cases/KC:EUR/promises",
            {"amount": money(100_000), "promised_date": "2026-01-24"},
        )
        await month.record(
            "collector", "/v1/cases/KE:EUR/disputes", {"invoice_id": "I-KE", "reason": "wrong price"}
        )
        await month.day(13)
        dispute_f = await month.record(
            "collector", "/v1/cases/KF:EUR/disputes", {"invoice_id": "I-KF", "reason": "not delivered"}
        )
        await month.day(14)
        await month.pay("KA", 100_000, 14)  # closed 3 days after its reminder: cured
        await month.day(15)  # KD: the formal notice
        await month.day(16)
        await month.record(
            "collector", f"/v1/cases/KF:EUR/disputes/{dispute_f['id']}/resolve", {"invoice_id": "I-KF"}
        )
        await month.day(18)
        await month.pay("KB", 200_000, 18)  # the promise kept and the case closed, 7 days after the reminder
        await month.day(20)  # KD placed with agency A: 5,000.00 EUR
        await month.day(25)
        await month.pay("KD", 200_000, 25)
        await month.record(
            "agency",
            "/v1/agency/cases/KD:EUR/outcomes",
            {"kind": "recovered", "amount_recovered": money(250_000)},
        )
        await month.day(28)  # KC's promise of Jan 24 broken (3 grace days over)
        await month.pay("KD", 300_000, 28)  # recovered in full 8 days after placement; placed: not cured

        # --- promises, cures, days to cure --------------------------------------------------------
        kpis = await month.get("/v1/kpis/collections", as_of="2026-01-28", months=2)
        assert (kpis["tenant_id"], kpis["as_of"]) == (tenant, "2026-01-28")
        december, january = kpis["currencies"]["EUR"]["months"]
        assert december == {
            "month": "2025-12",
            "promises_made": 0,
            "promises_due": 0,
            "promises_kept": 0,
            "promise_kept_rate": None,
            "cases_closed": 0,
            "cured": 0,
            "cure_rate": None,
            "days_to_cure_by_step": {},
        }
        assert january == {
            "month": "2026-01",
            "promises_made": 2,  # KB, KC
            "promises_due": 2,  # KB's on the 20th, KC's on the 24th
            "promises_kept": 1,  # KB's
            "promise_kept_rate": 0.5,
            "cases_closed": 3,  # KA, KB, KD
            "cured": 2,  # KA, KB: KD was placed with the agency
            "cure_rate": 2 / 3,
            "days_to_cure_by_step": {"friendly_reminder": (3 + 7) / 2},
        }
        earlier = await month.get("/v1/kpis/collections", as_of="2026-01-15", months=1)
        (on_the_15th,) = earlier["currencies"]["EUR"]["months"]
        assert (on_the_15th["promises_made"], on_the_15th["promises_due"]) == (2, 0)
        assert on_the_15th["promise_kept_rate"] is None
        assert (on_the_15th["cases_closed"], on_the_15th["cured"], on_the_15th["cure_rate"]) == (1, 1, 1.0)
        assert on_the_15th["days_to_cure_by_step"] == {"friendly_reminder": 3.0}

        # --- the funnel: KC, KE and KF are open, by the step each has reached ----------------------
        funnel: dict[str, dict[str, int]] = {}
        for debtor in ("KC", "KE", "KF"):
            step = (await month.get(f"/v1/cases/{debtor}:EUR"))["step"] or "none"
            counted = funnel.setdefault(step, {"cases": 0, "overdue_minor": 0})
            counted["cases"] += 1
            counted["overdue_minor"] += DEBTORS[debtor]
        assert kpis["funnel"] == {"EUR": funnel}
        assert sum(s["overdue_minor"] for s in funnel.values()) == 300_000 + 80_000 + 60_000

        # --- the agency: the ledger's payments while placed against what the agency reported ------
        agencies = await month.get("/v1/kpis/agencies", as_of="2026-01-28")
        assert agencies["agencies"] == [
            {
                "agency_id": "agency-a",
                "segment": "unscored",
                "currency": "EUR",
                "placed_cases": 1,
                "placed_minor": 500_000,
                "recovered_minor": 200_000 + 300_000,
                "reported_minor": 250_000,
                "difference_minor": 250_000 - 500_000,
                "recovery_rate": 1.0,
                "average_days_to_recover": 8.0,  # placed on the 20th, paid in full on the 28th
                "fees_minor": 100_000,  # 20 % of 5,000.00
            }
        ]
        (on_the_26th,) = (await month.get("/v1/kpis/agencies", as_of="2026-01-26"))["agencies"]
        assert (on_the_26th["recovered_minor"], on_the_26th["difference_minor"]) == (200_000, 50_000)
        assert (on_the_26th["recovery_rate"], on_the_26th["average_days_to_recover"]) == (0.4, None)
        assert on_the_26th["fees_minor"] == 40_000
        assert (await month.get("/v1/kpis/agencies", as_of="2026-01-19"))["agencies"] == []

        # --- disputes -----------------------------------------------------------------------------
        disputes = await month.get("/v1/kpis/disputes", as_of="2026-01-28", role="collector")
        assert disputes["currencies"] == {
            "EUR": {
                "opened": 2,
                "open": 1,
                "resolved": 1,
                "open_minor": 80_000,
                "age_days": {"median": 16.0, "max": 16},  # opened on the 12th
                "by_reason": {"wrong price": 1},
                "over_limit": [
                    {
                        "debtor_id": "KE",
                        "case_id": "KE:EUR",
                        "opened_on": "2026-01-12",
                        "age_days": 16,
                        "reason": "wrong price",
                        "amount_minor": 80_000,
                    }
                ],
            }
        }
        both_open = (await month.get("/v1/kpis/disputes", as_of="2026-01-14"))["currencies"]["EUR"]
        assert (both_open["open"], both_open["resolved"], both_open["open_minor"]) == (2, 0, 140_000)
        assert both_open["age_days"] == {"median": (2 + 1) / 2, "max": 2}  # opened on the 12th and 13th
        assert both_open["by_reason"] == {"wrong price": 1, "not delivered": 1}
        assert both_open["over_limit"] == []

        async with stack.client("dunning", "agency") as agency:
            response = await agency.get("/v1/kpis/collections", params={"as_of": "2026-01-28"})
        assert response.status_code == 403, response.text
