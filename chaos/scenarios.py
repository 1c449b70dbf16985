"""The scenarios. Each runs Arrears' services as real processes on a fresh database and empty topics,
posts a bounded, seeded stream of ERP events while the business clock advances (so that dunning
decides reminders and the notifier sends them to an SMTP server of the run's own), injects its
faults once the run is past a fifth of its course, then lets everything settle and compares what
the system shows with what the stream says it must show."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import random
import shutil
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from aiosmtpd.controller import Controller

from chaos.checks import GROUP_TOPICS, check_commands, check_stream, wait_settled
from chaos.faults import (
    Faults,
    Poison,
    broker_outage,
    kill_loop,
    poison_records,
    postgres_outage,
    wait_ready,
    write_poison,
)
from chaos.poster import Poster
from chaos.processes import ServiceProcess, create_database, now, reset_topics, service_env
from chaos.report import Outcome
from chaos.workload import Stream
from contracts.policy import PolicyPublished
from contracts.topics import ALL, JOURNAL
from services.dunning.api import policy_message
from services.dunning.policies import default_policy
from services.runtime import clock
from services.runtime.kafka_log import KafkaLog
from tests.infra.kafka_broker import KafkaBroker, free_ports
from tests.infra.kafka_cluster import KafkaCluster
from tests.infra.postgres_server import PostgresServer

ISSUE_DAYS = 20
"""Invoices are issued over the first 20 days of 2026 and fall due 14 days later."""
LAST_DAY = Stream.FIRST_ISSUE + dt.timedelta(days=50)
"""The business clock runs from the first issue date to here: past the due date of every invoice by
more than the formal notice's 15 days, so that each debtor's case climbs four or five steps."""
DEBTORS = 25


@dataclass(frozen=True)
class Shape:
    """How long a scenario runs and how hard it pushes."""

    duration_s: float
    rate: float = 100.0
    """ERP events per second."""
    interval_s: tuple[float, float] = (2.0, 4.0)
    """Between two faults."""
    min_faults: int = 0
    """Go on past `duration_s` until this many faults were injected."""
    outages: int = 1
    outage_s: float = 8.0
    max_members: int = 3
    settle_s: float = 150.0


SHAPES: dict[str, dict[str, Shape]] = {
    "short": {
        "kill": Shape(30, interval_s=(2.0, 3.5)),
        "broker": Shape(28, outage_s=8),
        "postgres": Shape(28, outage_s=8),
        "rebalance": Shape(35, interval_s=(3.0, 5.0), max_members=3),
        "poison": Shape(20),
        "cluster": Shape(30, outage_s=8),
    },
    "long": {
        "kill": Shape(300, interval_s=(2.0, 3.5), min_faults=110, settle_s=300),
        "broker": Shape(150, outages=3, outage_s=15, settle_s=300),
        "postgres": Shape(150, outages=3, outage_s=15, settle_s=300),
        "rebalance": Shape(180, interval_s=(3.0, 6.0), max_members=5, settle_s=300),
        "poison": Shape(90, outages=4, settle_s=300),
        "cluster": Shape(150, outages=3, outage_s=15, settle_s=300),
    },
}


@dataclass
class Infrastructure:
    """The broker and PostgreSQL every scenario runs on, and where the run keeps its logs."""

    broker: KafkaBroker
    postgres: PostgresServer
    log_dir: Path
    bootstrap_servers: str = ""
    send_lease_s: float = 20.0
    """The notifier's send lease (ARREARS_SEND_LEASE_S): after a kill, a delivery claimed and not
    recorded is sent again once it expires, so a short one settles a run sooner; it must outlast the
    sending of a claimed batch, or a second notifier sends the rest of that batch again."""

    def __post_init__(self) -> None:
        self.bootstrap_servers = self.bootstrap_servers or self.broker.bootstrap_servers


class Mailbox:
    """The SMTP server the notifier sends to: the Message-ID, recipient and a digest of the content
    (recipient, subject, body) of every e-mail, in order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        content = "\n".join((str(message["To"]), str(message["Subject"]), body.get_content() if body else ""))
        digest = hashlib.sha256(content.encode()).hexdigest()
        self.received.append((str(message["Message-ID"]), str(message["To"]), digest))
        return "250 OK"

    def emails(self, tenant: str) -> list[tuple[str, str]]:
        """(Message-ID, content digest) of each e-mail the tenant's debtors were sent, in order."""
        return [(i, digest) for i, to, digest in self.received if to.endswith(f"@{tenant}.example")]


