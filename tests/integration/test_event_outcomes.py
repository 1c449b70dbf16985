"""Every accepted event has an outcome the ERP can read: applied, parked until what it refers to
arrives, or rejected with the reason, also in a rejection feed read with a cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, settings_for
from tests.integration.events import envelope, invoice, payment, reversal

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    async with ledger_stack(settings_for(await new_database(), kafka), tenant) as running:
        yield running


async def status(api: httpx.AsyncClient, event_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/events/{event_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_reversal_is_parked_until_its_payment_arrives_then_applied(stack: LedgerStack) -> None:
    t = stack.tenant
    bounced = reversal(t, "D1", "P1", "2026-02-20")
    async with stack.client() as api:
        await api.post(
            "/v1/events", json=[invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000), bounced]
        )
        await stack.caught_up()
        parked = await status(api, bounced["id"])
        await api.post("/v1/events", json=[payment(t, "D1", "P1", "2026-02-10", 10_000, allocate_to="A")])
        await stack.caught_up()
        released = await status(api, bounced["id"])
        unknown = await api.get("/v1/events/never-posted")
    assert parked["status"] == "parked" and "waiting" in parked["reason"]
    assert released["status"] == "applied" and released["reason"] is None
    assert unknown.status_code == 404


async def test_an_event_rejected_by_the_ledger_is_in_the_feed_with_its_reason(stack: LedgerStack) -> None:
    t = stack.tenant
    first = invoice(t, "D2", "A", "2026-01-01", "2026-01-31", 10_000)
    # Accepted (the write-off comes in the same batch as the cancellation, which the API cannot
    # judge), then rejected by the ledger: the invoice is cancelled by the time it is applied.
    cancel = envelope(
        "ar.invoice.cancelled.v1", t, "D2", "cancel-A", {"invoice_id": "A", "cancellation_date": "2026-01-05"}
    )
    write_off = envelope(
        "ar.writeoff.posted.v1",
        t,
        "D2",
        "wo-A",
        {"writeoff_id": "wo-A", "invoice_id": "A", "posting_date": "2026-02-01"},
    )
    async with stack.client() as api:
        await api.post("/v1/events", json=[first])
        await stack.caught_up()
        accepted = await api.post("/v1/events", json=[cancel, write_off])
        assert accepted.status_code == 202, accepted.text
        await stack.caught_up()
        outcome = await status(api, "wo-A")
        applied = await status(api, first["id"])
        page = (await api.get("/v1/rejections", params={"limit": 1})).json()
        rest = (await api.get("/v1/rejections", params={"after": page["next"]})).json()
    assert applied["status"] == "applied"
    assert outcome["status"] == "rejected" and "cancelled" in outcome["reason"]
    assert [r["id"] for r in page["rejections"]] == ["wo-A"]
    assert page["rejections"][0]["type"] == "ar.writeoff.posted.v1"
    assert rest == {"rejections": [], "next": page["next"]}
