"""`arrears demo`: the IBM sample replayed day by day on the embedded default, through the whole loop.

One process: an embedded PostgreSQL in a fresh folder, the in-process log, and the ledger, dunning,
notifier and scoring services with their consumers and outbox relays. Scoring's segments reach
dunning, whose default policy shifts the ladder by segment. Every journal event goes through
`POST /v1/events`, disputes through the collectors' API, every business day through the clock, every
report through `GET /v1/aging`, `GET /v1/kpis/receivables` and `GET /v1/cases`. E-mail goes to an
SMTP server started in the process; letters are written as PDF files; agency and ERP webhooks go to a
receiver in the process. At the end the operations dashboard serves the replayed stack on a local port
until interrupted, unless told not to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import func, select

from contracts.money import format_major
from contracts.policy import PolicyPublished, load_policy
from contracts.registry import encode_event
from services.demo_practice import show_practice
from services.dunning import store as dunning_store
from services.dunning.api import policy_message
from services.dunning.replay import simulate
from services.dunning.simulation import Window, report_json, report_table
from services.notifier import store as notifier_store
from services.runtime import clock
from services.runtime.collector import settle as settle_collector
from services.runtime.settings import Settings
from services.sample import ibm
from services.scoring import store as scoring_store
from services.stack import Stack, open_stack

TENANT = "demo"
DEFAULT_POLICY = Path(__file__).parent / "dunning" / "policies" / "default.yaml"
Print = Callable[[str], None]


def _month_end(day: dt.date) -> bool:
    return (day + dt.timedelta(days=1)).month != day.month


def _aging_line(
    day: dt.date, report: dict[str, Any], labels: list[str], kpis: dict[str, dict[str, Any]]
) -> str:
    cells = []
    for currency, figures in report["currencies"].items():
        amounts = [format_major(figures["buckets_minor"][label], currency) for label in labels]
        month = kpis.get(currency, {})
        cells.append(
            f"{currency} "
            + " ".join(f"{a:>10}" for a in amounts)
            + f" {format_major(figures['total_minor'], currency):>11}"
            + f" {_figure(month.get('dso_count_back_days'), ' d'):>8}"
            + f" {_figure(month.get('cei_percent'), ' %'):>7}"
        )
    return f"{day}  " + ("  ".join(cells) if cells else "nothing outstanding")


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


async def _month_kpis(ledger_api: httpx.AsyncClient, day: dt.date) -> dict[str, dict[str, Any]]:
    """Per currency, the receivables KPIs of the month through `day` (none if the ledger has none)."""
    response = await ledger_api.get("/v1/kpis/receivables", params={"as_of": day.isoformat(), "months": 1})
    if response.status_code != 200:
        return {}
    return {currency: months[-1] for currency, months in response.json()["currencies"].items() if months}


async def run_demo(
    data: Path, letters: Path = Path("var/demo/letters"), out: Print = print, serve_port: int | None = None
) -> dict[str, Any]:
    """Replay the sample; then, when `serve_port` is given, serve the dashboard on it (0: any free
    port) until interrupted."""
    # The port is taken before the replay, so a busy one is said at once rather than minutes later.
    listener = _listen(serve_port) if serve_port is not None else None
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
            summary = await _replay(stack, invoices, days, erp_key, collector_key, letters, out)
            if listener is not None:
                with listener:
                    await _serve_dashboard(stack, listener, summary["outstanding_on"], out)
            return summary


class _Server(uvicorn.Server):
    """Stops on Ctrl-C or SIGTERM as uvicorn does, but does not raise the signal again once stopped:
    asyncio would take it for a second Ctrl-C and cut short the stack's orderly shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(100)  # a browser that comes before the server waits in the backlog
    except OSError as exc:
        listener.close()
        raise SystemExit(f"cannot serve the dashboard on port {port}: {exc.strerror}; pass --port") from None
    return listener


