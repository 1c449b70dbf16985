"""The dunning consumer keeps decoded cases between batches: only what committed, and never a case
whose row another writer changed since. And it writes a case only while its row is as the batch read
it: a second writer in between (another member, mid-rebalance) fails the batch, never loses its
update."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from itertools import count
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.clock import BusinessDayStarted
from contracts.envelope import EventData
from contracts.policy import POLICY_PUBLISHED
from contracts.registry import make_event
from services.dunning import store as dunning_store
from services.dunning.domain import Fact, load_case_json
from services.dunning.projection import DunningProjection
from services.dunning.store import CaseChanged
from services.runtime.consumer import Delivered, StaleOffsets
from services.runtime.database import make_engine, make_sessions
from services.runtime.log import Record
from services.runtime.migrations import upgrade
from tests.unit.dunning_world import POLICY, Books

pytestmark = pytest.mark.integration

TENANT, DEBTOR = "acme", "D-1"
_offsets = count()


def delivered(fact: Fact, debtor: str = DEBTOR, tenant: str = TENANT) -> Delivered:
    return record_of("ar.receivables.v1", fact.type, fact.data, debtor, tenant)


def record_of(
    topic: str, event_type: str, data: EventData, debtor: str | None, tenant: str = TENANT
) -> Delivered:
    offset = next(_offsets)
    event = make_event(
        event_type,
        data,
        event_id=f"fact-{offset}",
        tenant_id=tenant,
        debtor_id=debtor,
        source="arrears/test",
        time=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    record = Record(topic, 0, offset, event.key.encode(), b"", (), 1_772_323_200_000)
    return Delivered(record, event)


def day_started(day: str, tenant: str = TENANT) -> Delivered:
    data = BusinessDayStarted(business_date=dt.date.fromisoformat(day))
    return record_of("ar.clock.v1", "ar.businessday.started.v1", data, None, tenant)


async def apply(
    sessions: async_sessionmaker[AsyncSession],
    projection: DunningProjection,
    fact: Fact,
    *,
    commit: bool = True,
) -> None:
    """One batch of one fact, committed (and reported so) or rolled back (and reported failed)."""
    async with sessions() as session:
        await session.begin()
        await projection.apply(session, [delivered(fact)])
        if commit:
            await session.commit()
            projection.batch_committed()
        else:
            await session.rollback()
            projection.batch_failed()


async def apply_batch(
    sessions: async_sessionmaker[AsyncSession], projection: DunningProjection, batch: Sequence[Delivered]
) -> None:
    """One batch the way the consumer loop applies it: committed, or rolled back and reported failed."""
    try:
        async with sessions() as session, session.begin():
            await projection.apply(session, batch)
    except BaseException:
        projection.batch_failed()
        raise
    projection.batch_committed()


async def open_items(sessions: async_sessionmaker[AsyncSession], debtor: str = DEBTOR) -> dict[str, int]:
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT state FROM dunning.cases WHERE tenant_id = :t AND debtor_id = :d"),
                {"t": TENANT, "d": debtor},
            )
        ).all()
    (case,) = [load_case_json(r.state) for r in rows]
    return {i.invoice_id: i.outstanding for i in case.open_items()}


async def test_cached_cases_are_committed_ones_and_a_row_changed_elsewhere_is_read_again(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    engine = make_engine(await new_database(), 4)
    try:
        await upgrade(engine, "dunning")
        sessions = make_sessions(engine)
        books = Books()
        member = DunningProjection(case_cache_size=100)

        await apply(sessions, member, books.issue("I1", 100, due="2026-02-01"))
        await apply(sessions, member, books.issue("I2", 50, due="2026-02-10"))
        assert (member.cache.hits, member.cache.misses) == (1, 0)  # the case came from the cache

        # Another member of the group (or a business day's slice) writes the same case meanwhile.
        await apply(sessions, DunningProjection(), books.pay("I1", 100, on="2026-02-20"))
        await apply(sessions, member, books.issue("I3", 25, due="2026-03-01"))
        assert member.cache.misses == 1  # its row has another version now: decoded again
        assert await open_items(sessions) == {"I2": 50, "I3": 25}  # the payment is not lost

        # A batch that does not commit leaves nothing in the cache.
        await apply(sessions, member, books.pay("I2", 50, on="2026-02-21"), commit=False)
        await apply(sessions, member, books.issue("I4", 10, due="2026-03-05"))
        assert member.cache.misses == 2
        assert await open_items(sessions) == {"I2": 50, "I3": 25, "I4": 10}

        # A change of partition assignment forgets everything.
        member.partitions_changed()
        await apply(sessions, member, books.pay("I4", 10, on="2026-03-06"))
        assert member.cache.misses == 3
        assert await open_items(sessions) == {"I2": 50, "I3": 25}
    finally:
        await engine.dispose()


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


def once(action: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """`action` the first time only (a retried batch meets no second writer)."""
    done: list[bool] = []

    async def run() -> None:
        if not done:
            done.append(True)
            await action()

    return run


def after_reading_cases(member: DunningProjection, meanwhile: Callable[[], Awaitable[None]]) -> None:
    """Let `meanwhile` run (and commit) right after the member's batch has read its cases."""
    read = member._load_debtors

    async def load(session: AsyncSession, work: Any, keys: Iterable[tuple[str, str]]) -> None:
        await read(session, work, keys)
        await meanwhile()

    member._load_debtors = load  # type: ignore[method-assign]


