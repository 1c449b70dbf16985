"""One broker of a three-broker cluster dying loses nothing: two `arrears serve ledger` processes in one
consumer group, invoices posted over HTTP all along, and past a fifth of the stream `kill -9` of the
broker that leads the most partitions of the journal; it comes back ten seconds later.

Topics have three replicas and min.insync.replicas 2, the producer acks=all: every record the log
acknowledged is on two brokers at least, so losing one loses none of it. The ERP's view: every event
id answered 202 is on its debtor's statement exactly once, the API went on answering 202 (the longest
pause between two is reported), the ledgers never restarted, and /readyz came back to 200."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts.topics import JOURNAL, catalogue
from tests.infra.kafka_cluster import KafkaCluster
from tests.integration.fault_processes import (
    InvoiceBook,
    Ledgers,
    Poster,
    ReadinessProbe,
    Steps,
    check_applied,
    now,
    wait_caught_up,
    wait_ready,
)

pytestmark = pytest.mark.integration

NODES = 3
LEDGERS = 2
RATE = 400.0
"""Events per second the ERP posts: what two ledgers apply on a small machine beside three brokers."""
INVOICES = 14_000
"""About 35 s of posting at RATE: the broker dies, stays away and comes back while it goes on."""
KILL_AT = 0.2
"""The broker dies once this share of the stream was answered 202."""
DOWN_S = 10.0
POSTING_CAP_S = 75.0
"""Posting stops here at the latest, whatever is left of the stream (keeps the test's time bounded)."""
CATCH_UP_S = 40.0


@contextlib.asynccontextmanager
async def cluster_starting() -> AsyncIterator[asyncio.Task[KafkaCluster]]:
    """The cluster starting in a thread while the test prepares the rest; stopped when the block ends."""
    task = asyncio.create_task(asyncio.to_thread(KafkaCluster.start, NODES))
    try:
        yield task
    finally:
        cluster = await asyncio.shield(task)
        await asyncio.to_thread(cluster.stop)


@dataclass(frozen=True)
class Replication:
    replicas: frozenset[int]
    """The distinct numbers of replicas of the topic's partitions ({3}: three each)."""
    in_sync: frozenset[int]
    """Likewise, of in-sync replicas."""
    min_insync: str


async def replication_of(bootstrap_servers: str, topics: list[str]) -> dict[str, Replication]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    # Per resource: (error code, error message, type, name, [(config name, value, ...), ...])
    min_insync = {
        resource[3]: value
        for response in responses
        for resource in response.resources
        for name, value, *_ in resource[4]
        if name == "min.insync.replicas"
    }
    return {
        t["topic"]: Replication(
            frozenset(len(p["replicas"]) for p in t["partitions"]),
            frozenset(len(p["isr"]) for p in t["partitions"]),
            min_insync.get(t["topic"], "?"),
        )
        for t in described
    }


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest interval within [start, end] without one of `times`, and where it began."""
    marks = [start, *sorted(t for t in times if start < t < end), end]
    return max((b - a, a) for a, b in itertools.pairwise(marks))


async def test_kill_9_of_a_broker_of_three_loses_nothing_and_the_ledgers_carry_on(
    new_database: Callable[[], Awaitable[str]], tenant: str, tmp_path: Path
) -> None:
    step = Steps()
    async with cluster_starting() as starting:
        database_url = await new_database()
        # The key is minted while the brokers start: `arrears keys create` without a broker configured
        # writes it to the database all the same (its log is then PostgreSQL's, which it does not use).
        key = await Ledgers(database_url, "", tmp_path / "keys").create_key(tenant)
        step("database and API key ready")
        cluster = await starting
        step(f"{NODES} brokers up in {cluster.started_in_s:.1f} s on {cluster.bootstrap_servers}")
        await one_broker_dies(cluster, database_url, key, tenant, tmp_path, step)


async def one_broker_dies(
    cluster: KafkaCluster, database_url: str, key: str, tenant: str, tmp_path: Path, step: Steps
) -> None:
    topics = [name for name, _, _ in catalogue()]
    replication = await replication_of(cluster.bootstrap_servers, topics)
    wrong = {t: r for t, r in replication.items() if (r.replicas, r.min_insync) != (frozenset({3}), "2")}
    assert len(replication) == len(topics) and not wrong, f"not 3 replicas, min ISR 2: {wrong}"

    book = InvoiceBook(tenant, debtors=200)
    async with Ledgers(database_url, cluster.bootstrap_servers, tmp_path, LEDGERS) as ledgers:
        await ledgers.start()
        step(f"{LEDGERS} ledgers up")
        poster = Poster(ledgers.urls, key, book.batches(100, INVOICES), concurrency=3, rate=RATE)
        probe = ReadinessProbe(ledgers.urls)
        probing = asyncio.create_task(probe.run())
        posting = asyncio.create_task(poster.run())
        posting_from = now()
        try:
            while len(poster.acknowledged) < KILL_AT * INVOICES and not posting.done():
                await asyncio.wait({posting}, timeout=0.05)
            leaders_before = await cluster.leaders(JOURNAL.name)
            victim = leaders_before.most_common(1)[0][0]
            killed_at = now()
            await asyncio.to_thread(cluster.kill, victim)  # the poster goes on meanwhile
            step(
                f"kill -9 of broker {victim}, leader of {leaders_before[victim]} of"
                f" {JOURNAL.partitions} journal partitions ({len(poster.acknowledged)} events"
                " answered 202 so far)"
            )
            await asyncio.sleep(DOWN_S)
            leaders_down = await cluster.leaders(JOURNAL.name)
            isr_down = (await replication_of(cluster.bootstrap_servers, [JOURNAL.name]))[JOURNAL.name]
            starting_at = now()
            step(f"starting broker {victim}; journal leaders meanwhile {dict(leaders_down)}")
            await asyncio.to_thread(cluster.start_node, victim)
            up_at = now()
            step(f"broker {victim} up ({len(poster.acknowledged)} events answered 202 so far)")
            # The stream runs out first, unless posting is far slower than RATE.
            await asyncio.wait({posting}, timeout=max(0.0, POSTING_CAP_S - (now() - posting_from)))
            posting_to = now()
        finally:
            poster.stop()
            await asyncio.wait_for(posting, poster.drain_s + poster.request_timeout_s + 10)
        step(f"posting stopped: {len(poster.acknowledged)} of {INVOICES} events answered 202")
        ready_at_end = [await wait_ready(url, 30) for url in ledgers.urls]
        probe.stopping.set()
        await probing
        step(f"/readyz {ready_at_end}")
        lag = await wait_caught_up(database_url, cluster.bootstrap_servers, CATCH_UP_S)
        step(f"backlog {lag}")
        findings = await check_applied(
            ledgers.urls, key, book, poster, database_url, cluster.bootstrap_servers, lag
        )
        step("checked")
        after = await replication_of(cluster.bootstrap_servers, [JOURNAL.name, "__consumer_offsets"])
        restarts = {p.name: p.starts - 1 for p in ledgers.processes if p.starts != 1 or not p.running}
        out_of_order = ledgers.log_count("OutOfOrderSequenceNumber")
        replaced = ledgers.log_count("replacing the Kafka producer")

    accepted_202 = [a.ended for a in poster.attempts if a.outcome == "202"]
    gap, gap_from = longest_gap(accepted_202, posting_from, posting_to)
    twice = sum(1 for n in findings.movements.values() if n > 1)
    figures = (
        f"accepted {findings.acknowledged}, applied {findings.acknowledged - len(findings.lost)}, lost"
        f" {len(findings.lost)}, twice {twice}, never answered 202 {findings.unconfirmed}",
        f"longest pause between 202s {gap:.1f} s (from {gap_from - killed_at:+.1f} s of the kill);"
        f" {poster.accepted_between(killed_at, starting_at)} POSTs answered 202 while the broker was"
        f" down; broker back up {up_at - starting_at:.1f} s after its start",
        f"POST outcomes before the kill {dict(poster.outcomes(0, killed_at))}, while down"
        f" {dict(poster.outcomes(killed_at, up_at))}, after {dict(poster.outcomes(up_at))}",
        f"/readyz while down {dict(probe.between(killed_at, up_at))},"
        f" after {dict(probe.between(up_at, now()))}, at the end {ready_at_end}",
        f"journal leaders before {dict(leaders_before)}, while broker {victim} was down"
        f" {dict(leaders_down)}; in-sync replicas per partition while down {sorted(isr_down.in_sync)},"
        f" at the end {sorted(after[JOURNAL.name].in_sync)} (__consumer_offsets: replicas"
        f" {sorted(after['__consumer_offsets'].replicas)}); producers replaced after a failed publish"
        f" {replaced}, OutOfOrderSequenceNumber in the ledgers' logs {out_of_order}",
    )
    print(findings.summary(), *figures, sep="\n")
    problems = findings.problems()
    if findings.acknowledged < INVOICES // 2:
        problems.append(f"only {findings.acknowledged} events answered 202")
    if restarts:
        problems.append(f"ledger processes restarted or gone: {restarts}")
    if any(answer != 200 for answer in ready_at_end):
        problems.append(f"/readyz at the end answered {ready_at_end}, not 200 everywhere")
    if poster.accepted_between(killed_at, starting_at) == 0:
        problems.append("no POST was answered 202 while the broker was down")
    if leaders_down[victim]:
        problems.append(
            f"broker {victim} still led {leaders_down[victim]} partitions {DOWN_S:.0f} s after it died"
        )
    if gap > DOWN_S:
        problems.append(f"the API answered no 202 for {gap:.1f} s")
    assert not problems, "\n".join([findings.summary(), *problems, *figures, str(step)])