@dataclass
class Stack:
    """One scenario's processes on a fresh database, the SMTP server, the business clock."""

    infra: Infrastructure
    name: str
    seed: int
    tenant: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:8]}")
    processes: list[ServiceProcess] = field(default_factory=list)
    retired: list[ServiceProcess] = field(default_factory=list)
    mailbox: Mailbox = field(default_factory=Mailbox)
    database_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    key: str = ""
    day: dt.date = Stream.FIRST_ISSUE
    cluster: KafkaCluster | None = None
    """The three-broker cluster the scenario runs on instead of the run's broker (fresh topics)."""
    _smtp: Controller | None = None
    _clock: KafkaLog | None = None

    @property
    def log_dir(self) -> Path:
        return self.infra.log_dir / self.name

    async def open(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (smtp_port,) = free_ports(1)
        self._smtp = Controller(self.mailbox, hostname="127.0.0.1", port=smtp_port)
        self._smtp.start()
        if self.cluster is None:
            await reset_topics(self.infra.bootstrap_servers)
        self.database_url = await create_database(self.infra.postgres.url)
        self.env = service_env(
            self.database_url,
            self.infra.bootstrap_servers,
            {
                "ARREARS_SMTP_PORT": str(smtp_port),
                "ARREARS_SEND_WINDOWS": "ignore",
                "ARREARS_LETTERS_DIR": str(self.log_dir / "letters"),
                "ARREARS_SEND_LEASE_S": str(self.infra.send_lease_s),
                "ARREARS_DB_POOL_SIZE": "4",
            },
        )
        self._clock = KafkaLog(self.infra.bootstrap_servers, timeout_s=10)
        self.key = await migrate_and_key(self.database_url, self._clock, self.tenant)
        await self._clock.start()
        policy = PolicyPublished(version=1, effective_from=Stream.FIRST_ISSUE, document=default_policy())
        await self._clock.publish([policy_message(self.tenant, policy, dt.datetime.now(dt.UTC))])

    def add(self, service: str, api_only: bool = False) -> ServiceProcess:
        count = sum(
            1 for p in [*self.processes, *self.retired] if (p.service, p.api_only) == (service, api_only)
        )
        suffix = "-api" if api_only else ""
        process = ServiceProcess(f"{service}{suffix}-{count}", self.env, self.log_dir, service, api_only)
        self.processes.append(process)
        process.start()
        return process

    def members(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.service == service and not p.api_only]

    def retire(self, process: ServiceProcess) -> None:
        self.processes.remove(process)
        self.retired.append(process)
        process.stop()

    @property
    def ledger_urls(self) -> list[str]:
        return [p.url for p in self.processes if p.service == "ledger"]

    async def ready(self, timeout_s: float = 240) -> None:
        if not await wait_ready(self.processes, timeout_s):
            exited = [p for p in self.processes if p.process is not None and not p.running]
            if exited:
                raise RuntimeError(f"{exited[0].name} exited:\n{exited[0].log_tail(15)}")
            tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in self.processes)
            raise RuntimeError(f"the services were not ready in {timeout_s:.0f} s:\n{tails}")

    async def tick(self) -> bool:
        """Start the next business day (False: the clock is at its last day, or the broker refused)."""
        if self.day > LAST_DAY or self._clock is None:
            return False
        try:
            await self._clock.publish([clock.day_started(self.tenant, self.day, dt.datetime.now(dt.UTC))])
        except Exception:
            return False
        self.day += dt.timedelta(days=1)
        return True

    async def run_clock(self, days_per_s: float, stopping: asyncio.Event) -> None:
        while not stopping.is_set() and self.day <= LAST_DAY:
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1 / days_per_s)

    async def finish_clock(self, timeout_s: float = 60) -> None:
        deadline = now() + timeout_s
        while self.day <= LAST_DAY and now() < deadline:
            if not await self.tick():
                await asyncio.sleep(0.5)

    def dead_loops(self) -> int:
        """Background loops that stopped on an error of their own (their supervisor restarted them)."""
        return sum(p.log_count("stopped on an error; restarting") for p in [*self.processes, *self.retired])

    async def close(self) -> None:
        for process in self.processes:
            await asyncio.to_thread(process.stop)
        if self._clock is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._clock.stop(), 15)
        if self._smtp is not None:
            self._smtp.stop()
        shutil.rmtree(self.log_dir / "letters", ignore_errors=True)


