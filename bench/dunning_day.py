"""(4) Dunning business-day evaluation: one `ar.businessday.started.v1` per tenant, and the time the
real dunning service (consumer loop and outbox relay, in this process) takes to decide every case due
on that day for N debtors, and to publish what it decided.

How the cases are made. Building a million cases one by one through the domain would take longer
than the measure itself, so a few thousand distinct debtors ("templates") are built with the real
domain functions and cloned:

- each template debtor has one case in its tenant's main currency (a tenth a second currency too),
  with 0 to 6 open invoices and up to 3 settled ones (issued up to about a year before the day,
  terms 14 to 60 days, log-normal amounts), a quarter of the open ones partly paid, and now and then
  a promise to pay, a manual hold, a dispute;
- its balance facts and contact records are applied with `evolve`, and on every earlier business
  day its cases are decided with `decide_debtor` under the default policy (`policies/default.yaml`),
  as the projection would; nine commands in ten are answered `delivered` the next day, the rest stay
  pending;
- the cases are stored the way the projection stores them (`dump_case`), then cloned under other
  debtor ids by renaming the ids in the encoded state: the debtor id (which also names its case and
  invoice ids) and every command id the case holds (a uuid5 of the old id and the new debtor), so no
  two clones share a command id. Every clone gets a profile of its own in `dunning.debtors`.

The database is fresh (the dunning schema by its migrations), with the policy in force, each tenant's
business date the day before, the cases and profiles COPYed in (the secondary indexes of `cases`
built after the COPY, as defined), and the dunning group's stored
offsets at the current end of its topics, so the consumer reads only the clock events of the run.
Timed: from publishing the clock events until the consumer has committed past them (every case due
decided, the commands, cancellations and case events in the outbox, cases, timeline and agency feed
written), and until the outbox is empty (everything published to Kafka and acknowledged).

The binding limit is the COPY-equivalent time of what the evaluation writes: the case rows it
rewrites, the timeline rows and the outbox rows, each at the rate COPY puts such rows into a copy of
its table (same keys and indexes), measured in the same run on the same database.

`python -m bench.dunning_day --debtors 1000000` runs this measure alone on a broker and a database
started for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench import entry
from bench.infra import Infrastructure, libpq
from bench.limits import copy_rate
from bench.pipeline import Context, caught_up_by, cpu_delta, outbox_rows, settings, standalone
from contracts.collections import (
    ContactResult,
    DisputeChanged,
    HoldChanged,
    InputRef,
    PromiseToPay,
    Recorded,
)
from contracts.journal import DebtorProfile
from contracts.money import Money
from contracts.policy import PolicyPublished
from contracts.receivables import ReceivableBalance, ReceivableStatus
from contracts.topics import CASES, COMMANDS, catalogue
from services.dunning import store as dunning_store
from services.dunning.domain import (
    Case,
    DebtorFacts,
    Fact,
    currency_of,
    decide_debtor,
    dump_case,
    evolve,
    new_case,
)
from services.dunning.main import NAME
from services.dunning.policies import default_policy
from services.dunning.projection import DunningProjection
from services.dunning.store import case_row
from services.runtime.clock import day_started
from services.stack import migrate, open_stack

DAY_DEBTORS = {"tiny": 2_000, "small": 100_000, "medium": 1_000_000, "full": 1_000_000}
"""Debtors evaluated per `--size` (`--day-debtors` overrides)."""
TEMPLATES = 2_000
"""Distinct debtors built through the domain; the rest are clones of them."""
TARGET_DEBTORS = 1_000_000
TARGET_SECONDS = 30.0
TODAY = dt.date(2025, 6, 2)
"""The business day evaluated (a Monday); the tenants' business date before it is the day before."""
CURRENCIES = ("EUR", "USD", "RUB", "CNY")
SECOND_CURRENCY = {"EUR": "USD", "USD": "EUR", "RUB": "CNY", "CNY": "USD"}
MEDIAN_MINOR = {"EUR": 180_000, "USD": 200_000, "RUB": 15_000_000, "CNY": 1_200_000}
LOCALES = (
    ("DE", "de", "Europe/Berlin"),
    ("US", "en", "America/New_York"),
    ("RU", "ru", "Europe/Moscow"),
    ("CN", "zh", "Asia/Shanghai"),
)
_CLONE_IDS = uuid.UUID("c2a7f0a4-6a52-4a57-9d9e-6d8f5e1b2c30")