async def test_a_case_changed_between_read_and_write_fails_the_batch_instead_of_losing_the_change(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    books = Books()
    member = DunningProjection(case_cache_size=100)
    await apply_batch(sessions, member, [delivered(books.issue("I1", 100, due="2026-02-01"))])

    # Another member applies a payment to the same case after this member read it.
    payment = delivered(books.pay("I1", 100, on="2026-02-20"))
    after_reading_cases(member, once(lambda: apply_batch(sessions, DunningProjection(), [payment])))
    batch = [delivered(books.issue("I2", 50, due="2026-02-10"))]
    with pytest.raises(StaleOffsets) as caught:
        await apply_batch(sessions, member, batch)
    assert isinstance(caught.value, CaseChanged) and caught.value.cases == [(TENANT, f"{DEBTOR}:EUR")]
    assert await open_items(sessions) == {}, "the payment stands; the stale write did not overwrite it"

    # The consumer loop re-seeks and reads the batch again: both changes are in the case.
    member.partitions_changed()
    await apply_batch(sessions, member, batch)
    assert await open_items(sessions) == {"I2": 50}


async def test_a_case_another_writer_opened_after_the_read_is_not_overwritten(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    books = Books()
    member = DunningProjection(case_cache_size=100)
    elsewhere = delivered(books.issue("I9", 70, due="2026-02-01"), debtor="D-2")
    after_reading_cases(member, once(lambda: apply_batch(sessions, DunningProjection(), [elsewhere])))
    batch = [delivered(books.issue("I1", 100, due="2026-02-01"), debtor="D-2")]
    with pytest.raises(CaseChanged):
        await apply_batch(sessions, member, batch)  # it read no case of D-2; now there is one
    assert await open_items(sessions, "D-2") == {"I9": 70}

    member.partitions_changed()
    await apply_batch(sessions, member, batch)
    assert await open_items(sessions, "D-2") == {"I9": 70, "I1": 100}


async def test_a_business_day_slice_does_not_overwrite_a_case_changed_after_it_read_it(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    books = Books()
    member = DunningProjection(case_cache_size=100)
    policy = record_of("collections.policies.v1", POLICY_PUBLISHED, POLICY, None)
    await apply_batch(sessions, member, [policy, day_started("2026-01-05")])
    await apply_batch(sessions, member, [delivered(books.issue("I1", 100_000, due="2026-01-10"))])

    # The day's slice reads the due case; another member applies a payment before the slice writes.
    payment = delivered(books.pay("I1", 100_000, on="2026-01-20"))
    meanwhile = once(lambda: apply_batch(sessions, DunningProjection(), [payment]))
    read_chunk = dunning_store.read_chunk

    async def read_then_pay(session: AsyncSession, tenant: str, debtors: Sequence[str]) -> Any:
        chunk = await read_chunk(session, tenant, debtors)
        await meanwhile()
        return chunk

    monkeypatch.setattr(dunning_store, "read_chunk", read_then_pay)
    day = [day_started("2026-03-01")]
    with pytest.raises(CaseChanged):
        await apply_batch(sessions, member, day)
    assert await open_items(sessions) == {}, "the payment stands"

    member.partitions_changed()
    await apply_batch(sessions, member, day)
    assert await open_items(sessions) == {}
    async with sessions() as session:
        status = await session.scalar(
            text("SELECT status FROM dunning.cases WHERE debtor_id = :d"), {"d": DEBTOR}
        )
    assert status == "closed", "decided from the paid case, not from the state read before the payment"
