"""`arrears demo`: the IBM sample replayed day by day on the embedded default, aging at every month end.

One process: an embedded PostgreSQL in a fresh folder, the in-process log, the ledger service with
its consumer and outbox relay, and its real HTTP app called in process. Every event goes through
`POST /v1/events`; every business day through the clock; every report through `GET /v1/aging`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from contracts.money import format_major
from contracts.registry import encode_event
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime import clock
from services.runtime.auth import create_key
from services.runtime.process import open_resources
from services.runtime.settings import Settings
from services.sample import ibm

TENANT = "demo"
Print = Callable[[str], None]


def _month_end(day: dt.date) -> bool:
    return (day + dt.timedelta(days=1)).month != day.month


async def _caught_up(service: LedgerService, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await service.consumer.lag() > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the ledger did not catch up")
        await asyncio.sleep(0.01)


def _aging_line(day: dt.date, report: dict[str, Any], labels: list[str]) -> str:
    cells = []
    for currency, figures in report["currencies"].items():
        amounts = [format_major(figures["buckets_minor"][label], currency) for label in labels]
        cells.append(
            f"{currency} "
            + " ".join(f"{a:>11}" for a in amounts)
            + f" {format_major(figures['total_minor'], currency):>12}"
        )
    return f"{day}  " + ("  ".join(cells) if cells else "nothing outstanding")


async def run_demo(data: Path, out: Print = print) -> dict[str, Any]:
    invoices = ibm.load(data)
    days = ibm.events_by_day(invoices, TENANT)
    last_day = max(days)
    out(
        f"Replaying {len(invoices)} invoices of {len({i.customer_id for i in invoices})} debtors "
        f"from {min(days)} to {last_day} ({data.name})"
    )
    with tempfile.TemporaryDirectory(prefix="arrears-demo-") as folder:
        settings = Settings(data_dir=Path(folder), database_url=None, kafka_bootstrap_servers=None)
        async with open_resources(settings) as resources:
            service = LedgerService(resources)
            await service.migrate()
            async with resources.sessions() as session, session.begin():
                key = await create_key(session, store.runtime, TENANT, "demo", "erp")
            await service.start_background()
            try:
                return await _replay(service, days, key, out)
            finally:
                await service.stop_background()


async def _replay(
    service: LedgerService, days: dict[dt.date, list[Any]], key: str, out: Print
) -> dict[str, Any]:
    started = time.perf_counter()
    posted = 0
    transport = httpx.ASGITransport(app=service.app(run_background=False))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ledger", headers={"X-API-Key": key}
    ) as api:
        labels: list[str] = (await api.get("/v1/aging-policy")).json()["labels"]
        out(f"\n{'month end':<10}  cur " + " ".join(f"{label:>11}" for label in labels) + f" {'total':>12}")
        day = min(days)
        while day <= max(days):
            events = days.get(day, [])
            if events:
                body = b"[" + b",".join(encode_event(e) for e in events) + b"]"
                response = await api.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                posted += len(events)
            await service.resources.event_log.publish(
                [clock.day_started(TENANT, day, dt.datetime.now(dt.UTC))]
            )
            if _month_end(day) or day == max(days):
                await _caught_up(service)
                report = (await api.get("/v1/aging")).json()
                out(_aging_line(day, report, labels))
            day += dt.timedelta(days=1)
        elapsed = time.perf_counter() - started
        out(
            f"\n{posted} events posted through the ledger API and projected in {elapsed:.1f} s "
            f"({posted / elapsed:,.0f} events/s, business days replayed: {len(days)})"
        )
        return {"posted": posted, "seconds": elapsed}


def main(data: Path) -> None:
    if not data.is_file():
        raise SystemExit(f"sample data not found at {data}; pass --data PATH")
    asyncio.run(run_demo(data))
