"""The embedded default as a user runs it: `arrears serve ledger` as a real process with no Kafka and no
DATABASE_URL, restarted after a kill -9 and after a SIGTERM, with `arrears keys create`, `clock advance`
and `policy publish` run beside it. Every accepted invoice must reach its debtor's statement exactly
once, and a CLI command must leave the server's embedded PostgreSQL running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime.embedded_postgres import find_embedded_postgres, stop_embedded_postgres
from tests.infra.kafka_broker import free_ports
from tests.integration.events import invoice

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARREARS = [sys.executable, "-m", "services.cli"]
AS_OF = "2026-03-31"
START_TIMEOUT_S = 40
APPLY_TIMEOUT_S = 20


@dataclass
class Embedded:
    """One data dir and port, as a user's shell has them; the servers started on them."""

    data_dir: Path
    port: int
    tenant: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith("ARREARS_") and k != "DATABASE_URL"
        }
        return {
            **inherited,
            "ARREARS_DATA_DIR": str(self.data_dir),
            "ARREARS_HTTP_PORT": str(self.port),
            "ARREARS_LOG_LEVEL": "WARNING",
            "ARREARS_CONSUMER_FETCH_TIMEOUT_MS": "50",
            "ARREARS_OUTBOX_POLL_MS": "20",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arrears(self, *args: str) -> str:
        done = subprocess.run(
            [*ARREARS, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"arrears {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def serve(self) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"serve-{len(self.servers)}.log").open("wb")
        server = subprocess.Popen(
            [*ARREARS, "serve", "ledger"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        self.servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            assert server.poll() is None, f"the server exited with {server.returncode}: {self.server_log()}"
            assert time.monotonic() < deadline, f"the server did not start: {self.server_log()}"
            time.sleep(0.2)
        return server

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def server_log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.data_dir.glob("serve-*")))

    def stop_all(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.kill()
                server.wait(10)
        stop_embedded_postgres(self.data_dir / "postgres")


@pytest.fixture
def embedded() -> Iterator[Embedded]:
    # Short: the server's Unix socket lives in the data dir, and a socket path has at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="arrears-e-"))
    (port,) = free_ports(1)
    running = Embedded(folder / "var", port)
    running.data_dir.mkdir()
    try:
        yield running
    finally:
        running.stop_all()
        shutil.rmtree(folder, ignore_errors=True)


def invoices(tenant: str, first: int, count: int) -> list[dict[str, Any]]:
    return [
        invoice(tenant, f"D{n % 3}", f"I{n:04}", "2026-01-05", "2026-02-04", 1_000 + n)
        for n in range(first, first + count)
    ]


def post(embedded: Embedded, key: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{embedded.url}/v1/events", json=events, headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def open_items(embedded: Embedded, key: str, debtor: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{embedded.url}/v1/debtors/{debtor}/statement",
        params={"as_of": AS_OF},
        headers={"X-API-Key": key},
        timeout=30,
    )
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["open_items"]
    balance = sum(c["balance"] for c in response.json()["currencies"])
    assert balance == sum(i["outstanding"] for i in items)
    return items


def assert_in_statements_once(embedded: Embedded, key: str, events: list[dict[str, Any]]) -> None:
    """Wait until every event's invoice is on its debtor's statement; none may be there twice."""
    expected: dict[str, list[str]] = {}
    for event in events:
        expected.setdefault(event["debtorid"], []).append(event["data"]["invoice_id"])
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while True:
        found = {debtor: [i["invoice_id"] for i in open_items(embedded, key, debtor)] for debtor in expected}
        for debtor, ids in found.items():
            assert len(ids) == len(set(ids)), f"{debtor}: an invoice twice in {ids}"
        if all(sorted(found[d]) == sorted(ids) for d, ids in expected.items()):
            return
        missing = {
            d: sorted(set(ids) - set(found[d])) for d, ids in expected.items() if set(ids) - set(found[d])
        }
        assert time.monotonic() < deadline, f"never applied: {missing}\n{embedded.server_log()}"
        time.sleep(0.2)


def business_date(embedded: Embedded, key: str) -> str | None:
    response = httpx.get(f"{embedded.url}/v1/business-date", headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 200, response.text
    day: str | None = response.json()["business_date"]
    return day


def test_cli_commands_beside_a_running_server_leave_its_database_running(embedded: Embedded) -> None:
    embedded.serve()

    key = embedded.arrears("keys", "create", "--tenant", embedded.tenant).strip().splitlines()[-1]
    assert embedded.answers(), f"keys create stopped the server's database: {embedded.server_log()}"
    embedded.arrears("clock", "advance", "--tenant", embedded.tenant, "--to", AS_OF)
    embedded.arrears(
        "policy", "publish", "--tenant", embedded.tenant, "--version", "1", "--effective-from", AS_OF
    )
    assert embedded.answers(), f"a CLI command stopped the server's database: {embedded.server_log()}"

    events = invoices(embedded.tenant, 0, 3)
    assert post(embedded, key, events)["accepted"] == 3
    assert_in_statements_once(embedded, key, events)
    assert business_date(embedded, key) == AS_OF  # the clock event the CLI published, applied by the server


def test_a_server_killed_with_sigkill_loses_no_accepted_invoice_and_applies_none_twice(
    embedded: Embedded,
) -> None:
    key = embedded.arrears("keys", "create", "--tenant", embedded.tenant).strip().splitlines()[-1]
    server = embedded.serve()
    applied = invoices(embedded.tenant, 0, 12)
    assert post(embedded, key, applied)["accepted"] == 12
    assert_in_statements_once(embedded, key, applied)
    in_flight = invoices(embedded.tenant, 12, 12)
    assert post(embedded, key, in_flight)["accepted"] == 12

    server.send_signal(signal.SIGKILL)
    server.wait(10)
    embedded.serve()

    after = invoices(embedded.tenant, 24, 12)
    assert post(embedded, key, after)["accepted"] == 12
    assert post(embedded, key, in_flight)["duplicates"] == 12  # the ERP's retry after the crash
    assert_in_statements_once(embedded, key, applied + in_flight + after)


def test_a_server_stopped_with_sigterm_and_started_again_applies_what_comes_after(
    embedded: Embedded,
) -> None:
    key = embedded.arrears("keys", "create", "--tenant", embedded.tenant).strip().splitlines()[-1]
    server = embedded.serve()
    before = invoices(embedded.tenant, 0, 12)
    assert post(embedded, key, before)["accepted"] == 12
    assert_in_statements_once(embedded, key, before)

    server.send_signal(signal.SIGTERM)
    exit_code = server.wait(30)
    left_running = find_embedded_postgres(embedded.data_dir / "postgres")
    embedded.serve()

    after = invoices(embedded.tenant, 12, 12)
    assert post(embedded, key, after)["accepted"] == 12
    assert_in_statements_once(embedded, key, before + after)
    assert exit_code == 0, embedded.server_log()
    assert left_running is None, "the server started the embedded PostgreSQL, so it stops it at exit"