async def migrate_and_key(database_url: str, event_log: KafkaLog, tenant: str) -> str:
    """Every service's schema (as `arrears migrate`) and an ERP key for the tenant (as `arrears keys
    create`), in this process: a run starts many stacks, and a subprocess each costs seconds."""
    from services.dunning.main import DunningService
    from services.ledger import store as ledger_store
    from services.ledger.main import LedgerService
    from services.notifier.main import NotifierService
    from services.runtime.auth import create_key as new_key
    from services.runtime.process import open_resources
    from services.runtime.settings import Settings

    settings = Settings(database_url=database_url, db_pool_size=2)
    async with open_resources(settings, event_log) as resources:
        for service in (LedgerService, DunningService, NotifierService):
            await service(resources).migrate()
        async with resources.sessions() as session, session.begin():
            return await new_key(session, ledger_store.runtime, tenant, "chaos", "erp")


# --- the course every scenario follows ---------------------------------------------------------------

Injector = Callable[[Stack, asyncio.Event, Outcome], Coroutine[Any, Any, None]]


async def course(
    stack: Stack,
    shape: Shape,
    outcome: Outcome,
    inject: Injector,
    groups: Sequence[str] = ("ledger", "dunning", "notifier"),
    urls: Sequence[str] | None = None,
) -> Stream:
    """Post the stream and advance the clock for `shape.duration_s`, the faults from a fifth of it on
    (`inject` returns when it has done all it means to do, or when told to stop), then settle, check
    and fill in the outcome."""
    stream = Stream(
        stack.tenant,
        seed=stack.seed,
        debtors=DEBTORS,
        invoices=int(shape.rate * shape.duration_s * 4),
        issue_days=ISSUE_DAYS,
    )
    poster = Poster(
        list(urls or stack.ledger_urls),
        stack.key,
        stream.batches(50),
        concurrency=2,
        rate=shape.rate,
        drain_s=60,
    )
    stopping = asyncio.Event()
    days_per_s = (LAST_DAY - Stream.FIRST_ISSUE).days / shape.duration_s
    posting = asyncio.create_task(poster.run())
    ticking = asyncio.create_task(stack.run_clock(days_per_s, stopping))
    started = now()
    try:
        await asyncio.sleep(shape.duration_s * 0.2)
        injecting = asyncio.create_task(inject(stack, stopping, outcome))
        remaining = shape.duration_s * 0.8
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(injecting), remaining)
        stopping.set()
        await injecting
    finally:
        stopping.set()
        poster.stop()
        await asyncio.wait_for(posting, poster.drain_s + poster.request_timeout_s + 10)
        await ticking
    outcome.figures["posting (s)"] = round(now() - started, 1)
    outcome.figures["POST outcomes"] = dict(poster.outcomes())
    await stack.finish_clock()
    await stack.ready(240)
    left = await wait_settled(stack.database_url, stack.infra.bootstrap_servers, groups, shape.settle_s)
    outcome.figures["settled after posting (s)"] = round(now() - started - outcome.figures["posting (s)"], 1)
    verdict = await check_stream(stack.ledger_urls, stack.key, stream, poster, stack.database_url, left)
    outcome.ledger(verdict)
    if "notifier" in groups:
        commands = await check_commands(
            stack.database_url,
            stack.infra.bootstrap_servers,
            stack.tenant,
            stack.mailbox.emails(stack.tenant),
        )
        outcome.commands(commands)
    dead = stack.dead_loops()
    if dead:
        outcome.problems.append(f"{dead} background loops stopped on an error of their own (see the logs)")
    if poster.conflicts:
        outcome.problems.append(f"{len(poster.conflicts)} events answered conflict")
    return stream


def standard_stack(stack: Stack) -> None:
    """A ledger with its background loops, a second ledger serving the API alone, dunning, notifier."""
    stack.add("ledger")
    stack.add("ledger", api_only=True)
    stack.add("dunning")
    stack.add("notifier")


# --- the scenarios -------------------------------------------------------------------------------


