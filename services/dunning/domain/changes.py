"""Case events and timeline lines being built, and their numbering into case events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from contracts.collections import CaseChange, CaseEvent, InputRef
from contracts.money import Money
from services.dunning.domain.case import INPUTS_LIMIT, TIMELINE_LIMIT, Case, Entry, replace, status_on


@dataclass
class Changes:
    """Case events being built (change, detail, agency, step) and timeline lines."""

    day: dt.date
    inputs: list[InputRef]
    events: list[tuple[CaseChange, str | None, str | None, str | None]] = field(default_factory=list)
    timeline: list[Entry] = field(default_factory=list)
    needs_decision: bool = False

    def add(
        self,
        change: CaseChange,
        detail: str | None = None,
        agency_id: str | None = None,
        step: str | None = None,
    ) -> int:
        """Add a case event; returns how many events this change set holds now."""
        self.events.append((change, detail, agency_id, step))
        self.timeline.append(Entry(self.day, change, detail or change))
        return len(self.events)

    def note(self, kind: str, detail: str) -> None:
        self.timeline.append(Entry(self.day, kind, detail))


def emit(case: Case, changes: Changes, policy_version: int | None) -> tuple[Case, list[CaseEvent]]:
    """Number the changes as case events (one version each), with the case's state after them."""
    status = status_on(case, changes.day)
    overdue = Money(amount_minor=case.overdue(changes.day), currency=case.currency)
    events = [
        CaseEvent(
            case_id=case.case_id,
            change=change,
            business_date=changes.day,
            version=case.version + index,
            overdue=overdue,
            step=step or case.step,
            status=status,
            agency_id=agency_id or (case.placement.agency_id if case.placement else None),
            next_action_date=case.next_action_date,
            detail=detail[:2000] if detail else None,
            policy_version=policy_version,
            inputs=changes.inputs[:INPUTS_LIMIT],
        )
        for index, (change, detail, agency_id, step) in enumerate(changes.events, start=1)
    ]
    lines = (*case.timeline, *changes.timeline)
    latest = max(line.business_date for line in lines) if lines else None
    timeline = tuple(line for line in lines if line.business_date == latest)[-TIMELINE_LIMIT:]
    return replace(case, version=case.version + len(events), status=status, timeline=timeline), events
