"""The business clock: one `ar.businessday.started.v1` per tenant and day on `ar.clock.v1`."""

from __future__ import annotations

import datetime as dt

from contracts.clock import BusinessDayStarted, clock_event_id
from contracts.registry import decode_event, encode_event, make_event
from contracts.topics import CLOCK
from services.runtime.log import EventLog, Message

SOURCE = "arrears/clock"


def days_to_start(last: dt.date | None, to: dt.date, start: dt.date | None = None) -> list[dt.date]:
    """The days after `last` (or from `start`) up to `to`; only `to` when the clock never ran."""
    first = start or (last + dt.timedelta(days=1) if last else to)
    return [first + dt.timedelta(days=n) for n in range((to - first).days + 1)]


async def last_business_date(event_log: EventLog, tenant_id: str) -> dt.date | None:
    last: dt.date | None = None
    for record in await event_log.read_all(CLOCK.name):
        event = decode_event(record.value)
        if event.tenantid == tenant_id and isinstance(event.data, BusinessDayStarted):
            last = max(last or event.data.business_date, event.data.business_date)
    return last


def day_started(tenant_id: str, day: dt.date, now: dt.datetime) -> Message:
    event = make_event(
        "ar.businessday.started.v1",
        BusinessDayStarted(business_date=day),
        event_id=clock_event_id(tenant_id, day),
        tenant_id=tenant_id,
        source=SOURCE,
        time=now,
    )
    return Message(CLOCK.name, tenant_id.encode(), encode_event(event))


async def advance(
    event_log: EventLog, tenant_id: str, to: dt.date, now: dt.datetime, start: dt.date | None = None
) -> list[dt.date]:
    days = days_to_start(await last_business_date(event_log, tenant_id), to, start)
    await event_log.publish([day_started(tenant_id, day, now) for day in days])
    return days
