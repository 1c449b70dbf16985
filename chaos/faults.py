"""The faults a run injects, each with when it happened and how long the system took to get over it:
SIGKILL of service processes, members added to and removed from consumer groups, the broker and
PostgreSQL stopped and started, and poison records written straight to the topics."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos.poster import readyz
from chaos.processes import ServiceProcess, kafka_sh, now
from contracts.topics import ALL, CLOCK, JOURNAL, Topic
from services.runtime.embedded_postgres import start_embedded_postgres, stop_embedded_postgres
from services.runtime.kafka_log import KafkaLog
from services.runtime.log import Message
from tests.infra.kafka_broker import KafkaBroker


@dataclass
class Fault:
    """One fault: what, when (seconds into the run) and when the system was whole again."""

    what: str
    at: float
    recovered_at: float | None = None

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.at


@dataclass
class Faults:
    """The run's faults in order."""

    start: float = field(default_factory=now)
    done: list[Fault] = field(default_factory=list)

    def record(self, what: str) -> Fault:
        fault = Fault(what, now() - self.start)
        self.done.append(fault)
        return fault

    def recovered(self, fault: Fault) -> None:
        fault.recovered_at = now() - self.start

    def count(self, prefix: str = "") -> int:
        return sum(1 for f in self.done if f.what.startswith(prefix))

    def recoveries(self) -> list[float]:
        return [f.recovery_s for f in self.done if f.recovery_s is not None]

    def unrecovered(self) -> list[Fault]:
        return [f for f in self.done if f.recovered_at is None]


async def wait_ready(processes: Sequence[ServiceProcess], timeout_s: float) -> bool:
    """Until every process answers `/readyz` 200 (False: not within `timeout_s`, or one exited)."""
    deadline = now() + timeout_s
    while now() < deadline:
        if any(p.process is not None and not p.running for p in processes):
            return False
        answers = await asyncio.gather(*(readyz(p.url) for p in processes))
        if all(a == 200 for a in answers):
            return True
        await asyncio.sleep(0.2)
    return False


# --- kill -9 ---------------------------------------------------------------------------------------


async def restart_after_kill(process: ServiceProcess, faults: Faults, fault: Fault, timeout_s: float) -> None:
    """Start the killed process again on its port and wait until it is ready."""
    process.start()
    if await wait_ready([process], timeout_s):
        faults.recovered(fault)


async def kill_loop(
    targets: Callable[[], Sequence[ServiceProcess]],
    faults: Faults,
    rng: random.Random,
    interval_s: tuple[float, float],
    stopping: asyncio.Event,
    min_kills: int = 0,
    recovery_timeout_s: float = 180.0,
) -> None:
    """Every `interval_s` (uniform), SIGKILL one process picked at random among those running and not
    being restarted, and start it again at once; its recovery is the time from the kill until it
    answers `/readyz` 200. Ends once `stopping` is set and at least `min_kills` were made."""
    restarting: dict[str, asyncio.Task[None]] = {}
    try:
        while not (stopping.is_set() and faults.count("kill -9") >= min_kills):
            await asyncio.sleep(rng.uniform(*interval_s))
            if stopping.is_set() and faults.count("kill -9") >= min_kills:
                break
            candidates = [p for p in targets() if p.name not in restarting and p.running]
            if not candidates:
                continue
            process = rng.choice(candidates)
            process.kill()
            fault = faults.record(f"kill -9 {process.name}")
            task = asyncio.create_task(restart_after_kill(process, faults, fault, recovery_timeout_s))
            restarting[process.name] = task
            task.add_done_callback(_forget(restarting, process.name))
    finally:
        if restarting:
            await asyncio.gather(*restarting.values(), return_exceptions=True)


def _forget(tasks: dict[str, asyncio.Task[None]], name: str) -> Callable[[asyncio.Task[None]], None]:
    def done(_: asyncio.Task[None]) -> None:
        tasks.pop(name, None)

    return done


# --- the broker and PostgreSQL ---------------------------------------------------------------------


