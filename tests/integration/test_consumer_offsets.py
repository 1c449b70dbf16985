"""The consumer loop's stored offsets on a real database: a batch moves every partition it holds in
one statement, and only from where this member left it; a partition another member moved (or
stored first) fails the whole batch, and nothing of it is stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.topics import JOURNAL
from services.ledger import store
from services.ledger.main import LedgerService
from services.runtime.consumer import Applied, ConsumerLoop, Delivered, StaleOffsets
from services.runtime.log import Record
from services.runtime.process import Resources, open_resources
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import settings_for

pytestmark = pytest.mark.integration

GROUP = "offsets-test"
TOPIC = JOURNAL.name


class Nothing:
    group_id = GROUP
    topics: tuple[str, ...] = (TOPIC,)

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        return Applied()


@contextlib.asynccontextmanager
async def member(database_url: str, kafka: KafkaBroker) -> AsyncIterator[tuple[ConsumerLoop, Resources]]:
    async with open_resources(settings_for(database_url, kafka)) as resources:
        await LedgerService(resources).migrate()
        yield ConsumerLoop(Nothing(), resources.sessions, store.runtime, resources.event_log), resources


def _records(partition: int, offsets: range) -> list[Record]:
    return [Record(TOPIC, partition, offset, None, b"{}", (), 0) for offset in offsets]


async def _advance(
    loop: ConsumerLoop, resources: Resources, records: list[Record]
) -> dict[tuple[str, int], int]:
    async with resources.sessions() as session, session.begin():
        return await loop._advance_offsets(session, records)


async def _stored(resources: Resources) -> dict[int, int]:
    async with resources.sessions() as session:
        rows = await session.execute(
            store.runtime.consumer_offsets.select().where(store.runtime.consumer_offsets.c.group_id == GROUP)
        )
        return {row.partition: row.next_offset for row in rows}


async def test_a_batch_moves_each_of_its_partitions_only_from_where_this_member_left_it(
    new_database: object, kafka: KafkaBroker
) -> None:
    url = await new_database()  # type: ignore[operator]
    async with member(url, kafka) as (loop, resources):
        loop._positions = {(TOPIC, 0): None, (TOPIC, 1): None, (TOPIC, 2): None, (TOPIC, 3): None}
        moved = await _advance(loop, resources, _records(0, range(0, 5)) + _records(1, range(0, 2)))
        assert moved == {(TOPIC, 0): 5, (TOPIC, 1): 2}
        assert await _stored(resources) == {0: 5, 1: 2}

        loop._positions.update(moved)
        loop._positions.update(await _advance(loop, resources, _records(0, range(5, 8))))
        assert await _stored(resources) == {0: 8, 1: 2}

        # Another member moved partition 1 on: this member's batch over partitions 0 and 1 fails
        # naming it, and partition 0 stays where it was.
        async with resources.sessions() as session, session.begin():
            await session.execute(
                store.runtime.consumer_offsets.update()
                .where(store.runtime.consumer_offsets.c.partition == 1)
                .values(next_offset=20)
            )
        with pytest.raises(StaleOffsets) as caught:
            await _advance(loop, resources, _records(0, range(8, 10)) + _records(1, range(2, 4)))
        assert caught.value.args == ((TOPIC, 1),)
        assert await _stored(resources) == {0: 8, 1: 20}

        # A partition this member has seen no offset for, but another member stored one first.
        async with resources.sessions() as session, session.begin():
            await session.execute(
                store.runtime.consumer_offsets.insert().values(
                    group_id=GROUP, topic=TOPIC, partition=2, next_offset=7
                )
            )
        with pytest.raises(StaleOffsets) as caught:
            await _advance(loop, resources, _records(2, range(0, 3)) + _records(3, range(0, 1)))
        assert caught.value.args == ((TOPIC, 2),)
        assert await _stored(resources) == {0: 8, 1: 20, 2: 7}

        # A partition this member does not own.
        with pytest.raises(StaleOffsets):
            await _advance(loop, resources, _records(4, range(0, 1)))
        assert await _stored(resources) == {0: 8, 1: 20, 2: 7}
