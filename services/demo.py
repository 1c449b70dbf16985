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
import contextlib
import datetime as dt
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from contracts.money import format_major
from contracts.policy import PolicyPublished, load_policy
from contracts.registry import encode_event
from services.dunning import store as dunning_store
from services.dunning.api import policy_message
from services.dunning.main import DunningService
from services.ledger import store as ledger_store
from services.ledger.main import LedgerService
from services.notifier import store as notifier_store
from services.notifier.main import NotifierService
from services.runtime import clock
from services.runtime.auth import create_key
from services.runtime.consumer import ConsumerLoop
from services.runtime.outbox import OutboxRelay
from services.runtime.process import Resources, open_resources
from services.runtime.settings import Settings
from services.sample import ibm
from services.scoring import store as scoring_store
from services.scoring.main import ScoringService

TENANT = "demo"
DEFAULT_POLICY = Path(__file__).parent / "dunning" / "policies" / "default.yaml"
Print = Callable[[str], None]


@dataclass
class Receivers:
    """The other ends: an SMTP server and a webhook receiver, both in this process."""

    emails: list[bytes] = field(default_factory=list)
    webhooks: Counter[str] = field(default_factory=Counter)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.emails.append(envelope.content)
        return "250 OK"

    def webhook_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{target}")
        async def receive(target: str, request: Request) -> dict[str, str]:
            await request.body()
            self.webhooks[target] += 1
            return {"status": "received"}

        return app


@dataclass
class Loop:
    ledger: LedgerService
    dunning: DunningService
    notifier: NotifierService
    scoring: ScoringService
    resources: Resources

    @property
    def services(self) -> tuple[LedgerService, DunningService, NotifierService, ScoringService]:
        return (self.ledger, self.dunning, self.notifier, self.scoring)

    async def settled(self, timeout_s: float = 120) -> None:
        """Wait until every consumer applied everything, every outbox is published and every due
        command is executed."""
        deadline = time.monotonic() + timeout_s
        consumers: list[ConsumerLoop] = [s.consumer for s in self.services]
        # Until a consumer has its partitions its lag reads 0; a clock tick published before then
        # could be applied before the facts of its day.
        for consumer in consumers:
            await asyncio.wait_for(consumer.started.wait(), timeout_s)
        relays: list[tuple[OutboxRelay, Any]] = [
            (self.ledger.relay, ledger_store.runtime.outbox),
            (self.dunning.relay, dunning_store.runtime.outbox),
            (self.notifier.relay, notifier_store.runtime.outbox),
            (self.scoring.relay, scoring_store.runtime.outbox),
        ]
        quiet = 0
        while True:
            # Read in the order work moves, so a move between two reads is seen by the later one: a
            # consumer's commit takes records off its lag (read first) into the deliveries and outboxes,
            # the sender takes deliveries into the notifier's outbox, a relay takes outbox rows into the
            # log (the lags, read again last).
            lag = sum([await c.lag() for c in consumers])
            async with self.resources.sessions() as session:
                d = notifier_store.deliveries
                waiting = (
                    await session.scalar(
                        select(func.count()).select_from(d).where(d.c.status.in_(("pending", "sending")))
                    )
                    or 0
                )
                for _, outbox in relays:
                    waiting += await session.scalar(select(func.count()).select_from(outbox)) or 0
            lag += sum([await c.lag() for c in consumers])
            quiet = quiet + 1 if lag == 0 and waiting == 0 else 0
            if quiet == 2:  # twice in a row: nothing a consumer wrote meanwhile is still in flight
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the services did not settle")
            for relay, _ in relays:
                relay.wake.set()
            await asyncio.sleep(0.005)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


