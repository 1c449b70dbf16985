"""The demo's epilogue, on three debtors of its own after the sample, through the same APIs an ERP and
a collector use: an early-payment discount taken, an agreed settlement paid, and a debt nobody pays
climbing the ladder to an agency. The first two end with nothing open."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from contracts.money import format_major
from services.runtime import clock
from services.stack import Stack

DISCOUNT_DEBTOR = "SHOWCASE-DISCOUNT"
SETTLEMENT_DEBTOR = "SHOWCASE-SETTLEMENT"
AGENCY_DEBTOR = "SHOWCASE-AGENCY"
LADDER_DAYS = 45
"""Business days the epilogue runs: long enough for a debt long overdue to climb the whole ladder
(one step after another, seven days apart at least) to the agency."""
Print = Callable[[str], None]


def _event(tenant: str, debtor: str, event_type: str, event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """An ERP's event as it is posted: CloudEvents JSON."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "erp/demo",
        "type": event_type,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "tenantid": tenant,
        "debtorid": debtor,
        "data": data,
    }


def _money(minor: int, currency: str) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": currency}


async def show_practice(
    stack: Stack,
    tenant: str,
    currency: str,
    after: dt.date,
    ledger_api: httpx.AsyncClient,
    dunning_api: httpx.AsyncClient,
    settled: Callable[[], Awaitable[None]],
    out: Print,
) -> dict[str, Any]:
    """Business days after `after`: on the first, a new invoice to one debtor, an old overdue one to
    another, with whom a collector agrees a settlement, and an old one to a third who never pays; on
    the fourth day of the terms the first pays 97 % and the second the agreed amount; the third is
    chased until placed with an agency. Prints what the ledger and the cases show."""
    first, paid_on = after + dt.timedelta(days=1), after + dt.timedelta(days=4)
    amount, old_debt, agreed, never_paid = 100_000, 250_000, 150_000, 420_000

    async def post(events: list[dict[str, Any]]) -> None:
        response = await ledger_api.post("/v1/events", json=events)
        response.raise_for_status()

    async def start(day: dt.date) -> None:
        await stack.event_log.publish([clock.day_started(tenant, day, dt.datetime.now(dt.UTC))])
        await settled()

    await post(
        [
            _event(tenant, d, "ar.debtor.registered.v1", f"showcase-reg-{d}", {"name": name, "email": email})
            for d, name, email in (
                (DISCOUNT_DEBTOR, "Prompt Payer Ltd", "accounts@prompt-payer.example"),
                (SETTLEMENT_DEBTOR, "Slow Payer Ltd", "accounts@slow-payer.example"),
                (AGENCY_DEBTOR, "Never Pays Ltd", "accounts@never-pays.example"),
            )
        ]
        + [
            _event(
                tenant,
                DISCOUNT_DEBTOR,
                "ar.invoice.issued.v1",
                "showcase-inv-d1",
                {
                    "invoice_id": "SHOW-D1",
                    "issue_date": first.isoformat(),
                    "due_date": (first + dt.timedelta(days=30)).isoformat(),
                    "amount": _money(amount, currency),
                },
            ),
            _event(
                tenant,
                SETTLEMENT_DEBTOR,
                "ar.invoice.issued.v1",
                "showcase-inv-s1",
                {
                    "invoice_id": "SHOW-S1",
                    "issue_date": (first - dt.timedelta(days=120)).isoformat(),
                    "due_date": (first - dt.timedelta(days=90)).isoformat(),
                    "amount": _money(old_debt, currency),
                },
            ),
            _event(
                tenant,
                AGENCY_DEBTOR,
                "ar.invoice.issued.v1",
                "showcase-inv-a1",
                {
                    "invoice_id": "SHOW-A1",
                    "issue_date": (first - dt.timedelta(days=90)).isoformat(),
                    "due_date": (first - dt.timedelta(days=60)).isoformat(),
                    "amount": _money(never_paid, currency),
                },
            ),
        ]
    )
    await settled()
    await start(first)
    case_id = f"{SETTLEMENT_DEBTOR}:{currency}"
    response = await dunning_api.post(
        f"/v1/cases/{case_id}/settlements",
        json={"amount": _money(agreed, currency), "pay_by": (first + dt.timedelta(days=14)).isoformat()},
        headers={"Idempotency-Key": "showcase-settlement"},
    )
    response.raise_for_status()
    await settled()
    for day in (first + dt.timedelta(days=n) for n in range(1, 3)):
        await start(day)
    await post(
        [
            _event(
                tenant,
                DISCOUNT_DEBTOR,
                "ar.payment.received.v1",
                "showcase-pay-d1",
                {
                    "payment_id": "SHOW-PD1",
                    "value_date": paid_on.isoformat(),
                    "amount": _money(97_000, currency),
                },
            ),
            _event(
                tenant,
                SETTLEMENT_DEBTOR,
                "ar.payment.received.v1",
                "showcase-pay-s1",
                {
                    "payment_id": "SHOW-PS1",
                    "value_date": paid_on.isoformat(),
                    "amount": _money(agreed, currency),
                },
            ),
        ]
    )
    await settled()
    last = first + dt.timedelta(days=LADDER_DAYS)
    day = paid_on
    while day <= last:
        await start(day)
        day += dt.timedelta(days=1)

    discount = (await ledger_api.get(f"/v1/debtors/{DISCOUNT_DEBTOR}/statement")).json()
    settlement = (await ledger_api.get(f"/v1/debtors/{SETTLEMENT_DEBTOR}/statement")).json()
    cases = {
        d: (await dunning_api.get(f"/v1/cases/{d}:{currency}")).json()
        for d in (DISCOUNT_DEBTOR, SETTLEMENT_DEBTOR, AGENCY_DEBTOR)
    }
    [paid] = discount["payment_history"] or [{"paid": 0, "discounted": 0}]
    forgiven = next(
        (e["detail"] for e in cases[SETTLEMENT_DEBTOR]["timeline"] if e["kind"] == "rest_forgiven"), None
    )
    reminded = sum(1 for e in cases[DISCOUNT_DEBTOR]["timeline"] if e["kind"].startswith("command."))

    def major(minor: int) -> str:
        return f"{format_major(minor, currency)} {currency}"

    out("\nCollections practice, on three debtors after the sample:")
    out(
        f"  early-payment discount: {DISCOUNT_DEBTOR} paid {major(paid['paid'])} of {major(amount)} on day 3 "
        f"of the terms (3 % within 7 days); discount posted {major(paid['discounted'])}, open items "
        f"{len(discount['open_items'])}, reminders {reminded}, case {cases[DISCOUNT_DEBTOR]['status']}"
    )
    out(
        f"  agreed settlement: {SETTLEMENT_DEBTOR} owed {major(old_debt)}, agreed {major(agreed)}; "
        f"paid; {forgiven.split(': ', 1)[-1] if forgiven else 'nothing forgiven'}; "
        f"open items {len(settlement['open_items'])}, "
        f"case {cases[SETTLEMENT_DEBTOR]['status']}"
    )
    chased = cases[AGENCY_DEBTOR]
    steps = [e["step"] for e in chased["timeline"] if e["kind"].startswith("command.") and e.get("step")]
    agency = f", with {chased['agency_id']}" if chased.get("agency_id") else ""
    out(
        f"  a debt nobody pays: {AGENCY_DEBTOR} owes {major(never_paid)}, 60 days overdue; in "
        f"{LADDER_DAYS} business days: {', '.join(steps) or 'nothing'}; the case is "
        f"{chased['status']}{agency}"
    )
    return {
        "last_day": last,
        "agency_id": chased.get("agency_id"),
        "discounted_minor": paid["discounted"],
        "discount_case": cases[DISCOUNT_DEBTOR]["status"],
        "settlement_open_items": len(settlement["open_items"]),
        "settlement_case": cases[SETTLEMENT_DEBTOR]["status"],
    }
