"""The cases a consumer batch (or a business day's slice) works on, and everything it will write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.policy import PolicyPublished
from services.dunning.agencies import AgencyKey, AgencyPerformance, AgencyRecord
from services.dunning.domain import Case, is_due, load_case_json
from services.dunning.domain.audit import Line
from services.dunning.kpis import KpiFacts
from services.dunning.store import DebtorKey
from services.runtime.json_default import json_default
from services.runtime.log import Message


def encode_case(case: Case) -> bytes:
    """The case as `dump_case` gives it, encoded as JSON (a unit test holds the bytes equal): orjson
    walks the dataclasses itself, instead of pydantic building the dicts and lists first."""
    return orjson.dumps(case, default=json_default)


def decode_case(raw: bytes) -> Case:
    return load_case_json(raw)


@dataclass
class Batch:
    """The cases a batch works on, by debtor, and everything it will write."""

    cases: dict[DebtorKey, dict[str, Case]] = field(default_factory=dict)
    changed: set[tuple[str, str, str]] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    feed: list[dict[str, Any]] = field(default_factory=list)
    record: list[tuple[str, str, Line]] = field(default_factory=list)
    """Lines of the debtors' records, (tenant, debtor, line) in the order they happened."""
    performance: dict[str, dict[AgencyKey, AgencyRecord]] = field(default_factory=dict)
    """Each tenant's agency records as they stand (shared by a day's slices)."""
    performance_added: dict[str, dict[AgencyKey, AgencyRecord]] = field(default_factory=dict)
    """What this transaction adds to them (placements, recoveries): written as increments."""
    written: set[DebtorKey] = field(default_factory=set)
    """Debtors whose rows this transaction wrote or whose profile it stored."""
    versions: dict[tuple[str, str], str] = field(default_factory=dict)
    """The version (`xmin`) of each case row this transaction read or wrote, by (tenant, case id).
    A case is written only while its row still has that version, and a case without one only while
    it still has no row (`_save`); what the consumer batch leaves behind is cached with it."""
    kpi: KpiFacts = field(default_factory=KpiFacts)
    """What the KPI tables learn from the cases' moves (`kpis.observe`)."""
    caches: bool = False
    """The consumer batch's own (not a day's slice): what it leaves behind is cached."""

    def count(self, tenant: str, key: AgencyKey, updated: AgencyPerformance) -> None:
        """Take the tenant's agency records after a placement or recovery of kind `key`."""
        before = self.performance.get(tenant, {}).get(key, AgencyRecord())
        after = updated[key]
        added = self.performance_added.setdefault(tenant, {})
        so_far = added.get(key, AgencyRecord())
        added[key] = AgencyRecord(
            so_far.placements + after.placements - before.placements,
            so_far.placed_minor + after.placed_minor - before.placed_minor,
            so_far.recovered_minor + after.recovered_minor - before.recovered_minor,
        )
        self.performance[tenant] = dict(updated)

    def hold(self, tenant: str, debtors: Iterable[str], rows: Iterable[tuple[bytes, str]]) -> None:
        """The stored cases of the tenant's `debtors` (none for a debtor without rows), from their
        encoded states and their rows' versions."""
        for debtor in debtors:
            self.cases[(tenant, debtor)] = {}
        for state, version in rows:
            case = decode_case(state)
            self.cases[(tenant, case.debtor_id)][case.case_id] = case
            remember(self, case, version)

    def put(self, case: Case) -> None:
        self.cases.setdefault((case.tenant_id, case.debtor_id), {})[case.case_id] = case
        self.changed.add((case.tenant_id, case.debtor_id, case.case_id))


def remember(work: Batch, case: Case, version: str) -> None:
    work.versions[(case.tenant_id, case.case_id)] = version


def due_debtors(
    work: Batch, tenant: str, debtors: Sequence[str], day: dt.date, new_version: PolicyPublished | None
) -> list[str]:
    """The debtors, among those the batch holds, with a case to decide on `day` (`is_due`; on the first
    business day of a version, `new_version` is that version)."""
    return [
        debtor
        for debtor in debtors
        if any(is_due(c, day, new_version) for c in work.cases.get((tenant, debtor), {}).values())
    ]


def moved(work: Batch, case: Case) -> bool:
    known = work.cases.get((case.tenant_id, case.debtor_id), {}).get(case.case_id)
    return known != case
