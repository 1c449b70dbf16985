"""Scoring on a real broker and database: balance facts in, score events out on collections.scores.v1,
the worklist over HTTP in the order the scores give, and a new model version used without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.money import Money
from contracts.receivables import ReceivableBalance
from contracts.registry import decode_event, encode_event, make_event
from contracts.topics import DEBTORS, RECEIVABLES, SCORES
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from services.scoring import artifacts
from services.scoring.features import DebtorHistory, InvoiceFact, examples_known_before
from services.scoring.model import train
from services.stack import open_stack, serving
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import from_test_start, settings_for

pytestmark = pytest.mark.integration

D = dt.date
AT = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
AS_OF = D(2026, 3, 31)


def balance(tenant: str, debtor: str, invoice: str, issued: D, amount: int, paid: D | None) -> list[Message]:
    """The ledger's facts of one invoice: opened on its issue date, settled on `paid`."""
    due = issued + dt.timedelta(days=30)
    total = Money(amount_minor=amount, currency="EUR")
    out = []
    steps = [("ar.receivable.opened.v1", "open", amount, amount, issued)]
    if paid is not None:
        steps.append(("ar.receivable.settled.v1", "settled", 0, -amount, paid))
    for event_type, status, outstanding, change, day in steps:
        data = ReceivableBalance(
            invoice_id=invoice,
            issue_date=issued,
            due_date=due,
            amount=total,
            outstanding=Money(amount_minor=outstanding, currency="EUR"),
            change=Money(amount_minor=change, currency="EUR"),
            status=status,
            effective_date=day,
            cause_type="ar.invoice.issued.v1" if status == "open" else "ar.payment.received.v1",
            cause_id=f"{invoice}-{status}",
        )
        event = make_event(
            event_type,
            data,
            event_id=f"{invoice}-{status}",
            tenant_id=tenant,
            debtor_id=debtor,
            source="arrears/ledger",
            time=AT,
        )
        out.append(Message(RECEIVABLES.name, event.key.encode(), encode_event(event)))
    return out


def history(tenant: str, debtor: str, days_late: int, open_amount: int, open_issued: D) -> list[Message]:
    """Eight invoices paid `days_late` after they fell due, and one still open."""
    out = []
    for n in range(8):
        issued = D(2025, 10, 1) + dt.timedelta(days=15 * n)
        out += balance(
            tenant, debtor, f"{debtor}-{n}", issued, 100_000, issued + dt.timedelta(30 + days_late)
        )
    return out + balance(tenant, debtor, f"{debtor}-open", open_issued, open_amount, None)


def profile(tenant: str, debtor: str, name: str) -> Message:
    event = make_event(
        "ar.debtor.updated.v1",
        DebtorProfile(name=name, email=f"{debtor.lower()}@example.com"),
        event_id=f"{debtor}-{name}",
        tenant_id=tenant,
        debtor_id=debtor,
        source="erp/test",
        time=AT,
    )
    return Message(DEBTORS.name, event.key.encode(), encode_event(event))


