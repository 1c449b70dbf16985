"""`arrears demo`: the IBM sample replayed day by day on the embedded default, through the whole loop.

One process: an embedded PostgreSQL in a fresh folder, the in-process log, and the ledger, dunning,
notifier and scoring services with their consumers and outbox relays. Scoring's segments reach
dunning, whose default policy shifts the ladder by segment. Every journal event goes through
`POST /v1/events`, disputes through the collectors' API, every business day through the clock, every
report through `GET /v1/aging` and `GET /v1/cases`. E-mail goes to an SMTP server started in the
process; letters are written as PDF files; agency and ERP webhooks go to a receiver in the process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from contracts.money import format_major
from contracts.policy import PolicyPublished, load_policy
from contracts.registry import encode_event
from services.dunning import store as dunning_store
from services.dunning.api import policy_message
from services.notifier import store as notifier_store
from services.runtime import clock
from services.runtime.settings import Settings
from services.sample import ibm
from services.scoring import store as scoring_store
from services.stack import Stack, open_stack

TENANT = "demo"
DEFAULT_POLICY = Path(__file__).parent / "dunning" / "policies" / "default.yaml"
Print = Callable[[str], None]


def _month_end(day: dt.date) -> bool:
    return (day + dt.timedelta(days=1)).month != day.month


def _aging_line(day: dt.date, report: dict[str, Any], labels: list[str]) -> str:
    cells = []
    for currency, figures in report["currencies"].items():
        amounts = [format_major(figures["buckets_minor"][label], currency) for label in labels]
        cells.append(
            f"{currency} "
            + " ".join(f"{a:>10}" for a in amounts)
            + f" {format_major(figures['total_minor'], currency):>11}"
        )
    return f"{day}  " + ("  ".join(cells) if cells else "nothing outstanding")


async def run_demo(
    data: Path, letters: Path = Path("var/demo/letters"), out: Print = print
) -> dict[str, Any]:
    invoices = ibm.load(data)
    days = ibm.events_by_day(invoices, TENANT)
    out(
        f"Replaying {len(invoices)} invoices of {len({i.customer_id for i in invoices})} debtors "
        f"from {min(days)} to {max(days)} ({data.name}) through ledger, dunning and notifier"
    )
    shutil.rmtree(letters / TENANT, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="arrears-demo-") as folder:
        settings = Settings(
            data_dir=Path(folder),
            database_url=None,
            kafka_bootstrap_servers=None,
            send_windows="ignore",
            letters_dir=letters,
        )
        async with open_stack(settings, outside=True) as stack:
            erp_key = await stack.create_key(TENANT, "demo-erp", "erp", on=["ledger"])
            collector_key = await stack.create_key(TENANT, "demo-collector", "collector", on=["dunning"])
            await _record_creditor(stack, min(days))
            return await _replay(stack, invoices, days, erp_key, collector_key, letters, out)


DEMO_CREDITOR = {
    "legal_name": "Northwind Trading Ltd",
    "address": ["1 Market Street", "London EC1A 1AA", "United Kingdom"],
    "registrations": [
        {"label": "Company no.", "value": "01234567"},
        {"label": "VAT", "value": "GB123456789"},
    ],
    "bank_account": {"iban": "GB33BUKB20201555555555", "bic": "BUKBGB22", "bank_name": "Example Bank plc"},
    "payment_reference": "AR-{debtor_id}",
    "email": "credit.control@northwind.example",
    "phone": "+44 20 7946 0000",
    "signatory": {"name": "Jane Doe", "title": "Credit Control Manager"},
}
"""The creditor the demo's letters and e-mails come from (an example company)."""


async def _record_creditor(stack: Stack, first: dt.date) -> None:
    """The tenant's creditor profile, recorded over the notifier's API as operations would."""
    key = await stack.create_key(TENANT, "demo-operations", "operations", on=["notifier"])
    transport = httpx.ASGITransport(app=stack.app("notifier"))
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as notifier:
        response = await notifier.put(
            "/v1/tenant-profile/versions/1",
            json={"effective_from": first.isoformat(), "profile": DEMO_CREDITOR},
            headers={"X-API-Key": key},
        )
        response.raise_for_status()