async def _serve_dashboard(stack: Stack, listener: socket.socket, as_of: dt.date | None, out: Print) -> None:
    """The dashboard over the replayed stack, with a read key of operations in the address's fragment
    (a browser never sends the fragment to a server), until Ctrl-C. It opens on `as_of`: by the end of
    the sample every invoice is settled, and an empty aging shows nothing."""
    key = await stack.create_key(TENANT, "demo-dashboard", "operations", on=list(stack.services))
    server = _Server(uvicorn.Config(stack.dashboard(), log_level="warning"))
    fragment = f"key={key}" + (f"&as_of={as_of}" if as_of else "")
    out(f"\nThe operations dashboard: http://127.0.0.1:{listener.getsockname()[1]}/#{fragment}")
    out("Serving the replayed stack until Ctrl-C.")
    await server.serve(sockets=[listener])
    out("stopped")


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
    outstanding_on: dt.date | None = None  # the last month end with anything outstanding
    async with ledger_api, dunning_api:
        labels: list[str] = (await ledger_api.get("/v1/aging-policy")).json()["labels"]
        out(
            f"\n{'month end':<10}  cur "
            + " ".join(f"{label:>10}" for label in labels)
            + f" {'total':>11} {'DSO':>8} {'CEI':>7}  cases open/held  sent"
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
                kpis = await _month_kpis(ledger_api, day)
                cases = await _case_counts(stack)
                sent = await _sent(stack)
                out(
                    _aging_line(day, report, labels, kpis)
                    + f"  {cases.get('open', 0):>5}/{cases.get('held', 0):<5}  {sum(sent.values()):>5}"
                )
                worklist = await _worklist(stack, day) or worklist
                if report["currencies"]:
                    outstanding_on = day
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
        for line in await _what_if(stack, max(first, last - dt.timedelta(days=WHAT_IF_DAYS)), last):
            out(line)
        practice = await show_practice(
            stack, TENANT, ibm.CURRENCY, last, ledger_api, dunning_api, settled, out
        )
        for line in await _agency_report(stack, dunning_api, practice["last_day"]):
            out(line)
        return {
            "posted": posted,
            "seconds": elapsed,
            **summary,
            "emails": len(outside.emails),
            "outstanding_on": outstanding_on,
            "practice": practice,
        }


WHAT_IF_DAYS = 120
"""The demo's policy what-if replays the last this many days of the sample."""


async def _agency_report(stack: Stack, dunning_api: httpx.AsyncClient, day: dt.date) -> list[str]:
    """Each agency's placements and what it recovered, as the ledger's payments show it."""
    response = await dunning_api.get("/v1/kpis/agencies", params={"as_of": day.isoformat()})
    response.raise_for_status()
    agencies = response.json()["agencies"]
    if not agencies:
        return ["\nagencies: no case placed"]
    lines = ["\nagencies (placed / recovered as the ledger shows it / reported by the agency):"]
    for a in agencies:
        currency = a["currency"]
        lines.append(
            f"  {a['agency_id']} ({a['segment']}): {a['placed_cases']} cases, "
            f"{format_major(a['placed_minor'], currency)} placed, "
            f"{format_major(a['recovered_minor'], currency)} recovered, "
            f"{format_major(a['reported_minor'], currency)} reported"
        )
    return lines + await _agency_feed(stack, agencies[0]["agency_id"])


async def _agency_feed(stack: Stack, agency_id: str, limit: int = 3) -> list[str]:
    """The start of the agency's own feed, read with its own key as the agency would."""
    key = await stack.create_key(TENANT, agency_id, "agency", on=["dunning"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app("dunning")),
        base_url="http://dunning",
        headers={"X-API-Key": key},
    ) as agency_api:
        response = await agency_api.get("/v1/agency/feed", params={"limit": limit})
        response.raise_for_status()
    lines = [f"  {agency_id}'s feed (GET /v1/agency/feed), first {limit}:"]
    for entry in response.json()["entries"]:
        debtor = entry.get("debtor") or {}
        contact = debtor.get("email") or ", ".join(debtor.get("postal_address") or []) or "no contact"
        lines.append(
            f"    {entry['position']:>4} {entry['kind']:<8} {entry['case_id']}  {debtor.get('name')} "
            f"({contact}), {len(entry.get('items', []))} items, "
            f"{format_major(entry['overdue_minor'], entry['currency'])} {entry['currency']} overdue "
            f"on {entry['business_date']}"
        )
    return lines


async def _what_if(stack: Stack, start: dt.date, end: dt.date) -> list[str]:
    """The default policy replayed over the last days of the sample beside a candidate that sends the
    formal notice (and the call with it) a week earlier: nothing is sent, nothing stored."""
    document = load_policy(DEFAULT_POLICY)
    earlier = {"formal_notice": 8, "phone_call": 8}
    steps = [s.model_copy(update={"days": earlier.get(s.name, s.days)}) for s in document.steps]
    candidate = document.model_copy(update={"steps": steps})
    report = await simulate(stack.event_log, TENANT, candidate, Window(start, end))
    return [
        "\nWhat if the formal notice went out on day 8 instead of day 15?",
        report_table(report_json(report)),
    ]


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


def main(data: Path, serve_port: int | None) -> None:
    if not data.is_file():
        raise SystemExit(f"sample data not found at {data}; pass --data PATH")
    settle_collector()
    try:
        asyncio.run(run_demo(data, serve_port=serve_port))
    except KeyboardInterrupt:
        print("stopped")
