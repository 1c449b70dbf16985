"""What a fault run checks the ledger against: how far behind it is, and what it shows for the
invoices the poster got a 202 for, through its HTTP API (statements, aging) and, for the details,
its tables."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from chaos.poster import Poster
from chaos.processes import now
from chaos.workload import InvoiceBook, Stream
from contracts.collections import CollectionCommand
from contracts.topics import CLOCK, COMMANDS, DEBTORS, JOURNAL, Topic
from services.dunning.projection import DunningProjection
from services.ledger.projection import LedgerProjection
from services.notifier.projection import NotifierProjection
from services.runtime.embedded_postgres import sqlalchemy_to_libpq

LEDGER_GROUP = "ledger"
LEDGER_TOPICS: tuple[Topic, ...] = (JOURNAL, DEBTORS, CLOCK)


async def ledger_backlog(database_url: str, bootstrap_servers: str) -> tuple[int, int]:
    """(rows waiting in the ledger's outbox, records in the ledger's topics beyond the offsets its
    database has committed). The outbox is read first: what it held before is in the log by the time
    the offsets are compared."""
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=5)
    try:
        outbox = int(await connection.fetchval("SELECT count(*) FROM ledger.outbox"))
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
        await probe.start()
        try:
            partitions = [TopicPartition(t.name, p) for t in LEDGER_TOPICS for p in range(t.partitions)]
            ends = await probe.end_offsets(partitions)
        finally:
            await probe.stop()
        rows = await connection.fetch(
            "SELECT topic, partition, next_offset FROM ledger.consumer_offsets WHERE group_id = $1",
            LEDGER_GROUP,
        )
    finally:
        await connection.close()
    committed = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    lag = sum(max(0, end - committed.get((tp.topic, tp.partition), 0)) for tp, end in ends.items())
    return outbox, lag


async def wait_caught_up(database_url: str, bootstrap_servers: str, timeout_s: float) -> int:
    """Wait until the ledger's outbox is empty and its consumer group has applied everything in its
    topics, twice in a row; the backlog left (outbox rows + records; 0: caught up; -1: could not be
    measured)."""
    deadline = now() + timeout_s
    quiet = 0
    while True:
        try:
            outbox, lag = await asyncio.wait_for(ledger_backlog(database_url, bootstrap_servers), 15)
            backlog = outbox + lag
        except Exception:
            backlog = -1
        quiet = quiet + 1 if backlog == 0 else 0
        if quiet == 2 or (backlog != 0 and now() > deadline):
            return backlog
        await asyncio.sleep(0.25)


# --- what was applied ------------------------------------------------------------------------------


@dataclass
class Findings:
    """What the ledger shows for the invoices the poster got a 202 for."""

    acknowledged: int
    lost: list[str]
    """Invoice ids answered 202 that no statement lists."""
    lost_claimed: int
    """Of those, how many the ledger had claimed (`ingested_events`): accepted, then never applied."""
    lost_in_log: int
    """Of those, how many are in the journal topic: published, then never applied (-1: not looked)."""
    wrong: list[str]
    """Listed, but with another debtor, amount, outstanding amount or currency."""
    unconfirmed: int
    unconfirmed_applied: int
    phantoms: list[str]
    """Listed invoices of this run that were never posted, or listed twice."""
    movements: dict[str, int]
    """Invoice id -> balance movements, for the invoices that do not have exactly one."""
    expected_minor: dict[str, int]
    statements_minor: dict[str, int]
    aging_minor: dict[str, int]
    lag: int
    """Outbox rows and records the ledger had not applied when it was checked (-1: unknown)."""
    statuses: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    shown: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)
    """Each debtor's statement as the API answered it."""

    def problems(self) -> list[str]:
        found = []
        if self.lag != 0:
            found.append(f"the ledger did not catch up: {self.lag} outbox rows and records not applied")
        if self.lost:
            found.append(
                f"lost {len(self.lost)} of {self.acknowledged} accepted events ({self.lost_claimed} of"
                f" them claimed as ingested, {self.lost_in_log} in the journal topic): {self.lost[:10]}"
            )
        if self.wrong:
            found.append(f"{len(self.wrong)} invoices on a statement with wrong figures: {self.wrong[:10]}")
        if self.phantoms:
            found.append(
                f"{len(self.phantoms)} invoices listed that were not posted once: {self.phantoms[:10]}"
            )
        duplicated = {i: n for i, n in self.movements.items() if n > 1}
        if duplicated:
            found.append(
                f"{len(duplicated)} invoices applied more than once (opening movements):"
                f" {sorted(duplicated.items())[:10]}"
            )
        if self.aging_minor != self.expected_minor:
            found.append(
                f"aging per currency {self.aging_minor} != accepted invoices {self.expected_minor}"
                f" (difference {_difference(self.aging_minor, self.expected_minor)})"
            )
        if self.statements_minor != self.aging_minor:
            found.append(
                f"statement balances per currency {self.statements_minor} != aging {self.aging_minor}"
                f" (difference {_difference(self.statements_minor, self.aging_minor)})"
            )
        if self.conflicts:
            found.append(f"{self.conflicts} events answered conflict")
        return found

    def summary(self) -> str:
        return (
            f"{self.acknowledged} invoices answered 202 ({dict(self.statuses)}), {len(self.lost)} lost,"
            f" {sum(1 for n in self.movements.values() if n > 1)} duplicated, {self.unconfirmed} never"
            f" answered 202 ({self.unconfirmed_applied} of them applied), backlog {self.lag}"
        )