async def _replay(
    stack: Stack,
    invoices: list[ibm.SampleInvoice],
    days: dict[dt.date, list[Any]],
    erp_key: str,
    collector_key: str,
    letters: Path,
    out: Print,
) -> dict[str, Any]:
    started = time.perf_counter()
    settled = functools.partial(stack.settled, timeout_s=120, poll_s=0.005)
    outside = stack.outside
    assert outside is not None
    posted = 0
    disputes = ibm.disputes_by_day(invoices)
    first, last = min(days), max(days)
    policy = PolicyPublished(version=1, effective_from=first, document=load_policy(DEFAULT_POLICY))
    await stack.event_log.publish([policy_message(TENANT, policy, dt.datetime.now(dt.UTC))])
    ledger_api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app("ledger")),
        base_url="http://ledger",
        headers={"X-API-Key": erp_key},
    )
    dunning_api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app("dunning")),
        base_url="http://dunning",
        headers={"X-API-Key": collector_key},
    )
    worklist: list[str] = []
    async with ledger_api, dunning_api:
        labels: list[str] = (await ledger_api.get("/v1/aging-policy")).json()["labels"]
        out(
            f"\n{'month end':<10}  cur "
            + " ".join(f"{label:>10}" for label in labels)
            + f" {'total':>11}  cases open/held  sent"
        )
        day = first
        while day <= last:
            events = days.get(day, [])
            if events:
                body = b"[" + b",".join(encode_event(e) for e in events) + b"]"
                response = await ledger_api.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                posted += len(events)
            await settled()
            for invoice in disputes.get(day, []):
                response = await dunning_api.post(
                    f"/v1/cases/{invoice.customer_id}:{ibm.CURRENCY}/disputes",
                    json={"invoice_id": invoice.invoice_number, "reason": "disputed in the sample"},
                    headers={"Idempotency-Key": f"sample-dispute-{invoice.invoice_number}"},
                )
                response.raise_for_status()
            await stack.event_log.publish([clock.day_started(TENANT, day, dt.datetime.now(dt.UTC))])
            # The day's commands are executed before the next day's postings can overtake them.
            await settled()
            if _month_end(day) or day == last:
                report = (await ledger_api.get("/v1/aging")).json()
                cases = await _case_counts(stack)
                sent = await _sent(stack)
                out(
                    _aging_line(day, report, labels)
                    + f"  {cases.get('open', 0):>5}/{cases.get('held', 0):<5}  {sum(sent.values()):>5}"
                )
                worklist = await _worklist(stack, day) or worklist
            day += dt.timedelta(days=1)
        await settled()
        elapsed = time.perf_counter() - started
        summary = await _summary(stack, letters)
        webhooks = Counter(target for target, _ in outside.webhooks)
        out(
            f"\n{posted} events posted through the ledger API in {elapsed:.1f} s "
            f"({posted / elapsed:,.0f} events/s, {len(days)} business days with events)"
        )
        out("commands decided: " + _counts(summary["commands"]))
        out("executed: " + _counts(summary["deliveries"]))
        out(
            f"received: {len(outside.emails)} e-mails by the SMTP server, "
            f"{sum(webhooks.values())} webhooks ({_counts(dict(webhooks))}), "
            f"{summary['letters']} letters in {letters}/{TENANT}, {summary['tasks']} tasks for the team"
        )
        out("cases: " + _counts(summary["cases"]))
        out("risk segments (scoring): " + _counts(summary["segments"]))
        for line in worklist:
            out(line)
        return {"posted": posted, "seconds": elapsed, **summary, "emails": len(outside.emails)}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


async def _case_counts(stack: Stack) -> dict[str, int]:
    async with stack.sessions() as session:
        rows = await session.execute(
            select(dunning_store.cases.c.status, func.count()).group_by(dunning_store.cases.c.status)
        )
        return {status: count for status, count in rows.tuples()}


async def _sent(stack: Stack) -> dict[str, int]:
    d = notifier_store.deliveries
    async with stack.sessions() as session:
        rows = await session.execute(
            select(d.c.channel, func.count()).where(d.c.status == "sent").group_by(d.c.channel)
        )
        return {str(channel): count for channel, count in rows.tuples()}


async def _summary(stack: Stack, letters: Path) -> dict[str, Any]:
    d = notifier_store.deliveries
    async with stack.sessions() as session:
        commands: dict[str, int] = {
            action: count
            for action, count in (
                await session.execute(select(d.c.action, func.count()).group_by(d.c.action))
            ).tuples()
        }
        deliveries = {
            f"{status} ({channel})" if channel else status: count
            for status, channel, count in (
                await session.execute(
                    select(d.c.status, d.c.channel, func.count()).group_by(d.c.status, d.c.channel)
                )
            ).tuples()
        }
        tasks = await session.scalar(select(func.count()).select_from(notifier_store.tasks)) or 0
    return {
        "commands": commands,
        "deliveries": deliveries,
        "cases": await _case_counts(stack),
        **await _scoring_summary(stack),
        "tasks": tasks,
        "letters": len(list((letters / TENANT).glob("*.pdf"))) if (letters / TENANT).is_dir() else 0,
    }


async def _scoring_summary(stack: Stack) -> dict[str, Any]:
    """Debtors per risk segment, as scoring has them."""
    scores = scoring_store.scores
    async with stack.sessions() as session:
        rows = await session.execute(
            select(scores.c.segment, func.count())
            .where(scores.c.tenant_id == TENANT)
            .group_by(scores.c.segment)
        )
        return {"segments": {str(segment): count for segment, count in rows.tuples()}}


async def _worklist(stack: Stack, day: dt.date, top: int = 5) -> list[str]:
    """The head of the collectors' worklist on `day`, as lines; none when nobody is overdue."""
    async with stack.sessions() as session:
        items = await scoring_store.worklist(session, TENANT, limit=top)
    if not items:
        return []
    lines = [f"worklist on {day}, first {len(items)} (expected recovery less the cost of the next action):"]
    for item in items:
        c = item.candidate
        amount = format_major(c.amount_at_stake_minor, c.currency)
        reasons = "; ".join(c.reasons[:2])
        lines.append(
            f"  {item.rank}. {c.debtor_id} {c.segment:<6} {c.action:<10} {amount:>10} {c.currency}  {reasons}"
        )
    return lines


def main(data: Path) -> None:
    if not data.is_file():
        raise SystemExit(f"sample data not found at {data}; pass --data PATH")
    asyncio.run(run_demo(data))