async def broker_outage(
    broker: KafkaBroker, faults: Faults, down_s: float, processes: Sequence[ServiceProcess]
) -> None:
    """`kafka.sh stop`, `down_s` seconds, `kafka.sh start`; recovered once every process is ready."""
    fault = faults.record("broker stopped")
    await asyncio.to_thread(kafka_sh, broker, "stop")
    try:
        await asyncio.sleep(down_s)
    finally:
        await asyncio.to_thread(kafka_sh, broker, "start")
    faults.record("broker started")
    if await wait_ready(processes, 180):
        faults.recovered(fault)


async def postgres_outage(
    data_dir: Path, faults: Faults, down_s: float, processes: Sequence[ServiceProcess]
) -> None:
    """The embedded PostgreSQL stopped (fast shutdown), `down_s` seconds, started again in place."""
    fault = faults.record("PostgreSQL stopped")
    await asyncio.to_thread(stop_embedded_postgres, data_dir)
    try:
        await asyncio.sleep(down_s)
    finally:
        await asyncio.to_thread(start_embedded_postgres, data_dir)
    faults.record("PostgreSQL started")
    if await wait_ready(processes, 180):
        faults.recovered(fault)


# --- poison records ------------------------------------------------------------------------------

POISON_TENANT = "poison"
"""The tenant of the poison records that parse far enough to have one: kept apart from the run's."""


@dataclass(frozen=True)
class Poison:
    topic: str
    kind: str
    key: bytes
    value: bytes

    @property
    def label(self) -> str:
        return f"{self.topic}/{self.kind}"


def _envelope(
    event_type: str, event_id: str, data: Mapping[str, object], debtor: str | None = "PX"
) -> dict[str, object]:
    found: dict[str, object] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "erp/poison",
        "type": event_type,
        "time": "2026-01-01T08:00:00Z",
        "tenantid": POISON_TENANT,
        "data": data,
    }
    if debtor is not None:
        found["debtorid"] = debtor
    return found


def _invoice(event_id: str, amount: int, issued: str, due: str) -> bytes:
    data = {
        "invoice_id": event_id,
        "issue_date": issued,
        "due_date": due,
        "amount": {"amount_minor": amount, "currency": "EUR"},
    }
    return json.dumps(_envelope("ar.invoice.issued.v1", event_id, data)).encode()


def poison_records(rng: random.Random, topics: Sequence[Topic] = ALL) -> list[Poison]:
    """Per topic: random bytes, JSON of the wrong shape, a known type with its data missing, a NUL
    in an identifier; per topic that carries amounts or dates, an amount of 2^64 and a date in the
    year 1 (an invoice on the journal, a business day on the clock). Keys name the poison, so that
    its dead letter can be found."""
    found = []
    for topic in topics:
        tag = rng.getrandbits(32)

        def add(kind: str, value: bytes, topic: Topic = topic, tag: int = tag) -> None:
            found.append(Poison(topic.name, kind, f"{POISON_TENANT}:{kind}:{tag}".encode(), value))

        add("garbage bytes", bytes(rng.getrandbits(8) for _ in range(64)))
        add("wrong schema", json.dumps({"hello": "world", "amount": [1, 2, 3]}).encode())
        add(
            "data missing",
            json.dumps(_envelope("ar.invoice.issued.v1", f"poison-missing-{tag}", {})).encode(),
        )
        add(
            "NUL",
            json.dumps(
                _envelope(
                    "ar.debtor.registered.v1", f"poison-nul-{tag}", {"name": "Nul\u0000Debtor"}, "P\u0000X"
                )
            ).encode(),
        )
        if topic == JOURNAL:
            add("amount 2^64", _invoice(f"poison-big-{tag}", 2**64, "2026-01-01", "2026-01-15"))
            add("year 1", _invoice(f"poison-year1-{tag}", 1000, "0001-01-01", "0001-01-15"))
        if topic == CLOCK:
            day = _envelope(
                "ar.businessday.started.v1", f"poison-day1-{tag}", {"business_date": "0001-01-01"}, None
            )
            add("year 1", json.dumps(day).encode())
    return found


async def write_poison(bootstrap_servers: str, poison: Sequence[Poison]) -> None:
    """Straight to the topics, past every API."""
    event_log = KafkaLog(bootstrap_servers, timeout_s=30)
    await event_log.start()
    try:
        stamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        await event_log.publish([Message(p.topic, p.key, p.value, (), stamp) for p in poison])
    finally:
        await event_log.stop()