@dataclass(frozen=True)
class Template:
    tenant: str
    token: str
    """The template's debtor id: unique, so renaming it in the encoded state touches nothing else."""
    profile: dict[str, Any]
    profile_json: str
    """As dunning stores a debtor's profile: the validated profile's JSON dump."""
    cases: tuple[Case, ...]
    states: tuple[bytes, ...]
    command_ids: tuple[str, ...]


# --- the cases ------------------------------------------------------------------------------------


class _Books:
    """One template debtor's invoices and the facts the ledger and the notifier would publish."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.facts: dict[dt.date, list[Fact]] = {}
        self.offset = 0

    def ref(self, topic: str = "ar.receivables.v1") -> InputRef:
        self.offset += 1
        return InputRef(topic=topic, partition=0, offset=self.offset, event_id=f"evt-{self.offset}")

    def add(self, day: dt.date, fact: Fact) -> None:
        self.facts.setdefault(day, []).append(fact)

    def balance(
        self,
        invoice: tuple[str, dt.date, dt.date, int, str],
        outstanding: int,
        change: int,
        on: dt.date,
        cause: str,
    ) -> None:
        invoice_id, issue, due, amount, currency = invoice
        kind, status = ("settled", "settled") if outstanding == 0 else ("changed", "open")
        status_of: ReceivableStatus = status  # type: ignore[assignment]
        if cause == "ar.invoice.issued.v1":
            kind = "opened"
        data = ReceivableBalance(
            invoice_id=invoice_id,
            issue_date=issue,
            due_date=due,
            amount=Money(amount_minor=amount, currency=currency),
            outstanding=Money(amount_minor=outstanding, currency=currency),
            change=Money(amount_minor=change, currency=currency),
            status=status_of,
            effective_date=on,
            cause_type=cause,
            cause_id=f"cause-{self.offset + 1}",
        )
        self.add(on, Fact(f"ar.receivable.{kind}.v1", data, self.ref()))

    def invoices(self, token: str, currency: str, number: int, settled: int) -> list[tuple[str, dt.date]]:
        """Issue `number` open and `settled` paid invoices; returns (invoice id, due date) of the open."""
        rng = self.rng
        open_ones = []
        for n in range(number + settled):
            age = min(400, int(rng.expovariate(1 / 55)))
            issue = TODAY - dt.timedelta(days=age - 5)
            due = issue + dt.timedelta(days=rng.choice((14, 30, 30, 30, 45, 60)))
            amount = max(100, int(MEDIAN_MINOR[currency] * math.exp(rng.gauss(0, 1.1))))
            invoice = (f"{token}-{currency}-{n + 1}", issue, due, amount, currency)
            if issue >= TODAY:
                continue
            self.balance(invoice, amount, amount, issue, "ar.invoice.issued.v1")
            if n >= number:
                paid_on = due + dt.timedelta(days=rng.randint(-10, 40))
                if paid_on < TODAY:
                    self.balance(invoice, 0, -amount, max(paid_on, issue), "ar.payment.received.v1")
                    continue
            elif rng.random() < 0.25:
                paid_on = issue + dt.timedelta(days=rng.randint(0, max(0, (TODAY - issue).days - 1)))
                part = amount // rng.choice((2, 3, 4))
                self.balance(invoice, amount - part, -part, paid_on, "ar.payment.received.v1")
            open_ones.append((invoice[0], due))
        return open_ones


def _recorded(on: dt.date) -> Recorded:
    return Recorded(recorded_by="collector-1", business_date=on)


def build_template(
    index: int, tenant: str, main_currency: str, policy: PolicyPublished, seed: int
) -> Template:
    """One template debtor: its facts applied and every earlier business day decided, as dunning does."""
    rng = random.Random(seed * 1_000_003 + index)
    token = f"TPL{index:06d}"
    country, language, zone = LOCALES[CURRENCIES.index(main_currency)]
    profile: dict[str, Any] = {"name": f"Debtor {token}", "country": country, "language": language}
    profile["timezone"] = zone
    if rng.random() < 0.8:
        profile["email"] = f"ar-{token.lower()}@example.com"
    else:
        profile["postal_address"] = [f"Debtor {token}", "1 Main Street"]
    if rng.random() < 0.3:
        profile["phone"] = "+49 30 1234567"
        profile["consented_channels"] = ["email", "sms", "letter", "call"]
    books = _Books(rng)
    currencies = [main_currency] + ([SECOND_CURRENCY[main_currency]] if rng.random() < 0.1 else [])
    for currency in currencies:
        number = rng.choices((0, 1, 2, 3, 4, 6), weights=(12, 30, 22, 16, 12, 8))[0]
        open_ones = books.invoices(token, currency, number, rng.randint(0, 3))
        if not open_ones:
            continue
        roll = rng.random()
        first_overdue = min(due for _, due in open_ones)
        if roll < 0.05 and first_overdue < TODAY - dt.timedelta(days=5):
            on = TODAY - dt.timedelta(days=rng.randint(1, 5))
            data: Any = PromiseToPay(
                promise_id=f"PR-{token}",
                amount=Money(amount_minor=10_000, currency=currency),
                promised_date=TODAY + dt.timedelta(days=rng.randint(-4, 10)),
                recorded=_recorded(on),
            )
            books.add(on, Fact("ar.promise.made.v1", data, books.ref("ar.contacts.v1")))
        elif roll < 0.08:
            on = TODAY - dt.timedelta(days=rng.randint(1, 20))
            data = HoldChanged(
                hold_id=f"H-{token}",
                kind="manual",
                currency=currency,
                until=on + dt.timedelta(days=rng.randint(5, 30)),
                recorded=_recorded(on),
            )
            books.add(on, Fact("ar.hold.placed.v1", data, books.ref("ar.contacts.v1")))
        elif roll < 0.12:
            invoice_id, due = rng.choice(open_ones)
            on = max(due, TODAY - dt.timedelta(days=30))
            if on < TODAY:
                data = DisputeChanged(dispute_id=f"DS-{token}", invoice_id=invoice_id, recorded=_recorded(on))
                books.add(on, Fact("ar.dispute.opened.v1", data, books.ref("ar.contacts.v1")))

    validated = DebtorProfile.model_validate(profile)
    facts = DebtorFacts(profile=validated)
    cases: dict[str, Case] = {}
    day = min(books.facts, default=TODAY)
    while day < TODAY:
        for fact in books.facts.get(day, []):
            of = currency_of(fact)
            if of is not None and f"{token}:{of}" not in cases:
                cases[f"{token}:{of}"] = new_case(tenant, token, of)
            for case_id in sorted(cases):
                cases[case_id], _ = evolve(cases[case_id], fact)
        if any(c.next_action_date is not None and c.next_action_date <= day for c in cases.values()):
            for decision in decide_debtor([cases[c] for c in sorted(cases)], day, policy, facts):
                cases[decision.case.case_id] = decision.case
                for command in decision.commands:
                    if rng.random() < 0.9:
                        result = ContactResult(
                            command_id=command.command_id, case_id=command.case_id, outcome="delivered"
                        )
                        books.add(
                            day + dt.timedelta(days=1),
                            Fact("ar.contact.delivered.v1", result, books.ref("ar.contacts.v1")),
                        )
        day += dt.timedelta(days=1)
    ordered = tuple(cases[c] for c in sorted(cases))
    command_ids = sorted(
        {
            *(k for c in ordered for k in c.pending),
            *(k for c in ordered for k in c.contacts),
            *(c.placement.command_id for c in ordered if c.placement),
        }
    )
    return Template(
        tenant=tenant,
        token=token,
        profile=profile,
        profile_json=orjson.dumps(validated.model_dump(mode="json")).decode(),
        cases=ordered,
        states=tuple(orjson.dumps(dump_case(c)) for c in ordered),
        command_ids=tuple(command_ids),
    )


def tenants_for(run_id: str, count: int = 4) -> list[str]:
    return [f"day{n + 1}-{run_id}" for n in range(count)]


def build_templates(count: int, tenants: Sequence[str], policy: PolicyPublished, seed: int) -> list[Template]:
    return [
        build_template(
            i, tenants[i % len(tenants)], CURRENCIES[i % len(tenants) % len(CURRENCIES)], policy, seed
        )
        for i in range(count)
    ]


def clone_rows(
    templates: Sequence[Template], debtors: int
) -> Iterator[tuple[list[tuple[Any, ...]], tuple[Any, ...]]]:
    """Per debtor: its case rows (as the `cases` table holds them) and its profile row. Debtor n is a
    clone of template n mod len(templates), under the id D<n>; the first len(templates) are the
    templates themselves, renamed the same way."""
    for n in range(debtors):
        template = templates[n % len(templates)]
        debtor = f"D{n:07d}"
        renames = [(template.token.encode(), debtor.encode())] + [
            (old.encode(), str(uuid.uuid5(_CLONE_IDS, f"{old}|{debtor}")).encode())
            for old in template.command_ids
        ]
        rows = []
        for case, state in zip(template.cases, template.states, strict=True):
            for old, new in renames:
                state = state.replace(old, new)
            tenant, _, _, *columns, _ = case_row(case, b"")
            rows.append((tenant, f"{debtor}:{case.currency}", debtor, *columns, state))
        profile = template.profile_json.replace(template.token, debtor)
        yield rows, (template.tenant, debtor, profile)


CASE_COLUMNS = (
    "tenant_id",
    "case_id",
    "debtor_id",
    "currency",
    "status",
    "step",
    "overdue_minor",
    "oldest_due_date",
    "next_action_date",
    "agency_id",
    "version",
    "state",
)


async def prepare_database(
    ctx: Context, tenants: Sequence[str], templates: Sequence[Template], debtors: int, policy: PolicyPublished
) -> tuple[str, dict[str, Any]]:
    """A fresh dunning database holding the debtors' cases; returns its URL and what it holds."""
    url = await ctx.infra.create_database("dunning_day")
    await migrate(settings(ctx.infra, url), [NAME])
    connection = await asyncpg.connect(libpq(url))
    started = time.perf_counter()
    try:
        document = orjson.dumps(policy.model_dump(mode="json")).decode()
        await connection.executemany(
            "INSERT INTO dunning.policies (tenant_id, version, effective_from, document)"
            " VALUES ($1, $2, $3, $4)",
            [(t, policy.version, policy.effective_from, document) for t in tenants],
        )
        await connection.executemany(
            "INSERT INTO dunning.business_dates (tenant_id, business_date) VALUES ($1, $2)",
            [(t, TODAY - dt.timedelta(days=1)) for t in tenants],
        )
        ends = await _end_offsets(ctx.infra, DunningProjection.topics)
        await connection.executemany(
            "INSERT INTO dunning.consumer_offsets (group_id, topic, partition, next_offset)"
            " VALUES ($1, $2, $3, $4)",
            [(DunningProjection.group_id, tp.topic, tp.partition, offset) for tp, offset in ends.items()],
        )
        # Bulk load: the secondary indexes are built once after the COPY (as they were defined).
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'dunning' AND tablename = 'cases'"
            " AND indexname <> 'cases_pkey'"
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX dunning."{index["indexname"]}"')
        cases = 0
        chunk_cases: list[tuple[Any, ...]] = []
        chunk_profiles: list[tuple[Any, ...]] = []
        for rows, profile in clone_rows(templates, debtors):
            chunk_cases.extend(rows)
            chunk_profiles.append(profile)
            if len(chunk_profiles) >= 20_000:
                cases += await _copy_chunk(connection, chunk_cases, chunk_profiles)
                chunk_cases, chunk_profiles = [], []
        cases += await _copy_chunk(connection, chunk_cases, chunk_profiles)
        for index in indexes:
            await connection.execute(index["indexdef"])
        await connection.execute("ANALYZE dunning.cases")
        await connection.execute("ANALYZE dunning.debtors")
        loaded = time.perf_counter() - started
        due = await connection.fetchrow(
            "SELECT count(*) AS cases, count(DISTINCT (tenant_id, debtor_id)) AS debtors"
            " FROM dunning.cases WHERE next_action_date <= $1",
            TODAY,
        )
        state_bytes = await connection.fetchval("SELECT avg(length(state))::bigint FROM dunning.cases")
        by_step = await connection.fetch(
            "SELECT coalesce(step, '-') AS step, status, count(*) AS n FROM dunning.cases"
            " WHERE next_action_date <= $1 GROUP BY 1, 2 ORDER BY 3 DESC",
            TODAY,
        )
    finally:
        await connection.close()
    return url, {
        "cases": cases,
        "cases_due": due["cases"],
        "debtors_due": due["debtors"],
        "mean_case_state_bytes": state_bytes,
        "due_by_step_and_status": {f"{r['step']}/{r['status']}": r["n"] for r in by_step},
        "load_seconds": round(loaded, 1),
    }


