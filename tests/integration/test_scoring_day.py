"""Scoring and the business day on a real broker and database: a day re-scores every debtor with an
open item, chunk by chunk, and publishes only what changed materially; and a debtor's rows are
written only while they are as the batch read them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.collections import CaseNote, Recorded
from contracts.money import Money
from contracts.receivables import ReceivableBalance
from contracts.registry import encode_event, make_event
from contracts.topics import CONTACTS
from services.runtime import clock
from services.runtime.consumer import Delivered, StaleState
from services.runtime.database import make_engine, make_sessions
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message, Record
from services.runtime.migrations import upgrade
from services.scoring import projection as scoring_projection
from services.scoring import store
from services.scoring.models_on_disk import ModelSource
from services.scoring.projection import ScoringProjection
from services.stack import Stack, open_stack
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import from_test_start, settings_for
from tests.integration.test_scoring_service import balance, profile, score_events, until

pytestmark = pytest.mark.integration

D = dt.date
AT = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def paid_history(
    tenant: str, debtor: str, first: D, open_issued: D | None, open_amount: int = 50_000
) -> list[Any]:
    """Eight invoices fifteen days apart, each paid on its due date, and one open if `open_issued`."""
    out = []
    for n in range(8):
        issued = first + dt.timedelta(days=15 * n)
        out += balance(tenant, debtor, f"{debtor}-{n}", issued, 100_000, issued + dt.timedelta(30))
    if open_issued is not None:
        out += balance(tenant, debtor, f"{debtor}-open", open_issued, open_amount, None)
    return out


async def test_a_business_day_rescores_every_debtor_with_an_open_item_and_publishes_material_changes(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    url = await new_database()
    settings = settings_for(url, kafka, scoring_model_dir=tmp_path / "model")

    async def prepare(stack: Stack) -> None:
        stack.scoring.projection.day_chunk = 1  # every debtor in a chunk (and a transaction) of its own
        await from_test_start(stack)

    async with (
        score_events(kafka, tenant) as events,
        open_stack(settings, ["scoring"], prepare=prepare) as stack,
    ):
        service = stack.scoring
        await service.consumer.started.wait()
        # "quiet" last paid on Feb 13 and owes EUR 500.00 due Mar 31; "lost" last paid on Feb 13
        # and owes EUR 30.00 due Jan 15; "fresh" last paid on Apr 4 and owes EUR 500.00 due
        # May 5; "done" owes nothing. The facts end on Apr 5.
        await kafka_log.publish(
            paid_history(tenant, "quiet", D(2025, 10, 1), D(2026, 3, 1))
            + paid_history(tenant, "lost", D(2025, 10, 1), D(2025, 12, 16), 3_000)
            + paid_history(tenant, "fresh", D(2025, 11, 20), D(2026, 4, 5))
            + paid_history(tenant, "done", D(2025, 10, 1), None)
        )

        async def scored_on(day: D) -> dict[str, Any]:
            async with stack.sessions() as session:
                s = store.scores
                rows = await session.execute(select(s).where(s.c.tenant_id == tenant))
                return {r.debtor_id: r for r in rows if r.as_of == day}

        async def all_scored() -> bool:
            return set(await scored_on(D(2026, 4, 5))) == {"quiet", "lost", "fresh", "done"}

        async def applied() -> bool:
            return await service.consumer.lag() == 0

        # A debtor is scored as of its tenant's business date when the batch holding its facts is
        # applied; when the facts come in more than one batch, a debtor of an early one is scored
        # as of an earlier date. Touched again once everything is applied, every debtor is scored
        # as of the last date of the facts.
        await until(applied, "the facts were not applied")
        await kafka_log.publish([profile(tenant, d, "v1") for d in ("quiet", "lost", "fresh", "done")])
        # Applied before the day starts: in the day's batch they would have the batch score "done"
        # (which owes nothing, so no business day scores it) as of the day too.
        await until(applied, "the profiles were not applied")
        await until(all_scored, "the facts were not scored")
        before = await scored_on(D(2026, 4, 5))
        # Scorecard: 8 invoices on time give 0.9 / 11 = 0.08; "quiet" is overdue (+0.10).
        assert (before["quiet"].score, before["fresh"].score) == (18, 8)
        # "lost", 80 days past due: 82 % of EUR 30.00 is worth a claim letter (EUR 15.00).
        assert (before["lost"].score, before["lost"].write_off_proposed) == (18, False)
        published_before = len(events())

        # Apr 20: no new facts, but "quiet" and "lost" have not paid for 66 days (+0.10): 28, a
        # material move. "lost" is 95 days past due: 72 % of EUR 30.00 is below the cost of an
        # agency placement (EUR 50.00), so its debt is proposed for write-off.
        await clock.advance(kafka_log, tenant, D(2026, 4, 20), AT, D(2026, 4, 20))

        async def rescored() -> bool:
            return set(await scored_on(D(2026, 4, 20))) == {"quiet", "lost", "fresh"}

        await until(rescored, "the business day did not score the debtors with open items again")
        after = await scored_on(D(2026, 4, 20))
        assert after["quiet"].score == 28 and after["quiet"].oldest_days_past_due == 20
        assert after["fresh"].score == 8  # moved nothing: scored again, not published
        assert "done" in await scored_on(D(2026, 4, 5))  # nothing open: left as it was

        async def published() -> bool:
            return len([e for e in events() if e.data.as_of == D(2026, 4, 20)]) >= 2

        await until(published, "the material changes were not published")
        day_events = sorted(
            (e for e in events()[published_before:] if e.data.as_of == D(2026, 4, 20)),
            key=lambda e: e.debtorid or "",
        )
        assert [(e.debtorid, e.data.score) for e in day_events] == [("lost", 28), ("quiet", 28)]
        lost, quiet = (e.data for e in day_events)
        assert quiet.previous_segment == "low" and not quiet.write_off_proposed
        assert quiet.overdue == Money(amount_minor=50_000, currency="EUR")
        reason = (
            "expected recovery EUR 21.55 (72% of EUR 30.00) is below the cost of the next action"
            " (agency, EUR 50.00)"
        )
        assert lost.write_off_proposed and lost.write_off_reasons == [reason]

        key = await stack.create_key(tenant, "collector-1", "collector", on=["scoring"])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.app("scoring")),
            base_url="http://scoring",
            headers={"X-API-Key": key},
        ) as client:
            answer = await client.get("/v1/write-off-proposals")
            assert answer.status_code == 200, answer.text
            (item,) = answer.json()["items"]
            assert (item["debtor_id"], item["proposed"], item["reasons"]) == ("lost", True, [reason])
            assert [(i["invoice_id"], i["reasons"]) for i in item["invoices"]] == [("lost-open", [reason])]
            (mine,) = (await client.get("/v1/debtors/lost/score")).json()["scores"]
            assert mine["write_off"] == {"proposed": True, "reasons": [reason]}

            # Anna notes a call with "quiet": its worklist row is hers.
            await kafka_log.publish([note(tenant, "quiet", "anna")])

            async def worklist(**params: Any) -> list[tuple[str, str | None]]:
                answer = await client.get("/v1/worklist", params=params)
                return [(i["debtor_id"], i["collector"]) for i in answer.json()["items"]]

            async def assigned() -> bool:
                return await worklist(collector="anna") == [("quiet", "anna")]

            await until(assigned, "the collector filter did not find the debtor Anna worked")
            assert await worklist() == [("quiet", "anna"), ("lost", None)]

        # The same worklist from the command line, read from the database.
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")},
            "ARREARS_DATABASE_URL": url,
        }
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.cli", "scoring", "worklist", "--tenant", tenant),
            *("--collector", "anna", "--json"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        (row,) = json.loads(stdout)["items"]
        assert (row["debtor_id"], row["collector"], row["action"]) == ("quiet", "anna", "reminder")


def note(tenant: str, debtor: str, collector: str) -> Message:
    data = CaseNote(
        note_id=f"{debtor}-note",
        text="called, will pay next week",
        recorded=Recorded(recorded_by=collector, business_date=D(2026, 4, 20)),
    )
    event = make_event(
        "ar.case.noted.v1",
        data,
        event_id=f"{tenant}-{debtor}-note",
        tenant_id=tenant,
        debtor_id=debtor,
        source="arrears/dunning",
        time=AT,
    )
    return Message(CONTACTS.name, event.key.encode(), encode_event(event))


TENANT, DEBTOR = "acme", "D-1"
_offsets = count()


def delivered(invoice: str, amount: int) -> Delivered:
    offset = next(_offsets)
    issued = D(2026, 1, 5)
    data = ReceivableBalance(
        invoice_id=invoice,
        issue_date=issued,
        due_date=issued + dt.timedelta(days=30),
        amount=Money(amount_minor=amount, currency="EUR"),
        outstanding=Money(amount_minor=amount, currency="EUR"),
        change=Money(amount_minor=amount, currency="EUR"),
        status="open",
        effective_date=issued,
        cause_type="ar.invoice.issued.v1",
        cause_id=invoice,
    )
    event = make_event(
        "ar.receivable.opened.v1",
        data,
        event_id=f"e-{offset}",
        tenant_id=TENANT,
        debtor_id=DEBTOR,
        source="arrears/ledger",
        time=AT,
    )
    return Delivered(
        Record("ar.receivables.v1", 0, offset, event.key.encode(), b"", (), 1_767_600_000_000), event
    )


async def commit(
    sessions: async_sessionmaker[AsyncSession], projection: ScoringProjection, batch: Sequence[Any]
) -> None:
    async with sessions() as session, session.begin():
        await projection.apply(session, batch)


@pytest.mark.parametrize("existing", [False, True], ids=["new debtor", "known debtor"])
async def test_a_second_writer_between_read_and_write_fails_the_batch_instead_of_losing_its_update(
    new_database: Callable[[], Awaitable[str]],
    existing: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    engine = make_engine(await new_database())
    sessions = make_sessions(engine)
    try:
        await upgrade(engine, "scoring")
        first, second = (ScoringProjection(ModelSource(tmp_path)) for _ in range(2))
        if existing:
            await commit(sessions, first, [delivered("I0", 100)])

        # The first member has read the debtor when the second writes it and commits first.
        save = scoring_projection.save_debtors

        async def save_after_the_other_member(*args: Any) -> Any:
            monkeypatch.setattr(scoring_projection, "save_debtors", save)
            await commit(sessions, second, [delivered("I2", 300)])
            return await save(*args)

        monkeypatch.setattr(scoring_projection, "save_debtors", save_after_the_other_member)
        with pytest.raises(StaleState):
            await commit(sessions, first, [delivered("I1", 200)])

        # Read again (as the consumer loop does from the stored offsets): both invoices survive and
        # the score counts both.
        await commit(sessions, first, [delivered("I1", 200)])
        async with sessions() as session:
            t = store.invoices
            invoices = set((await session.scalars(select(t.c.invoice_id))).all())
            s = store.scores
            (open_minor,) = (await session.scalars(select(s.c.open_minor))).all()
        assert invoices == ({"I0"} if existing else set()) | {"I1", "I2"}
        assert open_minor == (100 if existing else 0) + 200 + 300
    finally:
        await engine.dispose()
