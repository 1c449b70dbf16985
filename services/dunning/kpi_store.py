"""The KPI fact tables of the dunning schema (migration 0005): how the consumer writes them with the
cases (one statement per table, one array per column), and the aggregates the KPI endpoints read."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from services.dunning.kpis import AGENCY, LEDGER, NO_REASON, NO_STEP, AgencyCounts, KpiFacts, MonthCounts

SCHEMA = "dunning"
PROMISES = f"{SCHEMA}.kpi_promises"
DISPUTES = f"{SCHEMA}.kpi_disputes"
EPISODES = f"{SCHEMA}.kpi_episodes"
PLACEMENTS = f"{SCHEMA}.kpi_placements"
RECOVERIES = f"{SCHEMA}.kpi_recoveries"
OVER_LIMIT_LISTED = 1000
"""The most disputes over the policy's limit a request lists (the oldest first)."""


def _unnest(types: Sequence[str]) -> str:
    return ", ".join(f"${n}::{t}[]" for n, t in enumerate(types, 1))


def _insert(table: str, columns: Sequence[tuple[str, str]], key: Sequence[str], on_conflict: str) -> str:
    names = ", ".join(c for c, _ in columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT * FROM unnest({_unnest([t for _, t in columns])})"
        f" ON CONFLICT ({', '.join(key)}) {on_conflict}"
    )


def _update(columns: Sequence[str]) -> str:
    return "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns)


_PROMISE_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("promise_id", "text"),
    ("debtor_id", "text"),
    ("currency", "text"),
    ("amount_minor", "bigint"),
    ("made_on", "date"),
    ("due_on", "date"),
    ("outcome", "text"),
    ("outcome_on", "date"),
)
WRITE_PROMISES = _insert(
    PROMISES,
    _PROMISE_COLUMNS,
    ("tenant_id", "case_id", "promise_id"),
    _update([c for c, _ in _PROMISE_COLUMNS[3:]]),
)
_DISPUTE_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("dispute_id", "text"),
    ("debtor_id", "text"),
    ("currency", "text"),
    ("invoice_id", "text"),
    ("reason", "text"),
    ("amount_minor", "bigint"),
    ("opened_on", "date"),
)
# A dispute opened again under its id is open again, since the day it was first opened.
WRITE_DISPUTES = _insert(
    DISPUTES, _DISPUTE_COLUMNS, ("tenant_id", "case_id", "dispute_id"), "DO UPDATE SET resolved_on = NULL"
)
RESOLVE_DISPUTES = (
    f"UPDATE {DISPUTES} AS d SET resolved_on = r.day"
    f" FROM unnest({_unnest(['text', 'text', 'text', 'date'])}) AS r(tenant_id, case_id, dispute_id, day)"
    " WHERE d.tenant_id = r.tenant_id AND d.case_id = r.case_id AND d.dispute_id = r.dispute_id"
    " AND d.resolved_on IS NULL"
)
_PLACEMENT_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("placement_id", "text"),
    ("agency_id", "text"),
    ("segment", "text"),
    ("currency", "text"),
    ("placed_on", "date"),
    ("placed_minor", "bigint"),
)
WRITE_PLACEMENTS = _insert(
    PLACEMENTS, _PLACEMENT_COLUMNS, ("tenant_id", "case_id", "placement_id"), "DO NOTHING"
)
_RECOVERY_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("placement_id", "text"),
    ("source", "text"),
    ("recovery_id", "text"),
    ("recovered_on", "date"),
    ("amount_minor", "bigint"),
)
WRITE_RECOVERIES = _insert(
    RECOVERIES,
    _RECOVERY_COLUMNS,
    ("tenant_id", "case_id", "placement_id", "source", "recovery_id"),
    "DO NOTHING",
)
_EPISODE_COLUMNS = (
    ("tenant_id", "text"),
    ("case_id", "text"),
    ("opened_version", "integer"),
    ("debtor_id", "text"),
    ("currency", "text"),
    ("opened_on", "date"),
    ("placed", "boolean"),
    ("last_step", "text"),
    ("last_step_on", "date"),
    ("closed_on", "date"),
    ("closed_by_payment", "boolean"),
)
WRITE_EPISODES = _insert(
    EPISODES,
    _EPISODE_COLUMNS,
    ("tenant_id", "case_id", "opened_version"),
    _update([c for c, _ in _EPISODE_COLUMNS[3:]]),
)
CONTINUE_EPISODES = (
    f"UPDATE {EPISODES} AS e SET placed = e.placed OR r.placed,"
    " last_step = coalesce(r.last_step, e.last_step),"
    " last_step_on = coalesce(r.last_step_on, e.last_step_on),"
    " closed_on = r.closed_on, closed_by_payment = r.closed_by_payment"
    f" FROM unnest({_unnest(['text', 'text', 'boolean', 'text', 'date', 'date', 'boolean'])})"
    " AS r(tenant_id, case_id, placed, last_step, last_step_on, closed_on, closed_by_payment)"
    " WHERE e.tenant_id = r.tenant_id AND e.case_id = r.case_id AND e.closed_on IS NULL"
)
"""What a transaction learned about the episode of a case that was already open when it started."""


