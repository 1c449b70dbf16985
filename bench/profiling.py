"""Optional sampling profiles of the processes under test, with py-spy (`--profile DIR`).

py-spy attaches to a running process by pid (the API server, or the bench process itself while its
ledger consumer runs) and writes its samples as "folded" stacks, one line per stack with a count.
`summarize` turns such a file into the share of samples spent in (below) each function.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


class Profiler:
    def __init__(self, directory: Path, rate: int = 100) -> None:
        self.directory = directory
        self.rate = rate
        self.files: dict[str, Path] = {}
        found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(found).exists():
            raise RuntimeError("--profile needs py-spy: pip install -e '.[dev]'")
        self._py_spy = found
        directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def attach(self, pid: int, name: str) -> Iterator[None]:
        path = self.directory / f"{name}.folded"
        spy = subprocess.Popen(
            [
                self._py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(path),
                "--nonblocking",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
            if path.exists():
                self.files[name] = path


def summarize(
    path: Path, top: int = 25, within: tuple[str, ...] = ("services/", "contracts/")
) -> list[tuple[str, float]]:
    """(function, share of samples with it on the stack) for the busiest functions of the project
    (or every function, when `within` is empty)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}
        for frame in frames:
            if not within or any(part in frame for part in within):
                inclusive[frame] += samples
    return [(frame, samples / total) for frame, samples in inclusive.most_common(top)] if total else []


def summaries(profiler: Profiler | None) -> dict[str, list[tuple[str, float]]] | None:
    """The busiest functions of each profile taken (None without `--profile`)."""
    if profiler is None:
        return None
    return {
        name: [(frame, round(share, 3)) for frame, share in summarize(path)]
        for name, path in profiler.files.items()
    }