@contextlib.asynccontextmanager
async def score_events(kafka: KafkaBroker, tenant: str) -> AsyncIterator[Callable[[], list[Envelope[Any]]]]:
    """The tenant's records on collections.scores.v1 from now on, as they arrive."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(SCORES.name, p) for p in range(SCORES.partitions)]
    consumer.assign(partitions)
    for tp, end in (await consumer.end_offsets(partitions)).items():
        consumer.seek(tp, end)
    seen: list[Envelope[Any]] = []

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                seen.extend(e for r in records if (e := decode_event(r.value)).tenantid == tenant)

    reading = asyncio.create_task(read())
    try:
        yield lambda: list(seen)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await consumer.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def train_from_log(database_url: str, tenant: str, model_dir: Path) -> artifacts.Manifest:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_") and k != "DATABASE_URL"}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.cli", "scoring", "train", "--tenant", tenant),
        *("--model-dir", str(model_dir)),
        env={**env, "ARREARS_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    return artifacts.Manifest.read(model_dir)


def trained_model_examples() -> list[Any]:
    """Forty debtors of twelve invoices fifteen days apart; debtor n pays about n in 40 of them 40
    days late."""
    histories = []
    for n in range(40):
        invoices = []
        for k in range(12):
            issued = D(2025, 1, 1) + dt.timedelta(days=15 * k)
            late = 40 if (7 * k + 3 * n) % 40 < n else 0
            paid = issued + dt.timedelta(30 + late)
            invoices.append(InvoiceFact(f"m{n}-{k}", issued, issued + dt.timedelta(30), 100_000, paid))
        histories.append(DebtorHistory("model", f"m{n}", "EUR", tuple(invoices)))
    return examples_known_before(histories, D(2026, 1, 1))


async def test_facts_in_score_events_out_worklist_ranked_and_a_new_model_used_live(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "model"
    database_url = await new_database()
    settings = settings_for(database_url, kafka, scoring_model_dir=model_dir)
    async with (
        score_events(kafka, tenant) as events,
        open_stack(settings, ["scoring"], prepare=from_test_start) as stack,
    ):
        service = stack.scoring
        key = await stack.create_key(tenant, "collector-1", "collector", on=["scoring"])
        async with (
            serving(stack.app("scoring")) as url,
            httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=10) as client,
        ):
            await asyncio.wait_for(service.consumer.started.wait(), 20)

            # Overdue on Mar 31: "steady" EUR 5000.00 for 28 days, "slow" EUR 5000.00 for 45 days,
            # "small" EUR 100.00 for 14 days. "slow" has paid every invoice 40 days late.
            await kafka_log.publish(
                history(tenant, "steady", 0, 500_000, D(2026, 2, 1))
                + history(tenant, "slow", 40, 500_000, D(2026, 1, 15))
                + history(tenant, "small", 0, 10_000, D(2026, 2, 15))
                + balance(tenant, "steady", "steady-new", AS_OF, 1_000, None)
            )

            async def caught_up() -> bool:
                return await service.consumer.lag() == 0

            await until(caught_up, "scoring did not apply the facts")
            # Every debtor is scored again as of the tenant's latest business date.
            await kafka_log.publish([profile(tenant, d, "v1") for d in ("steady", "slow", "small")])

            def latest() -> dict[str, Any]:
                return {e.debtorid or "": e.data for e in events() if e.data.as_of == AS_OF}

            async def scored() -> bool:
                return set(latest()) == {"steady", "slow", "small"}

            await until(scored, "no score event as of the last business date for every debtor")
            final = latest()
            assert final["slow"].segment == "high" and final["steady"].segment == "low"
            assert final["slow"].model_kind == "scorecard" and final["slow"].model_version is None
            assert "pays 100 % of invoices late" in final["slow"].reasons
            assert final["slow"].overdue == Money(amount_minor=500_000, currency="EUR")
            assert all(e.key == f"{tenant}:{e.debtorid}" for e in events())

            answer = await client.get("/v1/worklist")
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            # Probability of payment x amount at stake - cost: 0.82 x 5000.00 - 0.50 for "steady",
            # 0.09 x 5000.00 - 5.00 (a call) for "slow", 0.82 x 100.00 - 0.50 for "small".
            assert [i["debtor_id"] for i in items] == ["steady", "slow", "small"]
            for item in items:
                (score,) = (await client.get(f"/v1/debtors/{item['debtor_id']}/score")).json()["scores"]
                p_pay = round(1 - score["probability_late"], 4)
                assert (
                    item["expected_value_minor"] == round(p_pay * score["overdue_minor"]) - item["cost_minor"]
                )
            for bad in ({"collector": "a\x00b"}, {"currency": "usd"}, {"segment": "worst"}):
                refused = await client.get("/v1/worklist", params=bad)
                assert refused.status_code == 422, (bad, refused.text)
            high = (await client.get("/v1/worklist", params={"segment": "high"})).json()["items"]
            assert [(i["debtor_id"], i["action"]) for i in high] == [("slow", "call")]

            provision = (await client.get("/v1/provision", params={"currency": "EUR"})).json()
            assert provision["as_of"] == AS_OF.isoformat()
            (matrix,) = provision["matrices"]
            assert matrix["balance_minor"] == 500_000 + 500_000 + 10_000 + 1_000

            # `arrears scoring train --tenant` learns from the history the service projected from the
            # log: the 24 invoices paid by then are its examples.
            recorded = await train_from_log(database_url, tenant, tmp_path / "from-log")
            assert recorded.examples == 24 and recorded.version == 1
            assert recorded.trained_until == (D(2025, 10, 1) + dt.timedelta(days=15 * 7 + 70 + 1)).isoformat()

            # A model trained meanwhile is used from the next batch on, without a restart.
            artifacts.save(
                train(trained_model_examples()),
                model_dir,
                trained_from="2025-01-01",
                trained_until="2026-01-01",
                examples=480,
                metrics={},
            )
            await kafka_log.publish([profile(tenant, d, "v2") for d in ("steady", "slow")])

            async def rescored() -> dict[str, Any]:
                return {
                    d: (await client.get(f"/v1/debtors/{d}/score")).json()["scores"][0]
                    for d in ("steady", "slow")
                }

            async def new_model() -> bool:
                return all(s["model_version"] == 1 for s in (await rescored()).values())

            await until(new_model, "the new model version was not used")
            now = await rescored()
            assert {s["model_kind"] for s in now.values()} == {"gradient-boosting"}
            assert now["slow"]["probability_late"] > now["steady"]["probability_late"]
            assert (
                now["slow"]["reasons"] and now["slow"]["probability_late"] != final["slow"].probability_late
            )
            assert (await client.get("/v1/debtors/nobody/score")).status_code == 404
