"""Nothing the ledger accepts is dropped: events that come before the payment or invoice they name
wait for it, and what the current state already shows to be wrong is refused at the door with a 422
naming the field (real Kafka, real PostgreSQL, real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from contracts.journal import JournalEntry
from contracts.registry import ERP_TYPES, parse_batch
from services.ledger import admission
from services.ledger.domain import DebtorLedger, evolve, initial_state
from tests import unit
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import LedgerStack, ledger_stack, settings_for
from tests.integration.events import envelope, invoice, money, payment, reversal

pytestmark = pytest.mark.integration

AS_OF = {"as_of": "2026-03-31"}


@pytest.fixture
async def stack(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], tenant: str
) -> AsyncIterator[LedgerStack]:
    async with ledger_stack(settings_for(await new_database(), kafka), tenant) as running:
        yield running


def write_off(tenant: str, debtor: str, wid: str, invoice_id: str, day: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "ar.writeoff.posted.v1",
        tenant,
        debtor,
        f"wo-{wid}",
        {"writeoff_id": wid, "invoice_id": invoice_id, "posting_date": day, **data},
    )


def allocation(tenant: str, debtor: str, pid: str, day: str, to: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return envelope(
        "ar.payment.allocated.v1",
        tenant,
        debtor,
        f"alloc-{pid}-{day}",
        {
            "payment_id": pid,
            "allocation_date": day,
            "allocations": [{"invoice_id": i, "amount": m} for i, m in to.items()],
        },
    )


async def post(api: httpx.AsyncClient, *events: dict[str, Any]) -> httpx.Response:
    return await api.post("/v1/events", json=list(events))


async def statement_of(api: httpx.AsyncClient, debtor: str) -> dict[str, Any]:
    response = await api.get(f"/v1/debtors/{debtor}/statement", params=AS_OF)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def open_items(statement: dict[str, Any]) -> dict[str, int]:
    return {i["invoice_id"]: i["outstanding"] for i in statement["open_items"]}


def unapplied(statement: dict[str, Any]) -> dict[str, int]:
    return {c["currency"]: c["unapplied"] for c in statement["currencies"]}


# --- events that arrive before what they name -------------------------------------------------


async def test_a_reversal_posted_before_its_payment_leaves_the_invoice_open(stack: LedgerStack) -> None:
    t = stack.tenant
    async with stack.client() as api:
        assert (await post(api, invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000))).status_code == 202
        early = await post(api, reversal(t, "D1", "P1", "2026-02-20"))
        assert early.status_code == 202 and early.json()["accepted"] == 1
        late = await post(api, payment(t, "D1", "P1", "2026-02-10", 10_000, allocate_to="A"))
        assert late.status_code == 202
        await stack.caught_up()
        statement = await statement_of(api, "D1")
    assert open_items(statement) == {"A": 10_000}, "the bounced payment does not pay A"
    assert statement["payment_history"] == []
    assert unapplied(statement) == {"EUR": 0}


async def test_a_write_off_posted_before_its_invoice_closes_it_when_the_invoice_arrives(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    async with stack.client() as api:
        assert (await post(api, write_off(t, "D1", "W1", "B", "2026-03-01"))).status_code == 202
        assert (await post(api, invoice(t, "D1", "B", "2026-01-01", "2026-01-31", 7_500))).status_code == 202
        await stack.caught_up()
        statement = await statement_of(api, "D1")
        aging = (await api.get("/v1/aging", params=AS_OF)).json()
    assert open_items(statement) == {}
    assert [c["balance"] for c in statement["currencies"]] == [0]
    assert aging["currencies"] == {}


async def test_a_re_allocation_posted_before_its_payment_decides_what_the_payment_pays(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    async with stack.client() as api:
        await post(
            api,
            invoice(t, "D1", "OLD", "2026-01-01", "2026-01-31", 4_000),
            invoice(t, "D1", "NEW", "2026-02-01", "2026-03-03", 4_000),
        )
        early = await post(api, allocation(t, "D1", "P1", "2026-02-15", {"NEW": money(4_000)}))
        assert early.status_code == 202
        assert (await post(api, payment(t, "D1", "P1", "2026-02-10", 4_000))).status_code == 202
        await stack.caught_up()
        statement = await statement_of(api, "D1")
    assert open_items(statement) == {"OLD": 4_000}, "not oldest first: the ERP said NEW"


# --- refused at the door ------------------------------------------------------------------------


async def test_a_yen_payment_allocated_to_a_known_euro_invoice_is_refused_and_pays_no_yen_invoice(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    async with stack.client() as api:
        await post(
            api,
            invoice(t, "D1", "E1", "2026-01-01", "2026-01-31", 10_000),
            invoice(t, "D1", "Y1", "2026-01-01", "2026-01-31", 50_000, "JPY"),
        )
        await stack.caught_up()
        refused = await post(
            api, payment(t, "D1", "PY", "2026-02-01", 50_000, allocate_to="E1", currency="JPY")
        )
        assert refused.status_code == 422
        [problem] = refused.json()["detail"]
        assert problem["event"] == 0 and problem["id"] == "pay-PY"
        assert problem["field"] == "data.allocations.0.invoice_id"
        assert "'E1' is in EUR" in problem["message"] and "JPY" in problem["message"]

        # The same in one batch with the invoice it names: the batch makes E2 known.
        in_batch = await post(
            api,
            invoice(t, "D2", "E2", "2026-01-01", "2026-01-31", 10_000),
            payment(t, "D2", "PY2", "2026-02-01", 10_000, allocate_to="E2", currency="JPY"),
        )
        assert in_batch.status_code == 422
        assert [(p["event"], p["field"]) for p in in_batch.json()["detail"]] == [
            (1, "data.allocations.0.invoice_id")
        ]
        await stack.caught_up()
        statement = await statement_of(api, "D1")
        assert (await api.get("/v1/debtors/D2/statement", params=AS_OF)).status_code == 404, (
            "nothing accepted"
        )
    assert open_items(statement) == {"E1": 10_000, "Y1": 50_000}
    assert unapplied(statement) == {"EUR": 0, "JPY": 0}


async def test_a_re_allocation_to_an_invoice_in_another_currency_is_refused(stack: LedgerStack) -> None:
    t = stack.tenant
    async with stack.client() as api:
        await post(
            api,
            invoice(t, "D1", "E1", "2026-01-01", "2026-01-31", 10_000),
            invoice(t, "D1", "Y1", "2026-01-01", "2026-01-31", 50_000, "JPY"),
            payment(t, "D1", "PY", "2026-02-01", 50_000, currency="JPY"),
        )
        await stack.caught_up()
        refused = await post(
            api, allocation(t, "D1", "PY", "2026-02-05", {"Y1": money(100, "JPY"), "E1": money(100, "JPY")})
        )
        assert refused.status_code == 422
        assert [p["field"] for p in refused.json()["detail"]] == ["data.allocations.1.invoice_id"]


async def test_a_write_off_larger_than_what_is_outstanding_or_in_another_currency_is_refused(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    async with stack.client() as api:
        await post(
            api,
            invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000),
            payment(t, "D1", "P1", "2026-02-01", 6_000, allocate_to="A"),
        )
        await stack.caught_up()
        refused = await post(
            api,
            invoice(t, "D1", "B", "2026-02-01", "2026-03-03", 1_000),
            write_off(t, "D1", "W1", "A", "2026-03-01", amount=money(4_001)),
            write_off(t, "D1", "W2", "A", "2026-03-01", amount=money(100, "USD")),
            write_off(t, "D1", "W3", "NOT-YET", "2026-03-01", amount=money(999_999)),
        )
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert [(p["event"], p["id"], p["field"]) for p in detail] == [
            (1, "wo-W1", "data.amount.amount_minor"),
            (2, "wo-W2", "data.amount.currency"),
        ]
        assert "larger than the 4000 outstanding on invoice 'A'" in detail[0]["message"]

        fits = await post(api, write_off(t, "D1", "W1", "A", "2026-03-01", amount=money(4_000)))
        assert fits.status_code == 202
        await stack.caught_up()
        statement = await statement_of(api, "D1")
    assert open_items(statement) == {}, "B was refused with the batch; A is written off"


async def test_a_write_off_after_a_reversal_in_the_same_batch_is_not_refused(stack: LedgerStack) -> None:
    """The stored state says A is paid; the reversal before the write-off in the batch re-opens it."""
    t = stack.tenant
    async with stack.client() as api:
        await post(
            api,
            invoice(t, "D1", "A", "2026-01-01", "2026-01-31", 10_000),
            payment(t, "D1", "P1", "2026-02-01", 10_000, allocate_to="A"),
        )
        await stack.caught_up()
        accepted = await post(
            api,
            reversal(t, "D1", "P1", "2026-02-20"),
            write_off(t, "D1", "W1", "A", "2026-03-01", amount=money(10_000)),
        )
        assert accepted.status_code == 202, accepted.text
        await stack.caught_up()
        statement = await statement_of(api, "D1")
    assert open_items(statement) == {}
    assert statement["payment_history"] == [], "written off, not paid"


async def test_cash_earmarked_for_an_invoice_that_comes_in_another_currency_stays_unapplied(
    stack: LedgerStack,
) -> None:
    t = stack.tenant
    async with stack.client() as api:
        await post(api, invoice(t, "D1", "Y1", "2026-01-01", "2026-01-31", 50_000, "JPY"))
        earmarked = await post(
            api, payment(t, "D1", "PY", "2026-02-01", 30_000, allocate_to="E-LATER", currency="JPY")
        )
        assert earmarked.status_code == 202, "the invoice it names is not known yet: it waits"
        assert (
            await post(api, invoice(t, "D1", "E-LATER", "2026-02-01", "2026-03-03", 30_000))
        ).status_code == 202
        await stack.caught_up()
        statement = await statement_of(api, "D1")
    assert open_items(statement) == {"Y1": 50_000, "E-LATER": 30_000}, "paid to neither"
    assert unapplied(statement) == {"EUR": 0, "JPY": 30_000}


async def test_a_batch_of_invoices_is_admitted_without_reading_any_debtor_state() -> None:
    def no_sessions() -> Any:
        raise AssertionError("a batch of invoices needs no stored state")

    events = parse_batch(
        orjson.dumps(
            [invoice("acme", f"D{n}", f"I{n}", "2026-01-01", "2026-01-31", 100) for n in range(10_000)]
        ),
        ERP_TYPES,
    )
    await admission.check(no_sessions, "acme", events)  # type: ignore[arg-type]


def test_the_batch_write_offs_of_an_invoice_add_up_and_repeats_and_cancelled_invoices_are_judged() -> None:
    state = given(
        unit.invoice("E1", 100),
        unit.invoice("C1", 100),
        unit.cancelled("C1"),
        unit.payment("P1", 50, to={"E1": 50}),
        unit.written_off("W1", "E1", 10),
    )
    batch = [
        write_off("acme", "D1", "W1", "E1", "2024-03-01", amount=money(999)),  # already applied: a no-op
        write_off("acme", "D1", "W6", "E1", "2024-03-01", amount=money(30)),
        write_off("acme", "D1", "W7", "E1", "2024-03-01", amount=money(30)),
        write_off("acme", "D1", "W8", "C1", "2024-03-01"),
    ]
    found = admission.problems("acme", {("acme", "D1"): state}, parse_batch(orjson.dumps(batch), ERP_TYPES))
    assert [(p["id"], p["field"], p["message"]) for p in found] == [
        (
            "wo-W7",
            "data.amount.amount_minor",
            "the write-off of 30 is larger than the 10 outstanding on invoice 'E1'",
        ),
        ("wo-W8", "data.invoice_id", "invoice 'C1' was cancelled on 2024-01-20"),
    ]


def test_adjustments_and_credit_notes_in_another_currency_than_their_invoice_are_refused() -> None:
    state = given(unit.invoice("E1", 100))
    batch = [
        envelope(
            "ar.invoice.adjusted.v1",
            "acme",
            "D1",
            "adj-1",
            {"invoice_id": "E1", "adjustment_date": "2024-02-01", "new_amount": money(90, "USD")},
        ),
        envelope(
            "ar.creditnote.issued.v1",
            "acme",
            "D1",
            "cn-1",
            {
                "credit_note_id": "CN",
                "issue_date": "2024-02-01",
                "amount": money(5, "USD"),
                "invoice_id": "E1",
            },
        ),
        payment("acme", "D1", "P-NEW", "2024-02-01", 5, allocate_to="SOMEDAY", currency="USD"),
    ]
    found = admission.problems("acme", {("acme", "D1"): state}, parse_batch(orjson.dumps(batch), ERP_TYPES))
    assert [(p["event"], p["field"]) for p in found] == [
        (0, "data.new_amount.currency"),
        (1, "data.invoice_id"),
    ]


def given(*events: JournalEntry) -> DebtorLedger:
    state = initial_state("acme", "D1")
    for event in events:
        state = evolve(state, event).state
    return state