async def _write(connection: Any, statement: str, rows: Sequence[Sequence[Any]], width: int) -> None:
    if rows:
        await connection.execute(statement, *([row[i] for row in rows] for i in range(width)))


async def write_facts(connection: Any, facts: KpiFacts) -> None:
    """Write what a transaction observed (`kpis.observe`) and forget it."""
    if not facts:
        return
    promises = [tuple(vars(r).values()) for _, r in sorted(facts.promises.items())]
    await _write(connection, WRITE_PROMISES, promises, len(_PROMISE_COLUMNS))
    disputes = [tuple(vars(r).values()) for _, r in sorted(facts.disputes.items())]
    await _write(connection, WRITE_DISPUTES, disputes, len(_DISPUTE_COLUMNS))
    await _write(connection, RESOLVE_DISPUTES, [(*k, d) for k, d in sorted(facts.resolved.items())], 4)
    placements = [tuple(vars(r).values()) for _, r in sorted(facts.placements.items())]
    await _write(connection, WRITE_PLACEMENTS, placements, len(_PLACEMENT_COLUMNS))
    recoveries = [tuple(vars(r).values()) for _, r in sorted(facts.recoveries.items())]
    await _write(connection, WRITE_RECOVERIES, recoveries, len(_RECOVERY_COLUMNS))
    continuing, opened = [], []
    for (tenant, case_id), episodes in sorted(facts.episodes.items()):
        for e in episodes:
            if e.opened_version is None:
                continuing.append(
                    (tenant, case_id, e.placed, e.last_step, e.last_step_on, e.closed_on, e.closed_by_payment)
                )
            else:
                opened.append(
                    (
                        tenant,
                        case_id,
                        e.opened_version,
                        e.debtor_id,
                        e.currency,
                        e.opened_on,
                        e.placed,
                        e.last_step,
                        e.last_step_on,
                        e.closed_on,
                        e.closed_by_payment,
                    )
                )
    await _write(connection, CONTINUE_EPISODES, continuing, 7)
    await _write(connection, WRITE_EPISODES, opened, len(_EPISODE_COLUMNS))
    facts.clear()


# --- reading --------------------------------------------------------------------------------------