async def _copy_chunk(connection: Any, cases: list[tuple[Any, ...]], profiles: list[tuple[Any, ...]]) -> int:
    if cases:
        await connection.copy_records_to_table(
            "cases", schema_name="dunning", columns=CASE_COLUMNS, records=cases
        )
    if profiles:
        await connection.copy_records_to_table(
            "debtors", schema_name="dunning", columns=("tenant_id", "debtor_id", "profile"), records=profiles
        )
    return len(cases)


async def _end_offsets(infra: Infrastructure, topics: Sequence[str]) -> dict[TopicPartition, int]:
    counts = {name: partitions for name, partitions, _ in catalogue()}
    reader = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        ends: dict[TopicPartition, int] = await reader.end_offsets(partitions)
        return ends
    finally:
        await reader.stop()


# --- the measure ------------------------------------------------------------------------------------


async def measure_dunning_evaluation(
    ctx: Context,
    debtors: int,
    seed: int = 42,
    templates: int = TEMPLATES,
    profile_name: str = "dunning-day",
    workers: int | None = None,
) -> dict[str, Any]:
    """(4) The time the dunning service takes to evaluate one business day for `debtors` debtors,
    its slices decided in `workers` processes beside the consumer (default: one per CPU)."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    policy = PolicyPublished(version=1, effective_from=dt.date(2020, 1, 1), document=default_policy())
    tenants = tenants_for(ctx.infra.run_id)
    started = time.perf_counter()
    built = build_templates(min(templates, debtors), tenants, policy, seed)
    built_s = time.perf_counter() - started
    url, held = await prepare_database(ctx, tenants, built, debtors, policy)

    async with open_stack(settings(ctx.infra, url, dunning_workers=workers), [NAME], migrate=False) as stack:
        service = stack.dunning
        await asyncio.wait_for(service.consumer.started.wait(), 120)
        await asyncio.wait_for(service.projection.workers.ready(), 120)  # started with the service
        pids = service.projection.workers.pids()
        ctx.processes.add("dunning_workers", lambda: [p for p in pids if Path(f"/proc/{p}").exists()])
        connection = await asyncpg.connect(libpq(url))
        try:
            since = await connection.fetchval("SELECT now()")
        finally:
            await connection.close()
        ticks = [day_started(t, TODAY, dt.datetime.now(dt.UTC)) for t in tenants]
        topic_ends = await _end_offsets(ctx.infra, (COMMANDS.name, CASES.name))
        cpu_before = ctx.processes.cpu()
        load_average = os.getloadavg()
        with contextlib.ExitStack() as profiling:
            if ctx.profiler:
                profiling.enter_context(ctx.profiler.attach(os.getpid(), profile_name))
            clock = time.perf_counter()
            await stack.event_log.publish(ticks)
            deadline = clock + 600 + debtors / 500
            await caught_up_by(service.consumer, deadline, f"dunning's business day for {debtors} debtors")
            evaluated = time.perf_counter()
            cpu_evaluation = cpu_delta(cpu_before, ctx.processes.cpu())
            while await outbox_rows(stack.sessions, dunning_store.runtime) > 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError("the dunning outbox relay did not publish everything")
                await asyncio.sleep(0.1)
            drained = time.perf_counter()
            cpu_total = cpu_delta(cpu_before, ctx.processes.cpu())
        published = service.relay.published
        applied = service.consumer.applied

    written = await _written(url, since)
    copy = await copy_limits(url, ctx.infra, topic_ends)
    seconds = evaluated - clock
    drained_s = drained - clock
    copy_seconds = sum(written[t] / copy[t]["records_per_s"] for t in ("cases", "timeline", "outbox"))
    limit = debtors / copy_seconds if copy_seconds else None
    commands = written["commands"]
    return {
        "figure": round(seconds, 2),
        "unit": "s per business day",
        "debtors": debtors,
        "dunning_workers": len(pids),
        "tenants": len(tenants),
        "business_date": TODAY.isoformat(),
        **held,
        "commands": commands,
        "cancellations": written["cancellations"],
        "case_events": written["case_events"],
        "agency_feed_rows": written["agency_feed"],
        "cases_written": written["cases"],
        "timeline_rows": written["timeline"],
        "outbox_rows": written["outbox"],
        "published": published,
        "clock_records_applied": applied,
        "seconds": round(seconds, 3),
        "published_seconds": round(drained_s, 3),
        "debtors_per_s": round(debtors / seconds, 1),
        "commands_per_s": round(commands / seconds, 1),
        "commands_published_per_s": round(commands / drained_s, 1),
        "records_published_per_s": round(published / drained_s, 1),
        "load_average_at_tick": [round(v, 2) for v in load_average],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpu_seconds": cpu_evaluation,
        "cpu_seconds_until_published": cpu_total,
        "copy": copy,
        "copy_equivalent": {
            "seconds": round(copy_seconds, 3),
            "debtors_per_s": round(limit, 1) if limit else None,
            "rows": {t: written[t] for t in ("cases", "timeline", "outbox")},
        },
        "binding_limit": {"name": "postgres_copy_equivalent", "figure": round(limit, 1) if limit else None},
        "ratio_to_limit": round((debtors / seconds) / limit, 3) if limit else None,
        "target": f"one business day for {TARGET_DEBTORS:,} debtors in under {TARGET_SECONDS:.0f} s",
        "state": (
            f"{len(built):,} template debtors built with the domain (evolve and decide_debtor on every"
            f" earlier business day, default policy) in {built_s:.1f} s, cloned to {debtors:,} debtors by"
            " renaming the debtor and command ids in the encoded case state; COPYed in"
        ),
        "templates": len(built),
        "templates_seconds": round(built_s, 1),
    }


async def _written(url: str, since: dt.datetime) -> dict[str, int]:
    connection = await asyncpg.connect(libpq(url))
    try:
        kinds = await connection.fetch("SELECT kind, count(*) AS n FROM dunning.timeline GROUP BY kind")
        cases = await connection.fetchval("SELECT count(*) FROM dunning.cases WHERE updated_at >= $1", since)
        feed = await connection.fetchval("SELECT count(*) FROM dunning.agency_feed")
    finally:
        await connection.close()
    by_kind = {r["kind"]: r["n"] for r in kinds}
    commands = sum(n for k, n in by_kind.items() if k.startswith("command.") and k != "command.cancelled")
    cancellations = by_kind.get("command.cancelled", 0)
    timeline = sum(by_kind.values())
    return {
        "commands": commands,
        "cancellations": cancellations,
        "case_events": timeline - commands - cancellations,
        "timeline": timeline,
        "outbox": timeline,
        "cases": cases,
        "agency_feed": feed,
    }


async def copy_limits(
    url: str, infra: Infrastructure, topic_starts: dict[TopicPartition, int], max_rows: int = 100_000
) -> dict[str, Any]:
    """COPY rows per second into copies of `cases`, `timeline` and `outbox` (keys and indexes
    included), with rows taken from the evaluation: cases and timeline rows from the tables, outbox
    rows from the records it published."""
    records = await _read_back(infra, topic_starts, max_rows)
    connection = await asyncpg.connect(libpq(url))
    results: dict[str, Any] = {}
    try:
        await connection.execute("CREATE SCHEMA IF NOT EXISTS bench_copy")
        samples: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        rows = await connection.fetch(
            f"SELECT {', '.join(CASE_COLUMNS)} FROM dunning.cases ORDER BY updated_at DESC LIMIT {max_rows}"
        )
        samples["cases"] = (list(CASE_COLUMNS), [tuple(r) for r in rows])
        rows = await connection.fetch(
            "SELECT tenant_id, case_id, business_date, kind, event_id, entry::text"
            f" FROM dunning.timeline LIMIT {max_rows}"
        )
        samples["timeline"] = (
            ["tenant_id", "case_id", "business_date", "kind", "event_id", "entry"],
            [tuple(r) for r in rows],
        )
        samples["outbox"] = (["topic", "key", "value", "headers"], [(t, k, v, "[]") for t, k, v in records])
        for table, (columns, sample) in samples.items():
            if sample:
                rate = await copy_rate(connection, table, columns, sample, 1.5, schema="dunning")
                results[table] = rate.as_json(columns=columns)
    finally:
        await connection.execute("DROP SCHEMA IF EXISTS bench_copy CASCADE")
        await connection.close()
    return results


async def _read_back(
    infra: Infrastructure, starts: dict[TopicPartition, int], max_rows: int
) -> list[tuple[str, bytes, bytes]]:
    """Up to `max_rows` records the evaluation published to the commands and cases topics."""
    reader = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    out: list[tuple[str, bytes, bytes]] = []
    try:
        partitions = list(starts)
        reader.assign(partitions)
        for tp, offset in starts.items():
            reader.seek(tp, offset)
        ends = await reader.end_offsets(partitions)
        wanted = min(max_rows, sum(ends[tp] - starts[tp] for tp in partitions))
        while len(out) < wanted:
            batches = await reader.getmany(timeout_ms=1000, max_records=10_000)
            if not batches:
                break
            for batch in batches.values():
                out.extend((r.topic, r.key or b"", r.value or b"") for r in batch)
    finally:
        await reader.stop()
    return out[:max_rows]


# --- `python -m bench.dunning_day`: this measure alone ---------------------------------------------------


def summary_line(measure: dict[str, Any]) -> str:
    if "figure" not in measure:
        return f"  (4) dunning business-day evaluation: {measure.get('status', '-')}"
    ratio = measure.get("ratio_to_limit")
    limit = measure.get("binding_limit", {}).get("figure")
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in measure.get("cpu_seconds", {}).items() if v)
    return (
        f"  (4) dunning day     {measure['seconds']:>10.1f} s       ({measure['debtors']:,} debtors,"
        f" {measure['cases']:,} cases, {measure['cases_due']:,} due: {measure['debtors_per_s']:,.0f}"
        f" debtors/s, {measure['commands']:,} commands {measure['commands_per_s']:,.0f}/s emitted,"
        f" {measure['commands_published_per_s']:,.0f}/s published in {measure['published_seconds']:.1f} s,"
        f" {measure['cancellations']:,} cancellations, {measure['case_events']:,} case events,"
        f" {measure.get('dunning_workers', 0)} worker processes; CPU {cpu})"
        + (f"; {ratio:.2f} x COPY-equivalent ({limit:,.0f} debtors/s)" if ratio is not None and limit else "")
    )


async def _main(debtors: int, seed: int, profile: str | None, workers: int | None) -> dict[str, Any]:
    async with standalone(Path(profile) if profile else None) as ctx:
        measure = await measure_dunning_evaluation(ctx, debtors, seed, workers=workers)
        measure["memory"] = ctx.processes.memory()
        return measure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dunning_day", description=__doc__.split("\n")[0])
    parser.add_argument("--debtors", type=int, default=DAY_DEBTORS["tiny"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", help="write a py-spy profile of the evaluation to this folder")
    parser.add_argument(
        "--workers",
        type=int,
        help="processes deciding the day's slices beside the consumer (default: one per CPU)",
    )
    parser.add_argument("--out", help="write the figures as JSON to this file")
    args = parser.parse_args()
    entry.prepare()
    measure = asyncio.run(_main(args.debtors, args.seed, args.profile, args.workers))
    print(summary_line(measure))
    print(orjson.dumps(measure, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        with open(args.out, "wb") as out:
            out.write(orjson.dumps(measure, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
