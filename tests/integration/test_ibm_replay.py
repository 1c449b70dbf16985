"""The public IBM sample replayed day by day through the ledger API and Kafka, checked against an
independent computation from the CSV itself."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from contracts.registry import encode_event
from services.runtime import clock
from services.runtime.kafka_log import KafkaLog
from services.sample import ibm
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.conftest import ledger_stack, settings_for

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"


def expected_aging(as_of: dt.date) -> dict[str, int]:
    """Straight from the CSV: an invoice is open from its date until the day it was settled."""

    def day(text: str) -> dt.date:
        month, dd, year = (int(p) for p in text.split("/"))
        return dt.date(year, month, dd)

    buckets: Counter[str] = Counter()
    with SAMPLE.open() as handle:
        for row in csv.DictReader(handle):
            if day(row["InvoiceDate"]) <= as_of < day(row["SettledDate"]):
                late = (as_of - day(row["DueDate"])).days
                label = next(
                    (
                        name
                        for bound, name in [(0, "current"), (30, "1-30"), (60, "31-60"), (90, "61-90")]
                        if late <= bound
                    ),
                    "91-180",
                )
                buckets[label] += int(Decimal(row["InvoiceAmount"]) * 100)
    return dict(buckets)


@pytest.mark.skipif(not SAMPLE.is_file(), reason="the shared sample data is not beside the repository")
async def test_replayed_sample_ages_as_the_csv_says(
    kafka: KafkaBroker, new_database: Callable[[], Awaitable[str]], kafka_log: KafkaLog, tenant: str
) -> None:
    days = ibm.events_by_day(ibm.load(SAMPLE), tenant)
    async with (
        ledger_stack(settings_for(await new_database(), kafka), tenant) as stack,
        stack.client() as api,
    ):
        for day, events in days.items():
            body = b"[" + b",".join(encode_event(e) for e in events) + b"]"
            response = await api.post(
                "/v1/events", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 202 and orjson.loads(response.content)["accepted"] == len(events)
            await kafka_log.publish([clock.day_started(tenant, day, dt.datetime.now(dt.UTC))])
        await stack.caught_up()

        for as_of in (dt.date(2012, 12, 31), dt.date(2013, 6, 30)):
            report = (await api.get("/v1/aging", params={"as_of": as_of.isoformat()})).json()
            got = {k: v for k, v in report["currencies"]["USD"]["buckets_minor"].items() if v}
            assert got == expected_aging(as_of), as_of
        assert (await api.get("/v1/business-date")).json()["business_date"] == max(days).isoformat()
        current = (await api.get("/v1/aging")).json()
        assert current["as_of"] == max(days).isoformat()
        assert current["currencies"] == {}  # every sample invoice is settled by the last day
