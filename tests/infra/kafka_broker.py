"""A real Kafka broker for a test session, started by deploy/local/kafka.sh on free ports in a temp folder."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"


@dataclass
class KafkaBroker:
    bootstrap_servers: str
    data_dir: Path
    port: int
    controller_port: int
    started_in_s: float
    _stopped: bool = field(default=False, repr=False)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        _kafka_sh("stop", _env(self.data_dir, self.port, self.controller_port), timeout_s=60)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_kafka_broker(timeout_s: float = 90.0, attempts: int = 3) -> KafkaBroker:
    """Fetch the broker jars if needed, start a broker, wait for it and create the topic catalogue."""
    _kafka_sh("fetch", dict(os.environ), timeout_s=600)
    failures = []
    # Free ports are only free until someone else takes them, hence the retries.
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="arrears-kafka-"))
        data_dir = root / "kafka"
        port, controller_port = free_ports(2)
        started = time.monotonic()
        result = _run(["start"], _env(data_dir, port, controller_port, timeout_s), timeout_s + 60)
        if result.returncode == 0:
            broker = KafkaBroker(
                f"127.0.0.1:{port}", data_dir, port, controller_port, time.monotonic() - started
            )
            atexit.register(broker.stop)
            return broker
        failures.append(result.stdout)
        _run(["stop"], _env(data_dir, port, controller_port), 60)
        shutil.rmtree(root, ignore_errors=True)
        if "Address already in use" not in result.stdout:
            break
    raise RuntimeError(f"kafka.sh start failed ({len(failures)} tries); last output:\n{failures[-1]}")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(data_dir: Path, port: int, controller_port: int, timeout_s: float = 90.0) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "KAFKA_DATA_DIR": str(data_dir),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_START_TIMEOUT": str(int(timeout_s)),
    }


def _run(args: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
    )


def _kafka_sh(command: str, env: dict[str, str], timeout_s: float) -> None:
    result = _run([command], env, timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh {command} failed:\n{result.stdout}")
