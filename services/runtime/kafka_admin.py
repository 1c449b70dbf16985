"""Kafka administration for local runs and tests: wait for a broker, create the topic catalogue.

Usage: ``python -m services.runtime.kafka_admin --bootstrap 127.0.0.1:9092``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from services.runtime.settings import Settings

log = logging.getLogger(__name__)


async def wait_until_ready(bootstrap_servers: str, timeout_s: float = 60.0) -> None:
    """Return once the cluster answers a metadata request and lists at least one broker."""
    # aiokafka logs every refused connection at ERROR; while polling those are expected.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await _poll_until_ready(bootstrap_servers, timeout_s)
    finally:
        aiokafka_log.setLevel(level)


async def _poll_until_ready(bootstrap_servers: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error: BaseException | None = None
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
            last_error = RuntimeError("the cluster lists no broker yet")
        except (KafkaError, OSError) as exc:
            last_error = exc
        finally:
            await admin.close()
        if loop.time() >= deadline:
            raise TimeoutError(f"Kafka at {bootstrap_servers} not ready in {timeout_s:.0f} s: {last_error!r}")
        await asyncio.sleep(0.25)


def min_insync_replicas(replication_factor: int) -> int:
    """A majority of the replicas (2 of 3): a write is acknowledged once that many hold it, so any one
    broker of three may die without losing it, and writes go on while it is away."""
    return replication_factor // 2 + 1


def topic_configs(retention_ms: int, replication_factor: int) -> dict[str, str]:
    configs = {"retention.ms": str(retention_ms)}
    if replication_factor > 1:
        configs["min.insync.replicas"] = str(min_insync_replicas(replication_factor))
    return configs


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[tuple[str, int, int]],
    replication_factor: int = 1,
    timeout_ms: int = 30_000,
) -> None:
    """Create each (name, partitions, retention_ms) topic that does not exist yet, with
    `replication_factor` replicas and, above one, min.insync.replicas a majority of them.

    Existing topics are left as they are, even if their partitions, retention or replicas differ.
    Returns once every broker knows every topic and a leader for each of its partitions.
    """
    if replication_factor < 1:
        raise ValueError(f"replication factor {replication_factor} < 1")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                partitions,
                replication_factor,
                topic_configs=topic_configs(retention_ms, replication_factor),
            )
            for name, partitions, retention_ms in topics
            if name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing, timeout_ms=timeout_ms)
            # (topic, error_code) plus an error message from CreateTopics v1 on.
            for topic, code, *message in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:
                    raise for_code(code)(f"could not create {topic}: {message[0] if message else ''}")
            log.info("created %d topics: %s", len(missing), ", ".join(t.name for t in missing))
        else:
            log.info("all %d topics exist", len(topics))
    finally:
        await admin.close()
    await wait_until_known(bootstrap_servers, [name for name, _, _ in topics], timeout_ms / 1000)


async def wait_until_known(bootstrap_servers: str, topics: list[str], timeout_s: float) -> None:
    """Return once every broker of the cluster knows each topic and a leader for each of its partitions.

    A topic is created when the controller commits it; each broker learns of it a little later. Until
    then a producer or consumer asking that broker gets UNKNOWN_TOPIC_OR_PARTITION, so whatever starts
    right after the topics are created waits here rather than meeting that."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        await client.bootstrap()
        while True:
            unknown = await _unknown_somewhere(client, topics)
            if not unknown:
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"brokers still lack these topics after {timeout_s:.0f} s: {unknown}")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


async def _unknown_somewhere(client: AIOKafkaClient, topics: list[str]) -> dict[int, list[str]]:
    """For each broker that lacks some of `topics` (or a leader of one of their partitions), which."""
    unknown: dict[int, list[str]] = {}
    for broker in client.cluster.brokers():
        try:
            described = (await client.send(broker.nodeId, MetadataRequest(topics))).to_object()["topics"]
        except KafkaError as exc:
            unknown[broker.nodeId] = [repr(exc)]
            continue
        known = {
            t["topic"]
            for t in described
            if not t["error_code"] and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if lacking := [topic for topic in topics if topic not in known]:
            unknown[broker.nodeId] = lacking
    return unknown


async def _main(bootstrap: str, replication_factor: int, wait_s: float) -> None:
    from contracts.topics import catalogue

    await wait_until_ready(bootstrap, wait_s)
    await ensure_topics(bootstrap, catalogue(), replication_factor)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Create the Arrears topics on a Kafka cluster.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="bootstrap servers, host:port[,...]")
    parser.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="replicas per partition (default: ARREARS_KAFKA_REPLICATION_FACTOR, else 1)",
    )
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the cluster first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        replication_factor = args.replication_factor
        if replication_factor is None:
            replication_factor = Settings().kafka_replication_factor
        asyncio.run(_main(args.bootstrap, replication_factor, args.wait))
    except (TimeoutError, KafkaError) as exc:
        sys.exit(f"kafka_admin: {exc!r}")


if __name__ == "__main__":
    main()
