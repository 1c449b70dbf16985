"""The IBM sample's invoices of January 2013 replayed day by day through ledger, dunning and notifier on real
Kafka and PostgreSQL: the reminders the SMTP server receives are the ones the default policy says,
checked against the CSV itself."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from contracts.registry import decode_event, encode_event
from contracts.topics import COMMANDS
from services.runtime.kafka_log import KafkaLog
from services.sample import ibm
from tests.infra.kafka_broker import KafkaBroker
from tests.integration.collections_stack import collections_stack
from tests.integration.conftest import settings_for

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"
ISSUED = (dt.date(2013, 1, 1), dt.date(2013, 2, 1))  # a month when most customers bill electronically
COURTESY_DAYS = 3  # the default policy's courtesy reminder, three days before the due date
CAPS = ((2, 7), (4, 30))  # at most 2 contacts in 7 days and 4 in 30 days per debtor


def subset() -> list[ibm.SampleInvoice]:
    return [i for i in ibm.load(SAMPLE) if ISSUED[0] <= i.invoice_date < ISSUED[1]]


def capped(sent_on: list[dt.date], day: dt.date) -> bool:
    return any(
        sum(1 for s in sent_on if day - s < dt.timedelta(days=period)) >= most for most, period in CAPS
    )


async def test_the_sample_gets_the_reminders_the_policy_says(
    kafka: KafkaBroker,
    kafka_log: KafkaLog,
    new_database: Callable[[], Awaitable[str]],
    tenant: str,
    tmp_path: Path,
) -> None:
    invoices = subset()
    days = ibm.events_by_day(invoices, tenant)
    last = max(days)
    settings = settings_for(await new_database(), kafka)
    async with collections_stack(settings, tenant, tmp_path / "letters") as stack:
        await stack.publish_policy(min(days))
        day = min(days)
        while day <= last:
            if day in days:
                body = b"[" + b",".join(encode_event(e) for e in days[day]) + b"]"
                async with stack.client("ledger", "erp") as api:
                    response = await api.post(
                        "/v1/events", content=body, headers={"content-type": "application/json"}
                    )
                    assert response.status_code == 202, response.text
            await stack.start_day(day)
            day += dt.timedelta(days=1)
        emails = list(stack.received.emails)

    commands = {
        e.data.command_id: e.data
        for e in (decode_event(r.value) for r in await kafka_log.read_all(COMMANDS.name))
        if e.tenantid == tenant and e.type != "collections.command.cancelled.v1"
    }
    by_number = {i.invoice_number: i for i in invoices}
    first_invoice: dict[str, ibm.SampleInvoice] = {}
    for i in sorted(invoices, key=lambda i: (i.invoice_date, i.invoice_number)):
        first_invoice.setdefault(i.customer_id, i)
    # The sample registers a debtor as its first invoice bills it: e-mail when electronically.
    electronic = {c for c, i in first_invoice.items() if ibm.profile_of(i).email}
    sent: dict[str, list[tuple[dt.date, set[str], str]]] = defaultdict(list)
    for message in emails:
        command_id = str(message["Message-ID"]).strip("<>").split("@")[0]
        if command_id not in commands:
            continue  # another test's tenant, replayed by this run's services
        command = commands[command_id]
        listed = set(re.findall(r"Invoice (\S+?),", message.get_content())) or set(
            re.findall(r"(?:Счёт|发票) (\S+?)[,\uff0c]", message.get_content())
        )
        assert listed == {i.invoice_id for i in command.items}, "the e-mail lists every item of its command"
        sent[command.case_id.split(":")[0]].append((command.business_date, listed, command.step))

    assert sent, "reminders were sent"
    for debtor, messages in sent.items():
        assert debtor in electronic, f"{debtor} is billed on paper and never consented to e-mail"
        for on, listed, step in messages:
            for number in listed:
                invoice = by_number[number]
                assert invoice.invoice_date <= on < invoice.settled_date, f"{number} was not open on {on}"
                if step == "courtesy_reminder":
                    assert 0 < (invoice.due_date - on).days <= COURTESY_DAYS
                else:
                    assert on > invoice.due_date, f"{step} for {number} before it was due"

    checked = 0
    # Every invoice of an e-mail debtor still open three days before its due date got its courtesy
    # reminder on that day, unless the debtor's contact caps were full.
    for invoice in invoices:
        reminder_day = invoice.due_date - dt.timedelta(days=COURTESY_DAYS)
        if (
            invoice.customer_id not in electronic
            or invoice.settled_date <= reminder_day
            or reminder_day > last
        ):
            continue
        if reminder_day < invoice.invoice_date:
            continue
        contacts = [on for on, _, _ in sent.get(invoice.customer_id, []) if on < reminder_day]
        got = [
            listed
            for on, listed, step in sent.get(invoice.customer_id, [])
            if step == "courtesy_reminder" and on == reminder_day
        ]
        if capped(contacts, reminder_day):
            continue
        checked += 1
        assert any(invoice.invoice_number in listed for listed in got), (
            f"no courtesy reminder for {invoice.invoice_number} of {invoice.customer_id} on {reminder_day}"
        )
    assert checked >= 10, "the sample has invoices that must be reminded"
