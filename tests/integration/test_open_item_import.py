"""The CSV open-item load through the ledger's HTTP API (real Kafka, real PostgreSQL): a file is
loaded whole or not at all, invoices are each debtor's own, and every refusal names its lines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.ledger.open_items_csv import invoice_event_id
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, outbox_rows, settings_for

pytestmark = pytest.mark.integration

HEADER = "debtor_id,invoice_id,issue_date,due_date,amount,currency,amount_paid,debtor_name\n"
AS_OF = {"as_of": "2026-01-10"}


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    # A small request limit: the load must not be cut into requests that commit one by one.
    settings = settings_for(await new_database(), kafka, max_events_per_request=2)
    async with ledger_stack(settings, tenant) as running:
        yield running


async def _load(api: httpx.AsyncClient, text: str) -> httpx.Response:
    return await api.post("/v1/imports/open-items", params=AS_OF, content=text.encode())


async def _open_items(api: httpx.AsyncClient, debtor: str) -> dict[str, int] | None:
    response = await api.get(f"/v1/debtors/{debtor}/statement", params=AS_OF)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return {i["invoice_id"]: i["outstanding"] for i in response.json()["open_items"]}


async def _aging(api: httpx.AsyncClient) -> dict[str, Any]:
    currencies: dict[str, Any] = (await api.get("/v1/aging", params=AS_OF)).json()["currencies"]
    return currencies


async def test_two_debtors_with_the_same_invoice_number_each_get_their_own(stack: LedgerStack) -> None:
    text = (
        HEADER
        + "D1,INV-1,2025-11-01,2025-12-01,100.00,EUR,40.00,Acme GmbH\n"
        + "D2,INV-1,2025-11-03,2025-12-03,250.00,EUR,,Beta AG\n"
        + "D1,INV-2,2025-12-01,2025-12-31,80.00,EUR,,Acme GmbH\n"
    )
    async with stack.client() as api:
        first = await _load(api, text)
        assert first.status_code == 202, first.text
        assert first.json() == {
            "lines": 3,
            "loaded": {"debtors_registered": 2, "invoices": 3, "payments": 1},
            "already_present": {"debtors_registered": 0, "invoices": 0, "payments": 0},
            "events": 6,
            "accepted": 6,
            "duplicates": 0,
        }
        again = await _load(api, text)
        assert again.status_code == 202, again.text
        assert again.json()["loaded"] == {"debtors_registered": 0, "invoices": 0, "payments": 0}
        assert again.json()["already_present"] == {"debtors_registered": 2, "invoices": 3, "payments": 1}
        await stack.caught_up()
        assert await _open_items(api, "D1") == {"INV-1": 6_000, "INV-2": 8_000}
        assert await _open_items(api, "D2") == {"INV-1": 25_000}
        d1 = (await api.get("/v1/debtors/D1/statement", params=AS_OF)).json()
        assert d1["profile"]["name"] == "Acme GmbH"
        assert (await _aging(api))["EUR"]["total_minor"] == 39_000


async def test_a_file_with_one_bad_line_loads_nothing(stack: LedgerStack) -> None:
    text = (
        HEADER
        + "D1,INV-1,2025-11-01,2025-12-01,100.00,EUR,,\n"
        + "D2,INV-9,2025-11-01,2025-12-01,50.00,EUR,,\n"
        + "D2,INV-10,2025-11-01,2025-13-01,50.00,EUR,,\n"
        + "D3,INV-11,2025-11-01,2025-12-01\n"
    )
    async with stack.client() as api:
        refused = await _load(api, text)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0] == {
            "line": 4,
            "column": "due_date",
            "field": "line 4, column due_date",
            "message": "'2025-13-01' is not a date as YYYY-MM-DD: month must be in 1..12",
        }
        assert [(e["line"], e["column"]) for e in refused.json()["detail"][1:]] == [
            (5, "amount"),
            (5, "currency"),
            (5, "amount_paid"),
            (5, "debtor_name"),
        ]
        latin1 = (
            HEADER
            + "D1,INV-1,2025-11-01,2025-12-01,100.00,EUR,,\nD4,INV-3,2025-11-01,2025-12-01,1,EUR,,Jäger\n"
        )
        not_utf8 = await api.post("/v1/imports/open-items", params=AS_OF, content=latin1.encode("latin-1"))
        assert not_utf8.status_code == 422, not_utf8.text
        assert [(e["line"], e["column"]) for e in not_utf8.json()["detail"]] == [(3, None)]
        assert "UTF-8" in not_utf8.json()["detail"][0]["message"]
        await stack.caught_up()
        assert await outbox_rows(stack.resources) == 0
        assert await _open_items(api, "D1") is None
        assert await _open_items(api, "D2") is None
        assert await _aging(api) == {}
        assert (await api.get(f"/v1/events/{invoice_event_id('D1', 'INV-1')}")).status_code == 404


async def test_a_reload_that_contradicts_an_earlier_load_is_refused_whole(stack: LedgerStack) -> None:
    async with stack.client() as api:
        first = await _load(api, HEADER + "D1,INV-1,2025-11-01,2025-12-01,100.00,EUR,,Acme GmbH\n")
        assert first.status_code == 202, first.text
        conflicting = (
            HEADER
            + "D5,NEW-1,2025-11-01,2025-12-01,70.00,EUR,,\n"  # new: would be loaded alone
            + "D1,INV-2,2025-11-02,2025-12-02,30.00,EUR,,\n"  # new as well
            + "D1,INV-1,2025-11-01,2025-12-01,120.00,EUR,,\n"  # says otherwise than the first load
            + "D6,NEW-2,2025-11-01,2025-12-01,70.00,EUR,,\n"
        )
        refused = await _load(api, conflicting)
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["detail"]
        assert (error["line"], error["column"]) == (4, "invoice_id")
        assert "invoice INV-1 of debtor D1" in error["message"]
        assert "nothing of this file was loaded" in error["message"]
        renamed = await _load(api, HEADER + "D1,INV-1,2025-11-01,2025-12-01,100.00,EUR,,Acme AG\n")
        assert renamed.status_code == 422, renamed.text
        assert [(e["line"], e["column"]) for e in renamed.json()["detail"]] == [(2, "debtor_name")]
        await stack.caught_up()
        assert await _open_items(api, "D1") == {"INV-1": 10_000}
        assert await _open_items(api, "D5") is None
        assert await _open_items(api, "D6") is None
        assert (await _aging(api))["EUR"]["total_minor"] == 10_000
        # Nothing of the refused file was claimed: corrected, it loads.
        corrected = await _load(api, conflicting.replace("120.00", "100.00"))
        assert corrected.status_code == 202, corrected.text
        assert corrected.json()["loaded"]["invoices"] == 3
        assert corrected.json()["already_present"]["invoices"] == 1
        await stack.caught_up()
        assert await _open_items(api, "D1") == {"INV-1": 10_000, "INV-2": 3_000}
        assert await _open_items(api, "D5") == {"NEW-1": 7_000}
