"""A scenario's figures, its table, and the verdict of a whole run."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.checks import CommandVerdict, LedgerVerdict
from chaos.faults import Faults


@dataclass
class Outcome:
    """What one scenario did and found."""

    scenario: str
    seed: int
    mode: str
    wall_s: float = 0.0
    accepted: int = 0
    applied: int = 0
    lost: int = 0
    twice: int = 0
    unconfirmed: int = 0
    decided: int | None = None
    executed: int | None = None
    emails_sent: int | None = None
    emails_twice: int | None = None
    kills: int = 0
    faults: int = 0
    recovery_median_s: float | None = None
    recovery_max_s: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific figures (poison outcomes, group sizes, POST outcomes)."""
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None
    """Why the scenario did not run (it is then neither passed nor failed)."""

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.problems

    def ledger(self, verdict: LedgerVerdict) -> None:
        self.accepted = verdict.accepted
        self.applied = verdict.applied
        self.lost = len(verdict.lost)
        self.twice = len(verdict.twice)
        self.unconfirmed = verdict.unconfirmed
        self.problems += verdict.problems()

    def commands(self, verdict: CommandVerdict) -> None:
        self.decided = verdict.decided
        self.executed = verdict.executed
        self.emails_sent = verdict.emails_received
        self.emails_twice = len(verdict.emails_twice)
        self.figures["delivery statuses"] = dict(verdict.statuses)
        self.problems += verdict.problems()

    def fault_log(self, faults: Faults) -> None:
        self.kills = faults.count("kill -9")
        notifier_kills = faults.count("kill -9 notifier")
        if self.emails_twice and self.emails_twice > notifier_kills:
            self.problems.append(
                f"{self.emails_twice} e-mails received twice, more than the {notifier_kills} notifier"
                " kills that may each re-send the one in flight"
            )
        self.faults = len(faults.done)
        recoveries = faults.recoveries()
        if recoveries:
            self.recovery_median_s = round(statistics.median(recoveries), 2)
            self.recovery_max_s = round(max(recoveries), 2)
        unrecovered = [f"{f.what} at +{f.at:.1f} s" for f in faults.unrecovered() if "started" not in f.what]
        if unrecovered:
            self.problems.append(f"{len(unrecovered)} faults not recovered from: {unrecovered[:5]}")

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["passed"] = self.passed
        return found


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(outcome: Outcome) -> str:
    """The scenario's figures as a two-column table."""
    if outcome.skipped is not None:
        return f"== {outcome.scenario}: not run: {outcome.skipped}"
    rows = [
        ("events accepted", outcome.accepted),
        ("events applied", outcome.applied),
        ("events lost", outcome.lost),
        ("events applied twice", outcome.twice),
        ("events never answered 202", outcome.unconfirmed),
        ("commands decided", outcome.decided),
        ("commands executed", outcome.executed),
        ("e-mails received", outcome.emails_sent),
        ("e-mails received twice", outcome.emails_twice),
        ("kills (SIGKILL)", outcome.kills),
        ("faults injected", outcome.faults),
        ("recovery median (s)", outcome.recovery_median_s),
        ("recovery max (s)", outcome.recovery_max_s),
        ("wall time (s)", outcome.wall_s),
    ]
    rows += [(name, value) for name, value in outcome.figures.items()]
    width = max(len(name) for name, _ in rows)
    verdict = "PASS" if outcome.passed else "FAIL"
    lines = [f"== {outcome.scenario} ({outcome.mode}, seed {outcome.seed}): {verdict}"]
    lines += [f"  {name:<{width}}  {_cell(value)}" for name, value in rows]
    lines += [f"  ! {problem}" for problem in outcome.problems]
    return "\n".join(lines)


def summary(outcomes: list[Outcome], wall_s: float) -> str:
    """One line per scenario (its table was printed when it ended) and the verdict."""
    lines = []
    for o in outcomes:
        if o.skipped is not None:
            lines.append(f"  {o.scenario:<10} not run: {o.skipped}")
            continue
        verdict = "PASS" if o.passed else "FAIL"
        lines.append(
            f"  {o.scenario:<10} {verdict}  accepted {o.accepted}, lost {o.lost}, twice {o.twice},"
            f" commands {_cell(o.executed)}/{_cell(o.decided)} executed, e-mails twice"
            f" {_cell(o.emails_twice)}, kills {o.kills}, {o.wall_s:.0f} s"
        )
    ran = [o for o in outcomes if o.skipped is None]
    failed = [o.scenario for o in ran if not o.passed]
    lines.append(
        f"== {len(ran)} scenarios run in {wall_s:.0f} s: "
        + (f"FAILED: {', '.join(failed)}" if failed else "nothing lost, nothing applied or sent twice")
    )
    return "\n".join(lines)
