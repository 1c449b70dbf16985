"""Whether a process is still running, as the tests that kill processes check it."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has exited; its parent has not reaped it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