def _difference(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {c: left.get(c, 0) - right.get(c, 0) for c in sorted(left.keys() | right.keys())}


async def statements(
    urls: Sequence[str], api_key: str, debtors: Iterable[str], as_of: dt.date
) -> dict[str, dict[str, Any] | None]:
    """Each debtor's statement through the API, the requests spread over the ledgers (None: the
    ledger knows no such debtor)."""
    gate = asyncio.Semaphore(8 * len(urls))
    found: dict[str, dict[str, Any] | None] = {}
    async with httpx.AsyncClient(headers={"X-API-Key": api_key}, timeout=60) as client:

        async def one(n: int, debtor: str) -> None:
            url = f"{urls[n % len(urls)]}/v1/debtors/{debtor}/statement"
            async with gate:
                response = await client.get(url, params={"as_of": str(as_of)})
            if response.status_code == 404:
                found[debtor] = None
                return
            response.raise_for_status()
            found[debtor] = response.json()

        await asyncio.gather(*(one(n, d) for n, d in enumerate(debtors)))
    return found


async def aging(url: str, api_key: str, as_of: dt.date) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as client:
        response = await client.get("/v1/aging", params={"as_of": str(as_of)})
    response.raise_for_status()
    return {c: int(v["total_minor"]) for c, v in response.json()["currencies"].items()}


async def events_in_log(
    bootstrap_servers: str, topic: Topic, event_ids: set[str], timeout_s: float = 30
) -> set[str]:
    """Which of the event ids are in the topic (read from the beginning)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    found: set[str] = set()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        deadline = now() + timeout_s
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]] and now() < deadline:
            for records in (await reader.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    event_id = _json_object(record.value).get("id")
                    if event_id in event_ids:
                        found.add(event_id)
    finally:
        await reader.stop()
    return found


async def check_applied(
    urls: Sequence[str],
    api_key: str,
    book: InvoiceBook,
    poster: Poster,
    database_url: str,
    bootstrap_servers: str,
    lag: int,
) -> Findings:
    """Every invoice the poster got a 202 for is on its debtor's statement once, with its amount
    open, and the aging per currency is exactly those invoices (plus any never answered 202 that
    were applied all the same)."""
    shown = await statements(urls, api_key, book.debtors, book.AS_OF)
    listed: dict[str, tuple[str, dict[str, Any]]] = {}
    phantoms: list[str] = []
    statements_minor: Counter[str] = Counter()
    for debtor, statement in shown.items():
        if statement is None:
            continue
        for item in statement["open_items"]:
            if item["invoice_id"] in listed:
                phantoms.append(item["invoice_id"])
            listed[item["invoice_id"]] = (debtor, item)
        for balance in statement["currencies"]:
            statements_minor[balance["currency"]] += balance["balance"]

    by_invoice = {spec.invoice_id: spec for spec in book.invoices.values()}
    acknowledged = [book.invoices[i] for i in poster.acknowledged if i in book.invoices]
    lost, wrong = [], []
    expected: Counter[str] = Counter()
    for spec in acknowledged:
        expected[spec.currency] += spec.amount
        if spec.invoice_id not in listed:
            lost.append(spec.invoice_id)
            continue
        debtor, item = listed[spec.invoice_id]
        if (debtor, item["amount"], item["outstanding"], item["currency"]) != (
            spec.debtor,
            spec.amount,
            spec.amount,
            spec.currency,
        ):
            wrong.append(spec.invoice_id)
    unconfirmed_applied = 0
    for invoice_id in listed:
        posted = by_invoice.get(invoice_id)
        if posted is None or posted.event_id in poster.acknowledged:
            continue
        if posted.event_id in poster.unconfirmed:
            unconfirmed_applied += 1
            expected[posted.currency] += posted.amount
        else:
            phantoms.append(invoice_id)

    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT invoice_id, count(*) AS n FROM ledger.balance_movements WHERE tenant_id = $1"
            " GROUP BY invoice_id",
            book.tenant,
        )
        claimed = {
            r["event_id"]
            for r in await connection.fetch(
                "SELECT event_id FROM ledger.ingested_events WHERE tenant_id = $1 AND event_id = any($2)",
                book.tenant,
                [by_invoice[i].event_id for i in lost],
            )
        }
    finally:
        await connection.close()
    counts = {r["invoice_id"]: int(r["n"]) for r in rows}
    lost_ids = {by_invoice[i].event_id for i in lost}
    in_log = await events_in_log(bootstrap_servers, JOURNAL, lost_ids) if lost else set()
    movements = {
        spec.invoice_id: counts.get(spec.invoice_id, 0)
        for spec in acknowledged
        if counts.get(spec.invoice_id, 0) != 1
    }
    return Findings(
        acknowledged=len(acknowledged),
        lost=sorted(lost),
        lost_claimed=len(claimed),
        lost_in_log=len(in_log),
        wrong=sorted(wrong),
        unconfirmed=sum(1 for i in poster.unconfirmed if i in book.invoices),
        unconfirmed_applied=unconfirmed_applied,
        phantoms=sorted(phantoms),
        movements=movements,
        expected_minor=dict(expected),
        statements_minor={c: v for c, v in statements_minor.items() if v},
        aging_minor=await aging(urls[0], api_key, book.AS_OF),
        lag=lag,
        statuses=Counter(poster.statuses),
        conflicts=len(poster.conflicts),
        shown=shown,
    )


# --- the stream's end state -----------------------------------------------------------------------


@dataclass
class LedgerVerdict:
    """What the ledger shows against what the stream says it must show."""

    accepted: int
    """Events answered 202, and events never answered that the ledger had claimed all the same."""
    applied: int
    """Of those, events whose effect the ledger shows (once)."""
    lost: list[str]
    """Accepted events whose effect is missing."""
    twice: list[str]
    """Accepted events whose effect shows more than once."""
    wrong: list[str]
    """Invoices shown with another debtor, amount or currency, or listed that were never accepted."""
    unconfirmed: int
    """Events never answered 202 (the poster gave up on them when the run ended)."""
    lag: int
    aging_minor: dict[str, int]
    expected_minor: dict[str, int]

    def problems(self) -> list[str]:
        found = []
        if self.lag != 0:
            found.append(
                f"the services did not settle: {self.lag} outbox rows, deliveries and records left"
                if self.lag > 0
                else "the backlog could not be measured"
            )
        if self.lost:
            found.append(f"{len(self.lost)} accepted events lost: {self.lost[:8]}")
        if self.twice:
            found.append(f"{len(self.twice)} accepted events applied twice: {self.twice[:8]}")
        if self.wrong:
            found.append(f"{len(self.wrong)} invoices shown wrong or never accepted: {self.wrong[:8]}")
        if self.aging_minor != self.expected_minor:
            found.append(
                f"aging per currency {self.aging_minor} != the stream's {self.expected_minor}"
                f" (difference {_difference(self.aging_minor, self.expected_minor)})"
            )
        return found


async def claimed_events(database_url: str, tenant: str, event_ids: Iterable[str]) -> set[str]:
    """Which of the event ids the ledger has claimed (`ingested_events`): accepted by it, whatever
    the answer the ERP saw."""
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT event_id FROM ledger.ingested_events WHERE tenant_id = $1 AND event_id = any($2)",
            tenant,
            list(event_ids),
        )
    finally:
        await connection.close()
    return {r["event_id"] for r in rows}


async def opening_movements(database_url: str, tenant: str) -> dict[str, int]:
    """Invoice id -> Σ of its positive balance movements (its amount, once, for an invoice issued
    once and never adjusted up)."""
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT invoice_id, sum(delta) AS opened FROM ledger.balance_movements"
            " WHERE tenant_id = $1 AND delta > 0 GROUP BY invoice_id",
            tenant,
        )
    finally:
        await connection.close()
    return {r["invoice_id"]: int(r["opened"]) for r in rows}


async def check_stream(
    urls: Sequence[str],
    api_key: str,
    stream: Stream,
    poster: Poster,
    database_url: str,
    lag: int,
) -> LedgerVerdict:
    """Every accepted event's effect shows once: each registered debtor has a statement with its
    name; each accepted invoice is open with its amount less the accepted payments allocated to it
    (or is settled, when they pay it all); nothing else is listed; and the aging per currency is
    the sum the stream gives."""
    ours = {i for i in poster.acknowledged if i in stream.events}
    unconfirmed = {i for i in poster.unconfirmed if i in stream.events} - ours
    accepted = ours | (
        await claimed_events(database_url, stream.tenant, unconfirmed) if unconfirmed else set()
    )
    expected = stream.expected(accepted)
    debtors = sorted({p.debtor for i, p in stream.events.items() if i in accepted})
    shown = await statements(urls, api_key, debtors, stream.AS_OF)
    opened = await opening_movements(database_url, stream.tenant)

    lost: list[str] = []
    twice: list[str] = []
    wrong: list[str] = []
    listed: dict[str, tuple[str, dict[str, Any]]] = {}
    for debtor, statement in shown.items():
        for item in (statement or {}).get("open_items", []):
            if item["invoice_id"] in listed:
                twice.append(f"listed twice: {item['invoice_id']}")
            listed[item["invoice_id"]] = (debtor, item)
    for debtor, name in expected.names.items():
        statement = shown.get(debtor)
        if statement is None or (statement.get("profile") or {}).get("name") != name:
            lost.append(f"registration of {debtor}")
    for invoice_id, issued in expected.invoices.items():
        left = expected.outstanding[invoice_id]
        paying = expected.payments.get(invoice_id, [])
        if opened.get(invoice_id, 0) > issued.amount:
            twice.append(issued.event_id)
        found = listed.pop(invoice_id, None)
        if found is None:
            if opened.get(invoice_id, 0) == 0:
                lost.append(issued.event_id)
            elif left:  # opened, yet not listed as open: a payment it never had shows as applied
                twice.extend(p.event_id for p in paying)
                if not paying:
                    lost.append(issued.event_id)
            continue
        debtor, item = found
        if (debtor, item["amount"], item["currency"]) != (issued.debtor, issued.amount, issued.currency):
            wrong.append(invoice_id)
        elif item["outstanding"] > left:
            lost.extend(p.event_id for p in paying)
        elif item["outstanding"] < left:
            twice.extend(p.event_id for p in paying)
    wrong.extend(f"not accepted: {i}" for i in listed)
    lost_or_twice = set(lost) | set(twice)
    applied = sum(1 for i in accepted if i not in lost_or_twice)
    return LedgerVerdict(
        accepted=len(accepted),
        applied=applied,
        lost=sorted(set(lost)),
        twice=sorted(set(twice)),
        wrong=sorted(wrong),
        unconfirmed=len(unconfirmed - accepted),
        lag=lag,
        aging_minor=await aging(urls[0], api_key, stream.AS_OF),
        expected_minor=expected.aging_minor,
    )


# --- dunning and the notifier ----------------------------------------------------------------------

GROUP_TOPICS: dict[str, tuple[str, ...]] = {
    "ledger": LedgerProjection.topics,
    "dunning": DunningProjection.topics,
    "notifier": NotifierProjection.topics,
}
TERMINAL = ("sent", "skipped", "failed", "cancelled")
"""Delivery statuses that end a command's execution (sent, or decided against for a reason)."""


async def end_offsets(bootstrap_servers: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await probe.start()
    try:
        partitions = []
        for topic in topics:
            found = probe.partitions_for_topic(topic)
            if not found:
                await probe._client.force_metadata_update()
                found = probe.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in found]
        ends = await probe.end_offsets(partitions)
    finally:
        await probe.stop()
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


async def backlog(database_url: str, bootstrap_servers: str, groups: Sequence[str]) -> int:
    """Outbox rows of the groups' services, deliveries not yet ended, and records in their topics
    beyond the offsets their databases committed. The tables are read before the topics: what an
    outbox held is in the log by the time the offsets are compared."""
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=5)
    try:
        waiting = 0
        committed: dict[tuple[str, str, int], int] = {}
        for group in groups:
            waiting += int(await connection.fetchval(f"SELECT count(*) FROM {group}.outbox"))
            rows = await connection.fetch(
                f"SELECT topic, partition, next_offset FROM {group}.consumer_offsets WHERE group_id = $1",
                group,
            )
            committed.update({(group, r["topic"], r["partition"]): r["next_offset"] for r in rows})
        if "notifier" in groups:
            waiting += int(
                await connection.fetchval(
                    "SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'sending')"
                )
            )
    finally:
        await connection.close()
    topics = {t for g in groups for t in GROUP_TOPICS[g]}
    ends = await end_offsets(bootstrap_servers, topics)
    lag = sum(
        max(0, end - committed.get((g, topic, partition), 0))
        for g in groups
        for (topic, partition), end in ends.items()
        if topic in GROUP_TOPICS[g]
    )
    return waiting + lag