async def kill(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """SIGKILL of a random process (ledger worker, ledger API, dunning, notifier) every few seconds,
    each started again at once, while the ERP posts and the clock advances."""
    standard_stack(stack)
    await stack.ready()
    faults = Faults()
    rng = random.Random(stack.seed)

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        await kill_loop(lambda: stack.processes, faults, rng, shape.interval_s, stopping, shape.min_faults)

    await course(stack, shape, outcome, inject)
    outcome.fault_log(faults)
    outcome.figures["kills per process"] = dict(Counter(f.what.removeprefix("kill -9 ") for f in faults.done))


async def broker(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """The broker stopped (`kafka.sh stop`) and started again mid-run, `shape.outages` times."""
    standard_stack(stack)
    await stack.ready()
    faults = Faults()

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        gap = shape.duration_s * 0.8 / shape.outages
        for n in range(shape.outages):
            await broker_outage(stack.infra.broker, faults, shape.outage_s, stack.processes)
            if n + 1 < shape.outages:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), max(1.0, gap - shape.outage_s - 10))

    await course(stack, shape, outcome, inject)
    outcome.fault_log(faults)


async def postgres(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """The embedded PostgreSQL stopped and started again mid-run, `shape.outages` times."""
    data_dir = stack.infra.postgres.data_dir
    if data_dir is None:
        outcome.skipped = "DATABASE_URL names an external PostgreSQL, which this run cannot stop"
        return
    standard_stack(stack)
    await stack.ready()
    faults = Faults()

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        gap = shape.duration_s * 0.8 / shape.outages
        for n in range(shape.outages):
            await postgres_outage(data_dir, faults, shape.outage_s, stack.processes)
            if n + 1 < shape.outages:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), max(1.0, gap - shape.outage_s - 10))

    await course(stack, shape, outcome, inject)
    outcome.fault_log(faults)


async def rebalance(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """Consumer groups of 1 to `shape.max_members` processes per service (ledger, dunning, notifier):
    every few seconds a member joins a group or leaves it (SIGTERM), while the ERP posts to a ledger
    that serves the API alone."""
    api = stack.add("ledger", api_only=True)
    for service in ("ledger", "dunning", "notifier"):
        stack.add(service)
    await stack.ready()
    faults = Faults()
    rng = random.Random(stack.seed)
    largest: Counter[str] = Counter({s: 1 for s in ("ledger", "dunning", "notifier")})

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        joining: list[asyncio.Task[None]] = []
        # Members that joined and are not ready yet: none of them is asked to leave, which would end
        # its join before it could be ready and count as a fault not recovered from.
        not_ready: set[str] = set()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), rng.uniform(*shape.interval_s))
                break
            service = rng.choice(("ledger", "dunning", "notifier"))
            members = stack.members(service)
            grow = len(members) <= 1 or (len(members) < shape.max_members and rng.random() < 0.55)
            settled = [m for m in members if m.name not in not_ready]
            if not grow and not settled:
                continue  # every member is still joining: none leaves yet
            if grow:
                process = stack.add(service)
                fault = faults.record(f"join {service} ({len(members) + 1} members)")
                largest[service] = max(largest[service], len(members) + 1)
                not_ready.add(process.name)

                async def joined(process: ServiceProcess = process, fault: Any = fault) -> None:
                    try:
                        if await wait_ready([process], 180):
                            faults.recovered(fault)
                    finally:
                        not_ready.discard(process.name)

                joining.append(asyncio.create_task(joined()))
            else:
                leaving = rng.choice(settled)
                fault = faults.record(f"leave {service} ({len(members) - 1} members)")
                await asyncio.to_thread(stack.retire, leaving)
                faults.recovered(fault)
        await asyncio.gather(*joining)

    await course(stack, shape, outcome, inject, urls=[api.url])
    outcome.fault_log(faults)
    outcome.figures["joins"] = faults.count("join")
    outcome.figures["leaves"] = faults.count("leave")
    outcome.figures["largest group"] = dict(largest)