@contextlib.asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_demo(
    data: Path, letters: Path = Path("var/demo/letters"), out: Print = print
) -> dict[str, Any]:
    invoices = ibm.load(data)
    days = ibm.events_by_day(invoices, TENANT)
    out(
        f"Replaying {len(invoices)} invoices of {len({i.customer_id for i in invoices})} debtors "
        f"from {min(days)} to {max(days)} ({data.name}) through ledger, dunning and notifier"
    )
    receivers = Receivers()
    shutil.rmtree(letters / TENANT, ignore_errors=True)
    smtp_port = _free_port()
    smtp = Controller(receivers, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        async with _serving(receivers.webhook_app()) as webhooks:
            with tempfile.TemporaryDirectory(prefix="arrears-demo-") as folder:
                settings = Settings(
                    data_dir=Path(folder),
                    database_url=None,
                    kafka_bootstrap_servers=None,
                    smtp_port=smtp_port,
                    send_windows="ignore",
                    letters_dir=letters,
                    webhook_urls={"erp": f"{webhooks}/erp", "agency": f"{webhooks}/agency"},
                )
                async with open_resources(settings) as resources:
                    loop = Loop(
                        LedgerService(resources),
                        DunningService(resources),
                        NotifierService(resources),
                        ScoringService(resources),
                        resources,
                    )
                    for service in loop.services:
                        await service.migrate()
                    async with resources.sessions() as session, session.begin():
                        erp_key = await create_key(session, ledger_store.runtime, TENANT, "demo-erp", "erp")
                        collector_key = await create_key(
                            session, dunning_store.runtime, TENANT, "demo-collector", "collector"
                        )
                    for service in loop.services:
                        await service.start_background()
                    try:
                        return await _replay(
                            loop, invoices, days, erp_key, collector_key, receivers, letters, out
                        )
                    finally:
                        for service in reversed(loop.services):
                            await service.stop_background()
    finally:
        smtp.stop()


async def _replay(
    loop: Loop,
    invoices: list[ibm.SampleInvoice],
    days: dict[dt.date, list[Any]],
    erp_key: str,
    collector_key: str,
    receivers: Receivers,
    letters: Path,
    out: Print,
) -> dict[str, Any]:
    started = time.perf_counter()
    posted = 0
    disputes = ibm.disputes_by_day(invoices)
    first, last = min(days), max(days)
    policy = PolicyPublished(version=1, effective_from=first, document=load_policy(DEFAULT_POLICY))
    await loop.resources.event_log.publish([policy_message(TENANT, policy, dt.datetime.now(dt.UTC))])
    ledger_api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=loop.ledger.app(run_background=False)),
        base_url="http://ledger",
        headers={"X-API-Key": erp_key},
    )
    dunning_api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=loop.dunning.app(run_background=False)),
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
            await loop.settled()
            for invoice in disputes.get(day, []):
                response = await dunning_api.post(
                    f"/v1/cases/{invoice.customer_id}:{ibm.CURRENCY}/disputes",
                    json={"invoice_id": invoice.invoice_number, "reason": "disputed in the sample"},
                    headers={"Idempotency-Key": f"sample-dispute-{invoice.invoice_number}"},
                )
                response.raise_for_status()
            await loop.resources.event_log.publish([clock.day_started(TENANT, day, dt.datetime.now(dt.UTC))])
            # The day's commands are executed before the next day's postings can overtake them.
            await loop.settled()
            if _month_end(day) or day == last:
                report = (await ledger_api.get("/v1/aging")).json()
                cases = await _case_counts(loop)
                sent = await _sent(loop)
                out(
                    _aging_line(day, report, labels)
                    + f"  {cases.get('open', 0):>5}/{cases.get('held', 0):<5}  {sum(sent.values()):>5}"
                )
                worklist = await _worklist(loop, day) or worklist
            day += dt.timedelta(days=1)
        await loop.settled()
        elapsed = time.perf_counter() - started
        summary = await _summary(loop, receivers, letters)
        out(
            f"\n{posted} events posted through the ledger API in {elapsed:.1f} s "
            f"({posted / elapsed:,.0f} events/s, {len(days)} business days with events)"
        )
        out("commands decided: " + _counts(summary["commands"]))
        out("executed: " + _counts(summary["deliveries"]))
        out(
            f"received: {len(receivers.emails)} e-mails by the SMTP server, "
            f"{sum(receivers.webhooks.values())} webhooks ({_counts(dict(receivers.webhooks))}), "
            f"{summary['letters']} letters in {letters}/{TENANT}, {summary['tasks']} tasks for the team"
        )
        out("cases: " + _counts(summary["cases"]))
        out("risk segments (scoring): " + _counts(summary["segments"]))
        for line in worklist:
            out(line)
        return {"posted": posted, "seconds": elapsed, **summary, "emails": len(receivers.emails)}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


async def _case_counts(loop: Loop) -> dict[str, int]:
    async with loop.resources.sessions() as session:
        rows = await session.execute(
            select(dunning_store.cases.c.status, func.count()).group_by(dunning_store.cases.c.status)
        )
        return {status: count for status, count in rows.tuples()}


async def _sent(loop: Loop) -> dict[str, int]:
    d = notifier_store.deliveries
    async with loop.resources.sessions() as session:
        rows = await session.execute(
            select(d.c.channel, func.count()).where(d.c.status == "sent").group_by(d.c.channel)
        )
        return {str(channel): count for channel, count in rows.tuples()}


async def _summary(loop: Loop, receivers: Receivers, letters: Path) -> dict[str, Any]:
    d = notifier_store.deliveries
    async with loop.resources.sessions() as session:
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
        "cases": await _case_counts(loop),
        **await _scoring_summary(loop),
        "tasks": tasks,
        "letters": len(list((letters / TENANT).glob("*.pdf"))) if (letters / TENANT).is_dir() else 0,
    }


async def _scoring_summary(loop: Loop) -> dict[str, Any]:
    """Debtors per risk segment, as scoring has them."""
    scores = scoring_store.scores
    async with loop.resources.sessions() as session:
        rows = await session.execute(
            select(scores.c.segment, func.count())
            .where(scores.c.tenant_id == TENANT)
            .group_by(scores.c.segment)
        )
        return {"segments": {str(segment): count for segment, count in rows.tuples()}}


async def _worklist(loop: Loop, day: dt.date, top: int = 5) -> list[str]:
    """The head of the collectors' worklist on `day`, as lines; none when nobody is overdue."""
    async with loop.resources.sessions() as session:
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