async def wait_settled(
    database_url: str, bootstrap_servers: str, groups: Sequence[str], timeout_s: float
) -> int:
    """Wait until `backlog` is 0 three times in a row; the backlog left (-1: could not be measured)."""
    deadline = now() + timeout_s
    quiet = 0
    while True:
        try:
            left = await asyncio.wait_for(backlog(database_url, bootstrap_servers, groups), 20)
        except Exception:
            left = -1
        quiet = quiet + 1 if left == 0 else 0
        if quiet == 3 or (left != 0 and now() > deadline):
            return left
        await asyncio.sleep(0.3)


@dataclass
class CommandVerdict:
    """Commands dunning decided against what the notifier did with them and what the SMTP server got."""

    decided: int
    """Distinct command ids on collections.commands.v1."""
    executed: int
    """Of those, commands whose delivery ended (sent, skipped, failed or cancelled)."""
    statuses: Counter[str]
    not_executed: list[str]
    emails_sent: int
    """Deliveries sent by e-mail."""
    emails_received: int
    """Distinct Message-IDs the SMTP server received for the tenant."""
    emails_twice: list[str]
    """Message-IDs the SMTP server received more than once: a notifier killed between the server's
    acceptance and its own record sends the same e-mail again (docs/reliability.md); the scenario
    holds these to at most one per notifier killed."""
    emails_differing: list[str]
    """Message-IDs the SMTP server received with different content: two e-mails under one id."""
    emails_missing: list[str]
    """E-mail deliveries recorded as sent whose Message-ID the SMTP server never received."""

    def problems(self) -> list[str]:
        found = []
        if self.not_executed:
            found.append(
                f"{len(self.not_executed)} commands decided, never executed: {self.not_executed[:8]}"
            )
        if self.emails_differing:
            differing = self.emails_differing
            found.append(f"{len(differing)} Message-IDs carried different e-mails: {differing[:8]}")
        if self.emails_missing:
            found.append(
                f"{len(self.emails_missing)} e-mails recorded sent, never received: {self.emails_missing[:8]}"
            )
        return found


