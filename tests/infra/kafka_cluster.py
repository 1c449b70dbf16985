"""A real Kafka cluster for tests and tools: N combined broker+controller KRaft nodes on free loopback ports
in a temp folder, started by deploy/local/kafka-cluster.sh, with the topic catalogue replicated (factor
min(3, N), min.insync.replicas a majority).

    cluster = KafkaCluster.start(nodes=3)   # cluster.bootstrap_servers == "127.0.0.1:p1,127.0.0.1:p2,..."
    cluster.kill(2)                          # SIGKILL of node 2, as a crash would
    cluster.start_node(2)                    # back, once it serves again (blocking: use a thread)
    await cluster.leaders("ar.journal.v1")   # {node id: partitions it leads}
    cluster.stop()

Nodes are numbered from 1 (the node id). The cluster also stops at interpreter exit if nobody called stop().
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from tests.infra.kafka_broker import free_ports

KAFKA_CLUSTER_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka-cluster.sh"


@dataclass
class KafkaCluster:
    root: Path
    ports: list[int]
    controller_ports: list[int]
    started_in_s: float
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, nodes: int = 3, timeout_s: float = 120.0, attempts: int = 3) -> KafkaCluster:
        """Fetch the broker jars if needed, start every node, wait for them and create the topics."""
        failures = []
        # Free ports are only free until someone else takes them, hence the retries.
        for _ in range(attempts):
            root = Path(tempfile.mkdtemp(prefix="arrears-kafka-cluster-"))
            found = free_ports(2 * nodes)
            cluster = cls(root, found[:nodes], found[nodes:], 0.0)
            started = time.monotonic()
            result = cluster._run(["start"], timeout_s + 120, timeout_s)
            if result.returncode == 0:
                cluster.started_in_s = time.monotonic() - started
                atexit.register(cluster.stop)
                return cluster
            failures.append(result.stdout)
            cluster._run(["kill"], 120)
            shutil.rmtree(root, ignore_errors=True)
            if "Address already in use" not in result.stdout:
                break
        raise RuntimeError(
            f"kafka-cluster.sh start failed ({len(failures)} tries); last output:\n{failures[-1]}"
        )

    @property
    def nodes(self) -> list[int]:
        return list(range(1, len(self.ports) + 1))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def node_dir(self, node: int) -> Path:
        return self.root / "cluster" / f"node-{node}"

    def log_file(self, node: int) -> Path:
        return self.node_dir(node) / "broker.log"

    def pid(self, node: int) -> int | None:
        """The node's process id while it runs (as its pid file says), else None."""
        try:
            pid = int((self.node_dir(node) / "broker.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def kill(self, node: int) -> None:
        """SIGKILL of the node's process; returns once it is gone."""
        self._check("kill-node", str(node), timeout_s=60)

    def stop_node(self, node: int) -> None:
        """SIGTERM: a controlled shutdown (its leaderships move first)."""
        self._check("stop-node", str(node), timeout_s=90)

    def start_node(self, node: int, timeout_s: float = 90.0) -> None:
        """Start a node that was killed or stopped; returns once it serves (blocking: use a thread)."""
        self._check("start-node", str(node), timeout_s=timeout_s + 60, start_timeout_s=timeout_s)

    async def leaders(self, topic: str) -> Counter[int]:
        """How many of the topic's partitions each node leads (nodes leading none are left out)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=10_000)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return Counter(p["leader"] for p in described["partitions"] if p["leader"] >= 0)

    def stop(self) -> None:
        """Every node killed (its data is removed next: a controlled shutdown would only cost time)."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._check("kill", timeout_s=120)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _env(self, start_timeout_s: float) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHON": sys.executable,
            "KAFKA_CLUSTER_DIR": str(self.root / "cluster"),
            "KAFKA_NODES": str(len(self.ports)),
            "KAFKA_PORTS": ",".join(map(str, self.ports)),
            "KAFKA_CONTROLLER_PORTS": ",".join(map(str, self.controller_ports)),
            "KAFKA_START_TIMEOUT": str(int(start_timeout_s)),
        }

    def _run(
        self, args: list[str], timeout_s: float, start_timeout_s: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_CLUSTER_SH), *args],
            env=self._env(start_timeout_s),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def _check(self, *args: str, timeout_s: float, start_timeout_s: float = 90.0) -> None:
        result = self._run(list(args), timeout_s, start_timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"kafka-cluster.sh {' '.join(args)} failed:\n{result.stdout}")