_MONTH = "to_char({}, 'YYYY-MM')"
PROMISES_MADE = (
    f"SELECT currency, {_MONTH.format('made_on')} AS month, count(*) AS n FROM {PROMISES}"
    " WHERE tenant_id = $1 AND made_on BETWEEN $2 AND $3 GROUP BY 1, 2"
)
PROMISES_DUE = (
    f"SELECT currency, {_MONTH.format('due_on')} AS month, count(*) AS due,"
    " count(*) FILTER (WHERE outcome = 'kept' AND outcome_on <= $3) AS kept"
    f" FROM {PROMISES} WHERE tenant_id = $1 AND due_on BETWEEN $2 AND $3"
    " AND NOT (outcome IN ('superseded', 'dropped') AND outcome_on <= due_on)"
    " GROUP BY 1, 2"
)
"""Promises whose date fell in a month, up to the date asked for, but for those withdrawn (replaced
by a newer promise or a plan, or the case closed otherwise) on or before their date."""
CASES_CLOSED = (
    f"SELECT currency, {_MONTH.format('closed_on')} AS month, count(*) AS closed,"
    " count(*) FILTER (WHERE closed_by_payment AND NOT placed) AS cured"
    f" FROM {EPISODES} WHERE tenant_id = $1 AND closed_on BETWEEN $2 AND $3 GROUP BY 1, 2"
)
DAYS_TO_CURE = (
    f"SELECT currency, {_MONTH.format('closed_on')} AS month, last_step,"
    " sum(closed_on - last_step_on) AS days, count(*) AS n"
    f" FROM {EPISODES} WHERE tenant_id = $1 AND closed_on BETWEEN $2 AND $3"
    " AND closed_by_payment AND NOT placed AND last_step IS NOT NULL GROUP BY 1, 2, 3"
)
FUNNEL = (
    "SELECT currency, step, count(*) AS cases, sum(overdue_minor) AS overdue"
    f" FROM {SCHEMA}.cases WHERE tenant_id = $1 AND status <> 'closed' GROUP BY 1, 2"
)


async def collections(
    connection: Any, tenant: str, first: dt.date, as_of: dt.date
) -> dict[str, dict[str, MonthCounts]]:
    """Per currency and month ("YYYY-MM"), from `first` to `as_of`, the counts of the month."""
    counts: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for r in await connection.fetch(PROMISES_MADE, tenant, first, as_of):
        counts[r["currency"]][r["month"]]["promises_made"] = r["n"]
    for r in await connection.fetch(PROMISES_DUE, tenant, first, as_of):
        month = counts[r["currency"]][r["month"]]
        month["promises_due"], month["promises_kept"] = r["due"], r["kept"]
    for r in await connection.fetch(CASES_CLOSED, tenant, first, as_of):
        month = counts[r["currency"]][r["month"]]
        month["cases_closed"], month["cured"] = r["closed"], r["cured"]
    for r in await connection.fetch(DAYS_TO_CURE, tenant, first, as_of):
        days = counts[r["currency"]][r["month"]].setdefault("cure_days", {})
        days[r["last_step"]] = (int(r["days"]), r["n"])
    return {
        currency: {month: MonthCounts(**values) for month, values in months.items()}
        for currency, months in counts.items()
    }


async def funnel(connection: Any, tenant: str) -> dict[str, dict[str, dict[str, int]]]:
    """Open cases (held or not) by currency and current ladder step: count and overdue amount."""
    found: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for r in await connection.fetch(FUNNEL, tenant):
        found[r["currency"]][r["step"] or NO_STEP] = {"cases": r["cases"], "overdue_minor": int(r["overdue"])}
    return dict(found)


