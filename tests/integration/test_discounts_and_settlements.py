"""Early-payment discounts and agreed settlements through the HTTP API on the real broker and
database: the ledger ends with nothing open, the discount and the forgiven rest as their own journal
entries, and nobody is chased for what was agreed away."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import CollectionsStack, collections_stack
from tests.integration.conftest import settings_for
from tests.integration.events import envelope, invoice, money, payment

pytestmark = pytest.mark.integration
D = dt.date


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> AsyncIterator[CollectionsStack]:
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as running:
        yield running


def debtor(tenant: str, debtor_id: str) -> dict[str, object]:
    profile = {"name": f"Debtor {debtor_id}", "email": f"{debtor_id.lower()}@{tenant}.example"}
    return envelope("ar.debtor.registered.v1", tenant, debtor_id, f"reg-{debtor_id}", profile)


async def post(stack: CollectionsStack, events: list[dict[str, object]]) -> None:
    async with stack.client("ledger", "erp") as api:
        response = await api.post("/v1/events", json=events)
        assert response.status_code == 202, response.text


async def statement(stack: CollectionsStack, debtor_id: str) -> dict[str, Any]:
    async with stack.client("ledger", "erp") as api:
        response = await api.get(f"/v1/debtors/{debtor_id}/statement")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def test_a_discount_taken_and_a_settlement_paid_close_the_books(stack: CollectionsStack) -> None:
    t = stack.tenant
    await stack.publish_policy(D(2026, 1, 1))  # the default policy: 3 % within 7 days of issue
    await stack.start_day(D(2026, 1, 5))
    await post(
        stack,
        [
            debtor(t, "DA"),
            debtor(t, "DS"),
            invoice(t, "DA", "A-1", "2026-01-05", "2026-01-12", 100_000),
            invoice(t, "DS", "S-1", "2025-11-20", "2025-12-20", 200_000),
            invoice(t, "DS", "S-2", "2025-11-25", "2025-12-25", 50_000),
        ],
    )
    await stack.run_days(D(2026, 1, 6), D(2026, 1, 7))
    sent_to_ds = len(stack.received.to(f"ds@{t}.example"))
    assert sent_to_ds >= 1, "the overdue debtor was chased before the settlement"

    async with stack.client("dunning", "collector") as api:
        too_much = await api.post(
            "/v1/cases/DS:EUR/settlements",
            json={"amount": money(250_000), "pay_by": "2026-01-15"},
        )
        assert too_much.status_code == 422
        assert too_much.json()["detail"][0]["field"] == "amount"
        unknown = await api.post(
            "/v1/cases/DS:EUR/settlements",
            json={"amount": money(100_000), "pay_by": "2026-01-15", "invoice_ids": ["S-9"]},
        )
        assert unknown.status_code == 422
        assert unknown.json()["detail"][0]["field"] == "invoice_ids[0]"
        agreed = await api.post(
            "/v1/cases/DS:EUR/settlements",
            json={"amount": money(150_000), "pay_by": "2026-01-15"},
            headers={"Idempotency-Key": "settle-ds"},
        )
        assert agreed.status_code == 202, agreed.text

    # DA pays 97 % on the fourth day after issue; DS pays the agreed amount.
    await post(
        stack,
        [payment(t, "DA", "PA-1", "2026-01-09", 97_000), payment(t, "DS", "PS-1", "2026-01-10", 150_000)],
    )
    await stack.run_days(D(2026, 1, 8), D(2026, 1, 20))

    da = await statement(stack, "DA")
    assert da["open_items"] == []
    [paid] = da["payment_history"]
    assert (paid["invoice_id"], paid["paid"], paid["discounted"]) == ("A-1", 97_000, 3_000)
    assert stack.received.to(f"da@{t}.example") == [], "nobody is chased for the discount"

    ds = await statement(stack, "DS")
    assert ds["open_items"] == []
    assert [c["balance"] for c in ds["currencies"]] == [0]
    assert len(stack.received.to(f"ds@{t}.example")) == sent_to_ds, "nothing more after the settlement"

    async with stack.client("dunning", "collector") as api:
        for case_id in ("DA:EUR", "DS:EUR"):
            case = (await api.get(f"/v1/cases/{case_id}")).json()
            assert case["status"] == "closed", case
        kinds = [e["kind"] for e in (await api.get("/v1/cases/DA:EUR")).json()["timeline"]]
        assert "discount_granted" in kinds
        timeline = (await api.get("/v1/cases/DS:EUR")).json()["timeline"]
        forgiven = next(e for e in timeline if e["kind"] == "rest_forgiven")
        assert "1000.00 EUR" in forgiven["detail"] and "S-1" in forgiven["detail"], forgiven