async def decided_commands(bootstrap_servers: str, tenant: str) -> set[str]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    found: set[str] = set()
    try:
        partitions = [TopicPartition(COMMANDS.name, p) for p in range(COMMANDS.partitions)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        deadline = now() + 60
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]] and now() < deadline:
            for records in (await reader.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    event = _json_object(record.value)
                    if event.get("tenantid") == tenant and event.get("type") in CollectionCommand.TYPES:
                        found.add(str(event["data"]["command_id"]))
    finally:
        await reader.stop()
    return found


def _json_object(value: bytes | None) -> dict[str, Any]:
    """The record's JSON object, or {} for anything else (a topic may hold poison records)."""
    try:
        found = json.loads(value or b"")
    except ValueError:  # UnicodeDecodeError included
        return {}
    return found if isinstance(found, dict) else {}


async def check_commands(
    database_url: str, bootstrap_servers: str, tenant: str, emails: Sequence[tuple[str, str]]
) -> CommandVerdict:
    """Every command decided has a delivery that ended, and every e-mail sent reached the SMTP server,
    one e-mail per Message-ID (`emails`: the Message-ID and content digest of what it received for
    the tenant, in order)."""
    decided = await decided_commands(bootstrap_servers, tenant)
    connection = await asyncpg.connect(sqlalchemy_to_libpq(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT command_id, status, channel, reference FROM notifier.deliveries WHERE tenant_id = $1",
            tenant,
        )
    finally:
        await connection.close()
    status = {r["command_id"]: r["status"] for r in rows}
    received = Counter(i for i, _ in emails)
    contents: dict[str, set[str]] = {}
    for message_id, digest in emails:
        contents.setdefault(message_id, set()).add(digest)
    sent_by_email = [r["reference"] for r in rows if r["status"] == "sent" and r["channel"] == "email"]
    return CommandVerdict(
        decided=len(decided),
        executed=sum(1 for c in decided if status.get(c) in TERMINAL),
        statuses=Counter(status.get(c, "none") for c in decided),
        not_executed=sorted(c for c in decided if status.get(c) not in TERMINAL),
        emails_sent=len(sent_by_email),
        emails_received=len(received),
        emails_twice=sorted(i for i, n in received.items() if n > 1),
        emails_differing=sorted(i for i, digests in contents.items() if len(digests) > 1),
        emails_missing=sorted(str(i) for i in sent_by_email if i not in received),
    )
