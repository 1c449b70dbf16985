"""CPU time and peak memory of the processes a run involves, read from /proc (Linux; no psutil).

Groups: the bench process itself (which also runs the ledger consumer), the Kafka broker JVM, the
PostgreSQL server (postmaster and backends) and, while it runs, the ledger API server process.

CPU: user + system seconds; for PostgreSQL also the reaped backends' time (the postmaster's
cutime/cstime), so backends that exit during a stage still count.
Memory: the bench process's peak RSS (ru_maxrss), each process's peak RSS (VmHWM), and, sampled every
two seconds or less often, the peak of the group's summed PSS (proportional set size: shared buffers
are divided among the backends that map them instead of being counted once per backend). A sample
reads /proc/<pid>/smaps_rollup, which makes the kernel walk the process's page tables: for
PostgreSQL's backends, each mapping gigabytes of shared buffers, a sample of every process takes tens
of milliseconds of CPU. So the sampler waits at least a hundred times as long as its last sample
took (`SAMPLING_SHARE`): it takes at most about 1 % of a core from the processes under test.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")
SAMPLING_SHARE = 0.01
"""The most of one core the memory sampler may use."""


@dataclass
class Group:
    name: str
    pids: Callable[[], list[int]]
    reaper: int | None = None
    """A process whose cutime/cstime collect the CPU time of its exited children."""
    peak_pss: int = 0
    peak_hwm: dict[int, int] = field(default_factory=dict)
    gone_cpu: float = 0.0


class Processes:
    """The run's process groups, sampled in a background thread."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.groups: dict[str, Group] = {}
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample_forever, name="bench-processes", daemon=True)
        self.add("bench", lambda: [os.getpid()])

    def add(self, name: str, pids: Callable[[], list[int]], reaper: int | None = None) -> None:
        with self._lock:
            self.groups[name] = Group(name, pids, reaper)

    def forget(self, name: str) -> None:
        """Before a group's processes exit: sample them one last time and keep their CPU time."""
        self.sample()
        with self._lock:
            group = self.groups.get(name)
            if group is not None:
                group.gone_cpu += _group_cpu(group)
                group.pids = list

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per group."""
        with self._lock:
            return {name: group.gone_cpu + _group_cpu(group) for name, group in self.groups.items()}

    def sample(self) -> None:
        with self._lock:
            for group in self.groups.values():
                pss = 0
                for pid in group.pids():
                    pss += _status_kb(f"/proc/{pid}/smaps_rollup", "Pss") * 1024
                    hwm = _status_kb(f"/proc/{pid}/status", "VmHWM") * 1024
                    group.peak_hwm[pid] = max(group.peak_hwm.get(pid, 0), hwm)
                group.peak_pss = max(group.peak_pss, pss)

    def memory(self) -> dict[str, Any]:
        self.sample()
        out: dict[str, Any] = {}
        with self._lock:
            for name, group in self.groups.items():
                entry: dict[str, Any] = {
                    "peak_pss_sum_bytes": group.peak_pss or None,
                    "peak_rss_max_process_bytes": max(group.peak_hwm.values(), default=0) or None,
                    "processes_seen": len(group.peak_hwm),
                }
                out[name] = entry
        out["bench"]["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return out

    def _sample_forever(self) -> None:
        wait = self._interval_s
        while not self._stop.wait(wait):
            started = time.thread_time()
            with contextlib.suppress(Exception):
                self.sample()
            wait = max(self._interval_s, (time.thread_time() - started) / SAMPLING_SHARE)


def children_of(parent: int) -> list[int]:
    """The live child processes of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat and int(stat[1]) == parent:
            found.append(int(entry.name))
    return found


def with_children(parent: int | None) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        if parent is None or not Path(f"/proc/{parent}").exists():
            return []
        return [parent, *children_of(parent)]

    return pids


def _group_cpu(group: Group) -> float:
    total = 0.0
    for pid in group.pids():
        stat = _stat(pid)
        if stat:
            # Fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
            total += (int(stat[11]) + int(stat[12])) / _TICK
            if pid == group.reaper:
                total += (int(stat[13]) + int(stat[14])) / _TICK
    return total


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _status_kb(path: str, key: str) -> int:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