_RECOVERED_IN_FULL = (
    "SELECT x.case_id, x.placement_id, min(x.recovered_on) AS done FROM ("
    " SELECT r.case_id, r.placement_id, r.recovered_on, p.placed_minor, sum(r.amount_minor) OVER ("
    "  PARTITION BY r.case_id, r.placement_id ORDER BY r.recovered_on, r.recovery_id) AS so_far"
    f" FROM {RECOVERIES} AS r JOIN placed AS p USING (case_id, placement_id)"
    f" WHERE r.tenant_id = $1 AND r.source = '{LEDGER}' AND r.recovered_on <= $2) AS x"
    " WHERE x.so_far >= x.placed_minor GROUP BY 1, 2"
)
AGENCIES = (
    "WITH placed AS ("
    f" SELECT * FROM {PLACEMENTS} WHERE tenant_id = $1 AND placed_on <= $2),"
    " recovered AS ("
    "  SELECT case_id, placement_id,"
    f"  coalesce(sum(amount_minor) FILTER (WHERE source = '{LEDGER}'), 0) AS ledger,"
    f"  coalesce(sum(amount_minor) FILTER (WHERE source = '{AGENCY}'), 0) AS agency"
    f"  FROM {RECOVERIES} WHERE tenant_id = $1 AND recovered_on <= $2 GROUP BY 1, 2),"
    f" full_recovery AS ({_RECOVERED_IN_FULL})"
    " SELECT p.agency_id, p.segment, p.currency, count(*) AS placed_cases,"
    " sum(p.placed_minor) AS placed_minor, coalesce(sum(r.ledger), 0) AS recovered_minor,"
    " coalesce(sum(r.agency), 0) AS reported_minor, count(f.done) AS recovered_cases,"
    " coalesce(sum(f.done - p.placed_on), 0) AS recovery_days"
    " FROM placed AS p"
    " LEFT JOIN recovered AS r USING (case_id, placement_id)"
    " LEFT JOIN full_recovery AS f USING (case_id, placement_id)"
    " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)
"""Per agency, segment and currency: placements up to the date, what the ledger shows paid on the
placed invoices while placed, what the agency reported, and the placements recovered in full with
their days from placement to the payment that completed the recovery."""


async def agencies(connection: Any, tenant: str, as_of: dt.date) -> list[AgencyCounts]:
    rows = await connection.fetch(AGENCIES, tenant, as_of)
    return [
        AgencyCounts(
            r["agency_id"],
            r["segment"],
            r["currency"],
            r["placed_cases"],
            int(r["placed_minor"]),
            int(r["recovered_minor"]),
            int(r["reported_minor"]),
            r["recovered_cases"],
            int(r["recovery_days"]),
        )
        for r in rows
    ]


def _open(as_of: str) -> str:
    return f"(resolved_on IS NULL OR resolved_on > {as_of})"


_OPEN = _open("$3")
DISPUTE_COUNTS = (
    "SELECT currency,"
    " count(*) FILTER (WHERE opened_on >= $2) AS opened,"
    " count(*) FILTER (WHERE resolved_on BETWEEN $2 AND $3) AS resolved,"
    f" count(*) FILTER (WHERE {_OPEN}) AS open,"
    f" coalesce(sum(amount_minor) FILTER (WHERE {_OPEN}), 0) AS open_minor,"
    f" percentile_cont(0.5) WITHIN GROUP (ORDER BY $3 - opened_on) FILTER (WHERE {_OPEN}) AS median_age,"
    f" max($3 - opened_on) FILTER (WHERE {_OPEN}) AS max_age"
    f" FROM {DISPUTES} WHERE tenant_id = $1 AND opened_on <= $3"
    " AND (resolved_on IS NULL OR resolved_on >= $2) GROUP BY 1"
)
"""Per currency: disputes opened and resolved from $2 (the first of the month) to $3 (the date asked
for), and those open on $3 with their amount and ages in days."""
DISPUTE_REASONS = (
    f"SELECT currency, coalesce(reason, '{NO_REASON}') AS reason, count(*) AS n FROM {DISPUTES}"
    f" WHERE tenant_id = $1 AND opened_on <= $2 AND {_open('$2')} GROUP BY 1, 2"
)
DISPUTES_OVER_LIMIT = (
    "SELECT currency, debtor_id, case_id, opened_on, $2 - opened_on AS age_days, reason, amount_minor"
    f" FROM {DISPUTES} WHERE tenant_id = $1 AND opened_on < $2 - $3::integer AND {_open('$2')}"
    f" ORDER BY opened_on, case_id, dispute_id LIMIT {OVER_LIMIT_LISTED}"
)


async def disputes(
    connection: Any, tenant: str, month_start: dt.date, as_of: dt.date, limit_days: int
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in await connection.fetch(DISPUTE_COUNTS, tenant, month_start, as_of):
        found[r["currency"]] = {
            "opened": r["opened"],
            "open": r["open"],
            "resolved": r["resolved"],
            "open_minor": int(r["open_minor"]),
            "age_days": {"median": r["median_age"], "max": r["max_age"]},
            "by_reason": {},
            "over_limit": [],
        }
    for r in await connection.fetch(DISPUTE_REASONS, tenant, as_of):
        found[r["currency"]]["by_reason"][r["reason"]] = r["n"]
    for r in await connection.fetch(DISPUTES_OVER_LIMIT, tenant, as_of, limit_days):
        found[r["currency"]]["over_limit"].append(
            {
                "debtor_id": r["debtor_id"],
                "case_id": r["case_id"],
                "opened_on": r["opened_on"].isoformat(),
                "age_days": r["age_days"],
                "reason": r["reason"],
                "amount_minor": r["amount_minor"],
            }
        )
    return found
