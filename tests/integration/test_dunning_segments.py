"""Dunning takes each debtor's risk segment from its score events, so the policy's segment shifts
move the ladder: the default policy calls a high-risk debtor five days sooner and a low-risk one
five days later than one nobody scored. A debtor's cases are per currency and so are its scores:
each case takes the segment of its own currency, and scoring's write-off proposal for it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.collections import CollectionCommand
from contracts.money import Money
from contracts.policy import POLICY_PUBLISHED
from contracts.registry import decode_event
from contracts.scores import SCORE_CHANGED, ScoreChanged
from contracts.topics import COMMANDS
from services.dunning import store
from services.dunning.projection import DunningProjection
from services.runtime.consumer import Delivered
from services.runtime.database import make_engine, make_sessions
from services.runtime.migrations import upgrade
from services.runtime.outbox import write_outbox
from tests.integration.test_dunning_case_cache import day_started, delivered, record_of
from tests.unit.dunning_world import POLICY, Books

pytestmark = pytest.mark.integration


def scored(debtor: str, segment: str, currency: str = "EUR", write_off: bool = False) -> Delivered:
    data = ScoreChanged(
        as_of=dt.date(2024, 1, 31),
        score=80 if segment == "high" else 10,
        probability_late="0.8" if segment == "high" else "0.1",
        segment=segment,
        expected_days_to_settle=40,
        open=Money(amount_minor=0, currency=currency),
        overdue=Money(amount_minor=0, currency=currency),
        oldest_days_past_due=0,
        model_kind="scorecard",
        write_off_proposed=write_off,
        write_off_reasons=["expected recovery below the cost of the next action"] if write_off else [],
    )
    return record_of("collections.scores.v1", SCORE_CHANGED, data, debtor)


@pytest.fixture
async def sessions(
    new_database: Callable[[], Awaitable[str]],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(await new_database(), 4)
    try:
        await upgrade(engine, "dunning")
        yield make_sessions(engine)
    finally:
        await engine.dispose()


async def test_the_segment_of_a_score_event_shifts_the_ladder(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    projection = DunningProjection()

    async def apply(batch: Sequence[Delivered]) -> None:
        """One batch as the consumer loop applies it: what it emits goes to the outbox."""
        async with sessions() as session, session.begin():
            applied = await projection.apply(session, batch)
            await write_outbox(session, store.runtime, applied.messages)
        projection.batch_committed()

    await apply(
        [record_of("collections.policies.v1", POLICY_PUBLISHED, POLICY, None), day_started("2024-01-31")]
    )
    await apply(
        [
            scored("D-HIGH", "high"),
            scored("D-LOW", "low"),
            scored("D-LOW", "medium"),
            scored("D-LOW", "low"),
            # Scored in two currencies, USD last: the EUR case stays high, the USD case is low.
            scored("D-TWO", "high"),
            scored("D-TWO", "low", "USD", write_off=True),
        ]
    )
    await apply(
        [
            delivered(Books().issue("I1", 500_000, due="2024-03-01", issued="2024-01-31"), debtor=debtor)
            for debtor in ("D-HIGH", "D-LOW", "D-NONE", "D-TWO")
        ]
        + [
            delivered(
                Books(currency="USD").issue("I2", 500_000, due="2024-03-01", issued="2024-01-31"),
                debtor="D-TWO",
            )
        ]
    )
    day = dt.date(2024, 2, 1)
    while day <= dt.date(2024, 3, 25):
        await apply([day_started(day.isoformat())])
        day += dt.timedelta(days=1)

    formal_notice: dict[tuple[str, str], dt.date] = {}
    friendly: dict[tuple[str, str], dt.date] = {}
    async with sessions() as session:
        outbox = store.runtime.outbox
        rows = await session.execute(
            select(outbox.c.value).where(outbox.c.topic == COMMANDS.name).order_by(outbox.c.id)
        )
        for (value,) in rows:
            event = decode_event(value)
            if isinstance(event.data, CollectionCommand) and event.data.step == "formal_notice":
                key = (event.debtorid or "", event.data.case_id.rsplit(":", 1)[-1])
                formal_notice.setdefault(key, event.data.business_date)
            if isinstance(event.data, CollectionCommand) and event.data.step == "friendly_reminder":
                key = (event.debtorid or "", event.data.case_id.rsplit(":", 1)[-1])
                friendly.setdefault(key, event.data.business_date)
        segments = await session.execute(
            select(store.segments.c.debtor_id, store.segments.c.currency, store.segments.c.write_off_proposed)
            .where(store.segments.c.debtor_id == "D-TWO")
            .order_by(store.segments.c.currency)
        )
        assert [tuple(r) for r in segments] == [("D-TWO", "EUR", False), ("D-TWO", "USD", True)]
    # As the pure decider does for the same debtor (test_the_amount_band_and_the_risk_segment_...).
    # D-TWO's EUR case is high, as D-HIGH; its USD case (low) waits on the contact caps it shares
    # with the EUR case, past the end of this run.
    assert formal_notice == {
        ("D-HIGH", "EUR"): dt.date(2024, 3, 11),
        ("D-TWO", "EUR"): dt.date(2024, 3, 11),
        ("D-NONE", "EUR"): dt.date(2024, 3, 16),
        ("D-LOW", "EUR"): dt.date(2024, 3, 21),
    }
    # D-TWO's friendly reminders show each case's own segment. The courtesy reminders of both cases
    # went out on Feb 27 as one message, one contact under the caps, so EUR (high) goes the day after
    # its due date, Mar 2; USD (low) five days later, Mar 7. Had the USD score (the last) counted for
    # both, the EUR case would have waited until Mar 7 as well.
    assert (friendly[("D-TWO", "EUR")], friendly[("D-TWO", "USD")]) == (
        dt.date(2024, 3, 2),
        dt.date(2024, 3, 7),
    )