async def dead_letters(bootstrap_servers: str) -> list[tuple[str, bytes, dict[str, bytes]]]:
    """Every record of every dead-letter topic: (topic, key, headers)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    found = []
    try:
        partitions = [TopicPartition(t.dead_letter, 0) for t in ALL]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        deadline = now() + 60
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]] and now() < deadline:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for r in records:
                    found.append((r.topic, r.key or b"", {k: bytes(v) for k, v in r.headers or ()}))
    finally:
        await reader.stop()
    return found


async def poison(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """Poison records written straight to every input topic (random bytes, JSON of the wrong shape, a
    known type without its data, NUL in identifiers, an amount of 2^64, the year 1), `shape.outages`
    rounds during the load: each must reach its topic's `.dlq` from every group that reads the topic,
    with a reason, no process or loop may die, and the stream is applied as in any other run."""
    standard_stack(stack)
    await stack.ready()
    rng = random.Random(stack.seed)
    written: list[Poison] = []
    faults = Faults()

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        gap = shape.duration_s * 0.7 / shape.outages
        for _ in range(shape.outages):
            records = poison_records(rng)
            await write_poison(stack.infra.bootstrap_servers, records)
            written.extend(records)
            faults.record(f"{len(records)} poison records")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), gap)
            if stopping.is_set():
                break

    await course(stack, shape, outcome, inject)
    outcome.faults = len(written)
    letters = await dead_letters(stack.infra.bootstrap_servers)
    reached: dict[tuple[str, bytes, str], str] = {}
    for topic, key, headers in letters:
        group = headers.get("dlq.group", b"").decode()
        reached[(topic.removesuffix(".dlq"), key, group)] = headers.get("dlq.reason", b"").decode()
    missing, reasons = [], Counter[str]()
    for p in written:
        for group, topics in GROUP_TOPICS.items():
            if p.topic not in topics:
                continue
            reason = reached.get((p.topic, p.key, group))
            if reason is None:
                missing.append(f"{p.label} not dead-lettered by {group}")
            elif not reason:
                missing.append(f"{p.label} dead-lettered by {group} without a reason")
            else:
                reasons[p.kind] += 1
    outcome.figures["poison records written"] = len(written)
    outcome.figures["dead letters (poison x group)"] = sum(reasons.values())
    outcome.figures["dead letters by kind"] = dict(reasons)
    if missing:
        outcome.problems.append(f"{len(missing)} poison records not dead-lettered: {missing[:8]}")
    restarted = [p.name for p in stack.processes if p.starts != 1 or not p.running]
    if restarted:
        outcome.problems.append(f"processes died on poison: {restarted}")


async def cluster(stack: Stack, shape: Shape, outcome: Outcome) -> None:
    """Three brokers (KRaft, replication factor 3, min.insync.replicas 2, producers with acks=all): one
    of them, picked at random, killed with SIGKILL mid-run and started again `shape.outage_s` later,
    `shape.outages` times. Writes go on meanwhile (two replicas of three are in sync)."""
    kafka = stack.cluster
    assert kafka is not None
    standard_stack(stack)
    await stack.ready()
    faults = Faults()
    rng = random.Random(stack.seed)
    outcome.figures["journal leaders before"] = dict(await kafka.leaders(JOURNAL.name))

    async def inject(stack: Stack, stopping: asyncio.Event, outcome: Outcome) -> None:
        gap = shape.duration_s * 0.8 / shape.outages
        for n in range(shape.outages):
            node = rng.choice(kafka.nodes)
            fault = faults.record(f"kill -9 broker node {node}")
            await asyncio.to_thread(kafka.kill, node)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), shape.outage_s)
            await asyncio.to_thread(kafka.start_node, node)
            faults.record(f"broker node {node} started")
            if await wait_ready(stack.processes, 180):
                faults.recovered(fault)
            if n + 1 < shape.outages:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), max(1.0, gap - shape.outage_s - 10))

    await course(stack, shape, outcome, inject)
    outcome.fault_log(faults)
    outcome.figures["journal leaders after"] = dict(await kafka.leaders(JOURNAL.name))


SCENARIOS: dict[str, Callable[[Stack, Shape, Outcome], Awaitable[None]]] = {
    "kill": kill,
    "broker": broker,
    "postgres": postgres,
    "rebalance": rebalance,
    "poison": poison,
    "cluster": cluster,
}


async def run_scenario(infra: Infrastructure, name: str, mode: str, seed: int) -> Outcome:
    outcome = Outcome(name, seed, mode)
    started = now()
    kafka: KafkaCluster | None = None
    stack: Stack | None = None
    try:
        if name == "cluster":
            kafka = await asyncio.to_thread(KafkaCluster.start, 3)
            infra = Infrastructure(
                infra.broker, infra.postgres, infra.log_dir, kafka.bootstrap_servers, infra.send_lease_s
            )
        stack = Stack(infra, name, seed, cluster=kafka)
        await stack.open()
        await SCENARIOS[name](stack, SHAPES[mode][name], outcome)
    except Exception as exc:
        outcome.problems.append(f"the scenario failed: {type(exc).__name__}: {exc}")
    finally:
        if stack is not None:
            await stack.close()
        if kafka is not None:
            await asyncio.to_thread(kafka.stop)
        outcome.wall_s = round(now() - started, 1)
    return outcome
