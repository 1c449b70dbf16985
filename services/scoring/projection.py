"""How a batch of balance facts, disputes, debtor data and business days changes what scoring knows,
and which score events it publishes.

Per batch, in the consumer loop's transaction: the invoices of the debtors the batch touches are
loaded in one query, each fact is applied to them in log order, and they are written back in one
statement; then those debtors are scored as of their tenant's business date with the model in use
(looked up again at every batch), their scores stored, and a `collections.score.changed.v1` written
to the outbox for each score whose segment changed, which moved by `SCORE_STEP` points or more, or
whose write-off proposal was made or withdrawn since the last one published. The event id is a uuid5
of what the score is, so a replay publishes the same records and consumers drop the repeats.

A tenant's business date is the latest of its business-day events and the effective dates of its
balance facts: a history replayed without a clock is still scored as of its own dates.

On every business day a batch starts, every debtor of the tenant with an item open on that date is
scored again as of it (days since the last payment and overdue amounts move with the day), in chunks
of `DAY_CHUNK` debtors, each chunk read with set-based statements and committed in a transaction of
its own (`ScoringProjection.rescore_day` says why that keeps the exactly-once effect). With worker
processes, each chunk is read, scored and written in one of them, on its own connection, so the
consumer only hands out chunks; a chunk's invoices come as one array per column (dates as day
numbers), its histories are made as columns, and its score events are formatted with orjson.

Every writer of a debtor's invoices or scores first writes the debtor's row, and only while it still
has the version (`xmin`) it read: a second group member holding the same debtor for a moment during a
rebalance raises `StaleState`, and the consumer rolls its batch back and reads it again. A business
day's chunk writes its debtor rows before it reads anything of theirs (`_lock_debtors`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import pickle
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

import asyncpg
import numpy as np
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import BusinessDayStarted
from contracts.collections import (
    CaseNote,
    DisputeChanged,
    HoldChanged,
    PaymentPlanAgreed,
    PromiseToPay,
    SettlementAgreed,
)
from contracts.envelope import Envelope
from contracts.journal import DebtorProfile
from contracts.money import Money
from contracts.receivables import ReceivableBalance
from contracts.registry import make_event
from contracts.scores import SCORE_CHANGED, ScoreChanged
from contracts.topics import CLOCK, CONTACTS, DEBTORS, RECEIVABLES, SCORES, debtor_key
from services.runtime.consumer import Applied, Delivered, StaleState
from services.runtime.database import driver_connection
from services.runtime.embedded_postgres import sqlalchemy_to_libpq
from services.runtime.ids import uuid5_text
from services.runtime.log import Message
from services.runtime.outbox import copy_to_outbox
from services.runtime.tracing import current_traceparent, with_traceparent
from services.runtime.worker_pool import IN_FLIGHT_PER_WORKER, WorkerPool, bounded
from services.scoring import store
from services.scoring.batch import NEVER, Columns, ScoredColumns, score_chunk, scored_columns, sort_by
from services.scoring.features import DebtorHistory, InvoiceFact
from services.scoring.model import DebtorScore, Scorer
from services.scoring.models_on_disk import ModelSource
from services.scoring.writeoff import WriteOffProposal, WriteOffRule, propose, propose_each

SOURCE = "arrears/scoring"
SCORE_STEP = 10
"""Points a score must move, within its segment, before a new score event is published."""
SCORE_NAMESPACE = uuid.UUID("8a3f5c2e-3b1d-5d6e-9f60-2c4b7e1a9d05")
DAY_CHUNK = 2_000
"""Debtors scored again per transaction on a business day."""
DebtorKey = tuple[str, str]
Version = str
"""A debtor row's version: the id of the transaction that last wrote it (`xmin`)."""
InvoiceRow = dict[str, Any]
Invoices = dict[str, InvoiceRow]


@dataclass(frozen=True)
class StoredDebtor:
    values: dict[str, Any]
    """The debtor row's columns other than its key (paperless, collector)."""
    version: Version
    """The row's version (`xmin`) when it was read."""


NO_DEBTOR: dict[str, Any] = {"paperless": None, "collector": None}


@dataclass
class _Facts:
    """What a batch changes, by debtor."""

    invoices: dict[DebtorKey, dict[str, InvoiceRow]] = field(default_factory=dict)
    changed: set[tuple[str, str, str]] = field(default_factory=set)
    removed: set[tuple[str, str, str]] = field(default_factory=set)
    debtors: dict[DebtorKey, dict[str, Any]] = field(default_factory=dict)
    dates: dict[str, dt.date] = field(default_factory=dict)
    days: set[str] = field(default_factory=set)
    """Tenants a business day started for in this batch."""
    causes: dict[DebtorKey, str] = field(default_factory=dict)

    def date(self, tenant: str, day: dt.date) -> None:
        self.dates[tenant] = max(day, self.dates.get(tenant, day))


def apply_balance(rows: dict[str, InvoiceRow], fact: ReceivableBalance) -> bool:
    """An invoice row after a balance fact; False when the invoice is gone (cancelled)."""
    if fact.status == "cancelled":
        rows.pop(fact.invoice_id, None)
        return False
    row = rows.get(fact.invoice_id) or {"disputed_date": None}
    day = fact.effective_date
    row.update(
        invoice_id=fact.invoice_id,
        currency=fact.amount.currency,
        issue_date=fact.issue_date,
        due_date=fact.due_date,
        amount_minor=fact.amount.amount_minor,
        outstanding_minor=fact.outstanding.amount_minor,
        status=fact.status,
        settled_date=day if fact.status == "settled" else None,
        written_off_date=day if fact.status == "written_off" else None,
    )
    rows[fact.invoice_id] = row
    return True


def history_of(
    tenant: str, debtor: str, currency: str, rows: Iterable[InvoiceRow], paperless: bool | None
) -> DebtorHistory:
    return DebtorHistory(
        tenant_id=tenant,
        debtor_id=debtor,
        currency=currency,
        paperless=paperless,
        invoices=tuple(
            InvoiceFact(
                invoice_id=r["invoice_id"],
                issue_date=r["issue_date"],
                due_date=r["due_date"],
                amount_minor=r["amount_minor"],
                settled_date=r["settled_date"],
                disputed_date=r["disputed_date"],
                written_off_date=r["written_off_date"],
                outstanding_minor=r["outstanding_minor"],
            )
            for r in sorted(rows, key=lambda r: (r["issue_date"], r["invoice_id"]))
            if r["currency"] == currency
        ),
    )


def histories_of(
    tenant: str, debtor: str, rows: Sequence[InvoiceRow], paperless: bool | None
) -> list[DebtorHistory]:
    """The debtor's history in each currency it was invoiced in."""
    return [
        history_of(tenant, debtor, currency, rows, paperless)
        for currency in sorted({r["currency"] for r in rows})
    ]


class LastPublished(NamedTuple):
    """What the debtor's last score event said (a tuple: a chunk reads one per debtor)."""

    score: int | None
    segment: str | None
    write_off: bool | None


NOTHING_PUBLISHED = LastPublished(None, None, None)


def is_material(score: int, segment: str, write_off: bool, published: LastPublished) -> bool:
    """A first score, a new segment, a move of `SCORE_STEP` points or more, or a write-off proposal
    made or withdrawn."""
    if published.score is None or published.segment is None:
        return True
    return (
        segment != published.segment
        or abs(score - published.score) >= SCORE_STEP
        or write_off != bool(published.write_off)
    )


def _event_id(score: DebtorScore, version: int | None, proposed: bool) -> str:
    what = f"{score.tenant_id}:{score.debtor_id}:{score.currency}:{score.as_of}:{score.score}:{score.segment}"
    return uuid5_text(SCORE_NAMESPACE, f"{what}:{version}" + (":write-off" if proposed else ""))


def score_event(
    score: DebtorScore,
    version: int | None,
    previous_segment: str | None,
    cause: str | None,
    write_off: WriteOffProposal | None = None,
) -> Message:
    """The score event, formatted directly: the same bytes as `encode_event` of `score_envelope`
    (a unit test checks), without building and dumping pydantic models per score (the values come
    from scoring's own computation)."""
    proposed = write_off is not None and write_off.proposed
    currency = score.currency
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": _event_id(score, version, proposed),
        "source": SOURCE,
        "type": SCORE_CHANGED,
        "time": dt.datetime.combine(score.as_of, dt.time(), dt.UTC),
        "datacontenttype": "application/json",
        "tenantid": score.tenant_id,
        "debtorid": score.debtor_id,
    }
    if cause is not None:
        envelope["causationid"] = cause
    data: dict[str, Any] = {
        "as_of": score.as_of,
        "score": score.score,
        "probability_late": f"{score.p_late:.4f}",
        "segment": score.segment,
    }
    if previous_segment is not None:
        data["previous_segment"] = previous_segment
    data["expected_days_to_settle"] = max(0, round(score.expected_days_to_settle))
    data["open"] = {"amount_minor": score.open_minor, "currency": currency}
    data["overdue"] = {"amount_minor": score.overdue_minor, "currency": currency}
    data["oldest_days_past_due"] = score.oldest_days_past_due
    data["reasons"] = list(score.reasons)
    data["model_kind"] = score.model_kind
    if version is not None:
        data["model_version"] = version
    if (limit := score.recommended_limit_minor) is not None:
        data["recommended_credit_limit"] = {"amount_minor": limit, "currency": currency}
    data["write_off_proposed"] = proposed
    data["write_off_reasons"] = list(write_off.reasons) if write_off is not None and proposed else []
    envelope["data"] = data
    key = debtor_key(score.tenant_id, score.debtor_id).encode()
    return Message(SCORES.name, key, orjson.dumps(envelope, option=orjson.OPT_UTC_Z))


def score_envelope(
    score: DebtorScore,
    version: int | None,
    previous_segment: str | None,
    cause: str | None,
    write_off: WriteOffProposal | None = None,
) -> Envelope[Any]:
    """The score event as a contracts envelope (what `score_event` formats directly)."""
    proposed = write_off is not None and write_off.proposed
    what = f"{score.tenant_id}:{score.debtor_id}:{score.currency}:{score.as_of}:{score.score}:{score.segment}"
    limit = score.recommended_limit_minor
    data = ScoreChanged(
        as_of=score.as_of,
        score=score.score,
        probability_late=f"{score.p_late:.4f}",
        segment=score.segment,
        previous_segment=previous_segment,
        expected_days_to_settle=max(0, round(score.expected_days_to_settle)),
        open=Money(amount_minor=score.open_minor, currency=score.currency),
        overdue=Money(amount_minor=score.overdue_minor, currency=score.currency),
        oldest_days_past_due=score.oldest_days_past_due,
        reasons=list(score.reasons),
        model_kind=score.model_kind,
        model_version=version,
        recommended_credit_limit=None
        if limit is None
        else Money(amount_minor=limit, currency=score.currency),
        write_off_proposed=proposed,
        write_off_reasons=list(write_off.reasons) if write_off is not None and proposed else [],
    )
    return make_event(
        SCORE_CHANGED,
        data,
        event_id=str(uuid.uuid5(SCORE_NAMESPACE, f"{what}:{version}" + (":write-off" if proposed else ""))),
        tenant_id=score.tenant_id,
        debtor_id=score.debtor_id,
        source=SOURCE,
        time=dt.datetime.combine(score.as_of, dt.time(), dt.UTC),
        causation_id=cause,
    )


class ScoringProjection:
    group_id = "scoring"
    business_clock = CLOCK.name
    topics: tuple[str, ...] = (RECEIVABLES.name, CONTACTS.name, DEBTORS.name, CLOCK.name)

    def __init__(
        self,
        models: ModelSource,
        *,
        day_chunk: int = DAY_CHUNK,
        write_off: WriteOffRule | None = None,
        workers: int = 0,
    ) -> None:
        self.models = models
        self.day_chunk = day_chunk
        self.write_off = write_off or WriteOffRule()
        self.workers = workers
        """Processes that score a business day's chunks beside this one (0: all in this one)."""
        self._pool = WorkerPool(workers)
        self._shipped: tuple[Scorer, str, bytes] | None = None

    def start_workers(self) -> None:
        """Start the worker processes now rather than on the first business day (they take a few
        seconds to import the model libraries)."""
        self._pool.start(_warm)

    async def workers_ready(self) -> None:
        """Until the worker processes started by `start_workers` have imported what they run."""
        await self._pool.ready()

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (none before they are started)."""
        return self._pool.pids()

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        self._pool.close()

    async def apply(self, session: AsyncSession, batch: Sequence[Delivered]) -> Applied:
        facts = _Facts()
        keys = {(d.event.tenantid, d.event.debtorid) for d in batch if d.event.debtorid}
        facts.invoices = await _load_invoices(session, keys)
        stored = await _load_debtors(session, keys)
        facts.debtors = {k: dict(stored[k].values) if k in stored else dict(NO_DEBTOR) for k in keys}
        for d in batch:
            _apply(facts, d)
        # The debtor rows first, each only if it is still as read: a second writer fails here.
        await save_debtors(session, facts.debtors, {k: v.version for k, v in stored.items()})
        await _save_facts(session, facts)
        scorer, version = self.models.current()
        dates = await _business_dates(session, {t for t, _ in keys} | set(facts.days))
        messages = await self._rescore(session, scorer, version, facts, keys, dates)
        for tenant in sorted(facts.days):
            if tenant in dates:
                await self.rescore_day(session, scorer, version, tenant, dates[tenant], keys)
        return Applied(messages=messages)

    async def _rescore(
        self,
        session: AsyncSession,
        scorer: Scorer,
        version: int | None,
        facts: _Facts,
        keys: set[DebtorKey],
        dates: dict[str, dt.date],
    ) -> list[Message]:
        """The batch's debtors scored as of their tenant's business date, their histories made into
        columns straight from the invoice rows, as a business day's chunk is."""
        connection = await driver_connection(session)
        messages: list[Message] = []
        for tenant in sorted({t for t, _ in keys} & dates.keys()):
            debtors = sorted(d for t, d in keys if t == tenant)
            owners: list[str] = []
            rows: list[InvoiceRow] = []
            for debtor in debtors:
                if found := facts.invoices.get((tenant, debtor)):
                    owners += [debtor] * len(found)
                    rows += found.values()
            chunk = ChunkInput(
                version=version,
                rule=self.write_off,
                tenant=tenant,
                day=dates[tenant],
                debtors=debtors,
                paperless={d: facts.debtors[(tenant, d)]["paperless"] for d in debtors},
                invoices=invoice_columns(rows, owners),
                published=await _published(connection, tenant, debtors),
            )
            columns, produced = decide_chunk(scorer, chunk, facts.causes)
            await save_scores(connection, columns)
            messages += produced
        return messages

    async def rescore_day(
        self,
        session: AsyncSession,
        scorer: Scorer,
        version: int | None,
        tenant: str,
        day: dt.date,
        exclude: set[DebtorKey],
    ) -> int:
        """Score again, as of `day`, every debtor of the tenant with an item open on it (their days
        since the last payment and their overdue amounts moved with the day), chunk by chunk, each
        chunk in a transaction of its own. The debtors in `exclude` were scored in the batch's own
        transaction. Returns how many debtors were scored.

        Why a chunk may commit before the batch: scoring a debtor again from the same facts on the
        same day gives the same score, which is then no longer a material change; if the batch
        fails, the business-day record comes again and the chunks that committed publish nothing
        twice (and the event ids are uuid5 of what they say). A chunk touches only debtors the
        batch's transaction did not write, so it never waits for a lock the batch holds."""
        connection = await driver_connection(session)
        rows = await connection.fetch(_OPEN_DEBTORS, tenant, day)
        debtors = [r["debtor_id"] for r in rows if (tenant, r["debtor_id"]) not in exclude]
        chunks = [debtors[start : start + self.day_chunk] for start in range(0, len(debtors), self.day_chunk)]
        pooled = self.workers > 0 and len(chunks) > 1
        rescore = self._in_workers(scorer, session.bind) if pooled else _rescore_here(scorer, session.bind)

        traceparent = current_traceparent()

        async def one(chunk: list[str]) -> None:
            await rescore(DayChunk(version, self.write_off, tenant, day, chunk, traceparent))

        # With workers, each chunk is read, scored and written in a worker process, on its own
        # connection; each is still one transaction of its own, over debtors no other chunk holds.
        await bounded(one, chunks, IN_FLIGHT_PER_WORKER * self.workers if pooled else 1)
        return len(debtors)

    def _in_workers(self, scorer: Scorer, bind: Any) -> RescoreChunk:
        """Chunks read, scored and written in the worker processes, the scorer sent along (loaded
        once per worker) with the database's URL."""
        self.start_workers()
        if self._shipped is None or self._shipped[0] is not scorer:
            blob = pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL)
            self._shipped = (scorer, hashlib.sha256(blob).hexdigest(), blob)
        _, key, blob = self._shipped
        database = sqlalchemy_to_libpq(bind.url.render_as_string(hide_password=False))

        async def rescore(chunk: DayChunk) -> None:
            # A worker that dies fails the batch, which is read again, with new workers.
            await self._pool.run(_rescore_in_worker, key, blob, database, chunk)

        return rescore


def _apply(facts: _Facts, d: Delivered) -> None:
    event = d.event
    tenant, debtor = event.tenantid, event.debtorid or ""
    key = (tenant, debtor)
    match event.data:
        case ReceivableBalance() as fact:
            rows = facts.invoices.setdefault(key, {})
            ident = (tenant, debtor, fact.invoice_id)
            if apply_balance(rows, fact):
                facts.changed.add(ident)
                facts.removed.discard(ident)
            else:
                facts.removed.add(ident)
                facts.changed.discard(ident)
            facts.date(tenant, fact.effective_date)
            facts.causes[key] = event.id
        case DisputeChanged() as dispute if event.type == "ar.dispute.opened.v1":
            row = facts.invoices.get(key, {}).get(dispute.invoice_id)
            day = dispute.recorded.business_date
            facts.debtors[key]["collector"] = dispute.recorded.recorded_by
            if row is not None and (row["disputed_date"] is None or day < row["disputed_date"]):
                row["disputed_date"] = day
                facts.changed.add((tenant, debtor, dispute.invoice_id))
                facts.causes[key] = event.id
        case (
            PromiseToPay()
            | SettlementAgreed()
            | DisputeChanged()
            | PaymentPlanAgreed()
            | HoldChanged()
            | CaseNote()
        ) as agreed:
            facts.debtors[key]["collector"] = agreed.recorded.recorded_by
        case DebtorProfile() as profile:
            channels = profile.consented_channels
            paperless = profile.email is not None and (channels is None or "email" in channels)
            facts.debtors[key]["paperless"] = paperless
        case BusinessDayStarted() as day:
            facts.date(tenant, day.business_date)
            facts.days.add(tenant)
        case _:
            pass


_INVOICE_TYPES: dict[str, str] = {
    "tenant_id": "text",
    "debtor_id": "text",
    "invoice_id": "text",
    "currency": "text",
    "issue_date": "date",
    "due_date": "date",
    "amount_minor": "int8",
    "outstanding_minor": "int8",
    "status": "text",
    "settled_date": "date",
    "written_off_date": "date",
    "disputed_date": "date",
}
_INVOICE_KEY = ("tenant_id", "debtor_id", "invoice_id")
# Array parameters, one per column: no statement compiled per batch, whatever its size.
_ROW_COLUMNS = tuple(_INVOICE_TYPES)[2:]
"""An invoice row's columns other than its debtor's key, as `_LOAD_INVOICES` returns them."""
_LOAD_INVOICES = (
    f"SELECT {', '.join(f'i.{c}' for c in _INVOICE_TYPES)} FROM {store.SCHEMA}.{store.invoices.name} AS i"
    " JOIN unnest($1::text[], $2::text[]) AS k(t, d) ON i.tenant_id = k.t AND i.debtor_id = k.d"
)
_SAVE_INVOICES = (
    f"INSERT INTO {store.SCHEMA}.{store.invoices.name} ({', '.join(_INVOICE_TYPES)})"
    " SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_INVOICE_TYPES.values(), start=1))
    + f") ON CONFLICT ({', '.join(_INVOICE_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _INVOICE_TYPES if c not in _INVOICE_KEY)
)
_DELETE_INVOICES = (
    f"DELETE FROM {store.SCHEMA}.{store.invoices.name} AS i"
    " USING unnest($1::text[], $2::text[], $3::text[]) AS k(t, d, n)"
    " WHERE i.tenant_id = k.t AND i.debtor_id = k.d AND i.invoice_id = k.n"
)
_BUSINESS_DATES = f"{store.SCHEMA}.{store.business_dates.name}"
_SAVE_DATES = (
    f"INSERT INTO {_BUSINESS_DATES} AS b (tenant_id, business_date)"
    " SELECT * FROM unnest($1::text[], $2::date[])"
    " ON CONFLICT (tenant_id) DO UPDATE SET business_date = greatest(b.business_date, excluded.business_date)"
)


async def _load_invoices(session: AsyncSession, keys: set[DebtorKey]) -> dict[DebtorKey, Invoices]:
    out: dict[DebtorKey, Invoices] = {}
    if not keys:
        return out
    wanted = sorted(keys)
    connection = await driver_connection(session)
    for tenant, debtor, *values in await connection.fetch(
        _LOAD_INVOICES, [t for t, _ in wanted], [d for _, d in wanted]
    ):
        out.setdefault((tenant, debtor), {})[values[0]] = dict(zip(_ROW_COLUMNS, values, strict=True))
    return out


async def _save_facts(session: AsyncSession, facts: _Facts) -> None:
    connection = await driver_connection(session)
    if facts.changed:
        rows = [
            {"tenant_id": tenant, "debtor_id": debtor, **facts.invoices[(tenant, debtor)][invoice]}
            for tenant, debtor, invoice in sorted(facts.changed)
        ]
        await connection.execute(_SAVE_INVOICES, *[[r[c] for r in rows] for c in _INVOICE_TYPES])
    if facts.removed:
        removed = sorted(facts.removed)
        await connection.execute(_DELETE_INVOICES, *[list(column) for column in zip(*removed, strict=True)])
    if facts.dates:
        dates = sorted(facts.dates.items())
        await connection.execute(_SAVE_DATES, [t for t, _ in dates], [d for _, d in dates])


async def _business_dates(session: AsyncSession, tenants: set[str]) -> dict[str, dt.date]:
    connection = await driver_connection(session)
    rows = await connection.fetch(
        f"SELECT tenant_id, business_date FROM {_BUSINESS_DATES} WHERE tenant_id = any($1::text[])",
        sorted(tenants),
    )
    return {r["tenant_id"]: r["business_date"] for r in rows}


Published = dict[tuple[str, str, str], LastPublished]

_SCORES = f"{store.SCHEMA}.{store.scores.name}"
_PUBLISHED_COLUMNS = ("debtor_id", "currency", "published_score", "published_segment", "published_write_off")
_PUBLISHED = (
    "SELECT "
    + ", ".join(f"array_agg({c})" for c in _PUBLISHED_COLUMNS)
    + f" FROM {_SCORES} WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])"
)


async def _published(connection: Any, tenant: str, debtors: list[str]) -> Published:
    """What was last published for each of the debtors, by currency."""
    return _published_of(tenant, await connection.fetchrow(_PUBLISHED, tenant, debtors))


def _published_of(tenant: str, arrays: Sequence[list[Any] | None]) -> Published:
    debtors, currencies, scores, segments, write_offs = (a or [] for a in arrays)
    keys = zip(repeat(tenant), debtors, currencies, strict=False)
    last = map(LastPublished._make, zip(scores, segments, write_offs, strict=True))
    return dict(zip(keys, last, strict=True))


def _outcome(
    scores: Sequence[DebtorScore],
    version: int | None,
    published: Published,
    causes: Mapping[DebtorKey, str],
    rule: WriteOffRule,
) -> tuple[list[dict[str, Any]], list[Message]]:
    """The score rows to store and the score events to publish (the material changes)."""
    messages = []
    rows = []
    for s in scores:
        last = published.get((s.tenant_id, s.debtor_id, s.currency), NOTHING_PUBLISHED)
        write_off = propose(s, rule)
        proposed = write_off is not None and write_off.proposed
        if is_material(s.score, s.segment, proposed, last):
            cause = causes.get((s.tenant_id, s.debtor_id))
            messages.append(score_event(s, version, last.segment, cause, write_off))
            last = LastPublished(s.score, s.segment, proposed)
        rows.append(_score_row(s, version, last, write_off))
    return rows, messages


def _score_row(
    s: DebtorScore, version: int | None, published: LastPublished, write_off: WriteOffProposal | None
) -> dict[str, Any]:
    return {
        "tenant_id": s.tenant_id,
        "debtor_id": s.debtor_id,
        "currency": s.currency,
        "as_of": s.as_of,
        "score": s.score,
        "p_late": s.p_late,
        "segment": s.segment,
        "expected_days_to_settle": s.expected_days_to_settle,
        "open_minor": s.open_minor,
        "overdue_minor": s.overdue_minor,
        "oldest_days_past_due": s.oldest_days_past_due,
        "reasons": _json(list(s.reasons)),
        "invoices": _invoices_json(
            [i.invoice_id for i in s.invoices],
            [i.outstanding_minor for i in s.invoices],
            [i.due_date.isoformat() for i in s.invoices],
            [i.p_late for i in s.invoices],
            [i.expected_settle_date.isoformat() for i in s.invoices],
            write_off,
        ),
        "model_kind": s.model_kind,
        "model_version": version,
        "published_score": published.score,
        "published_segment": published.segment,
        "published_write_off": published.write_off,
        "usual_monthly_billing_minor": s.usual_monthly_billing_minor,
        "recommended_limit_minor": s.recommended_limit_minor,
        "write_off_proposed": bool(write_off and write_off.proposed),
        "write_off_reasons": _json(list(write_off.reasons) if write_off else []),
    }


def _invoices_json(
    ids: list[str],
    outstanding: list[int],
    due: list[str],
    p_late: list[float],
    settle: list[str],
    write_off: WriteOffProposal | None,
) -> str:
    """A score's open invoices as stored (`store.stored_invoices`): a list per field, and the
    write-off reasons of those that have any."""
    reasons = {p.invoice_id: list(p.reasons) for p in write_off.invoices if p.reasons} if write_off else {}
    return _json(
        {
            "invoice_id": ids,
            "outstanding_minor": outstanding,
            "due_date": due,
            "p_late": p_late,
            "expected_settle_date": settle,
            "write_off_reasons": reasons,
        }
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _outcome_of(
    scored: ScoredColumns,
    version: int | None,
    published: Published,
    causes: Mapping[DebtorKey, str],
    rule: WriteOffRule,
) -> ChunkOutcome:
    """What `_outcome` gives for a chunk scored as columns, column by column: an object per score
    only for the scores to publish."""
    proposals = propose_each(scored, rule)
    messages = []
    published_score: list[int | None] = []
    published_segment: list[str | None] = []
    published_write_off: list[bool | None] = []
    invoices = []
    iso = {d: dt.date.fromordinal(d).isoformat() for d in {*scored.invoice_due, *scored.invoice_settle}}
    ids, outstanding, p_late = scored.invoice_ids, scored.invoice_outstanding, scored.invoice_p_late
    due, settle = [iso[d] for d in scored.invoice_due], [iso[d] for d in scored.invoice_settle]
    starts = scored.invoice_starts
    for i, write_off in enumerate(proposals):
        key = (scored.tenant_ids[i], scored.debtor_ids[i], scored.currencies[i])
        last = published.get(key, NOTHING_PUBLISHED)
        proposed = write_off is not None and write_off.proposed
        if is_material(scored.score[i], scored.segment[i], proposed, last):
            s = scored.debtor(i)
            messages.append(score_event(s, version, last.segment, causes.get(key[:2]), write_off))
            last = LastPublished(s.score, s.segment, proposed)
        published_score.append(last.score)
        published_segment.append(last.segment)
        published_write_off.append(last.write_off)
        a, b = starts[i], starts[i + 1]
        invoices.append(
            _invoices_json(ids[a:b], outstanding[a:b], due[a:b], p_late[a:b], settle[a:b], write_off)
        )
    n = scored.n
    columns: dict[str, list[Any]] = {
        "tenant_id": list(scored.tenant_ids),
        "debtor_id": list(scored.debtor_ids),
        "currency": list(scored.currencies),
        "as_of": [scored.as_of] * n,
        "score": scored.score,
        "p_late": scored.p_late,
        "segment": list(scored.segment),
        "expected_days_to_settle": scored.expected_days_to_settle,
        "open_minor": scored.open_minor,
        "overdue_minor": scored.overdue_minor,
        "oldest_days_past_due": scored.oldest_days_past_due,
        "reasons": [_json(r) for r in scored.reasons],
        "invoices": invoices,
        "model_kind": [scored.model_kind] * n,
        "model_version": [version] * n,
        "published_score": published_score,
        "published_segment": published_segment,
        "published_write_off": published_write_off,
        "usual_monthly_billing_minor": scored.usual_monthly_billing_minor,
        "recommended_limit_minor": scored.recommended_limit_minor,
        "write_off_proposed": [bool(w and w.proposed) for w in proposals],
        "write_off_reasons": [_json(list(w.reasons) if w else []) for w in proposals],
    }
    return [columns[c] for c in _SCORE_TYPES], messages


_SCORE_TYPES: dict[str, str] = {
    "tenant_id": "text",
    "debtor_id": "text",
    "currency": "text",
    "as_of": "date",
    "score": "smallint",
    "p_late": "float8",
    "segment": "text",
    "expected_days_to_settle": "float8",
    "open_minor": "int8",
    "overdue_minor": "int8",
    "oldest_days_past_due": "int4",
    "reasons": "json",
    "invoices": "json",
    "model_kind": "text",
    "model_version": "int4",
    "published_score": "smallint",
    "published_segment": "text",
    "published_write_off": "bool",
    "usual_monthly_billing_minor": "int8",
    "recommended_limit_minor": "int8",
    "write_off_proposed": "bool",
    "write_off_reasons": "json",
}
_KEY = ("tenant_id", "debtor_id", "currency")
_SAME_IN_A_CHUNK = ("tenant_id", "as_of", "model_kind", "model_version")
"""Columns with one value for all of a chunk's rows: sent once, not in every row."""
_VARYING = [c for c in _SCORE_TYPES if c not in _SAME_IN_A_CHUNK]
"""Columns whose values differ from row to row: staged by COPY."""
_PARAMETER = {c: i for i, c in enumerate(_SAME_IN_A_CHUNK, start=1)}


_STAGED = "scoring_score_rows"
# A chunk's rows go in by COPY, which encodes a value in a tenth of the time asyncpg takes for an
# array element (it checks every element for being a nested array), into a table of the connection's
# own that the upsert empties as it reads it.
_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGED} ("
    + ", ".join(f"{c} {_SCORE_TYPES[c].replace('json', 'text')}" for c in _VARYING)
    + ") ON COMMIT DELETE ROWS"
)
_SAVE_SCORES = (
    f"WITH k AS (DELETE FROM {_STAGED} RETURNING *)"
    f" INSERT INTO {_SCORES} ({', '.join(_SCORE_TYPES)}, updated_at) SELECT "
    + ", ".join(
        f"${_PARAMETER[c]}::{t}" if c in _SAME_IN_A_CHUNK else f"k.{c}::{t}" for c, t in _SCORE_TYPES.items()
    )
    + ", now() FROM k"
    f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SCORE_TYPES if c not in _KEY)
    + ", updated_at = now()"
)
_AT = {c: j for j, c in enumerate(_SCORE_TYPES)}


async def save_scores(connection: Any, columns: list[list[Any]]) -> None:
    """Upsert a chunk's score rows, given column by column (`_SCORE_TYPES`), all of one tenant, day
    and model."""
    if not columns or not columns[0]:
        return
    same = [columns[_AT[c]][0] for c in _SAME_IN_A_CHUNK]
    await connection.execute(_STAGE)
    rows = zip(*[columns[_AT[c]] for c in _VARYING], strict=True)
    await connection.copy_records_to_table(_STAGED, records=rows)
    await connection.execute(_SAVE_SCORES, *same)


# --- debtor rows and their versions ------------------------------------------------------------

_DEBTORS = f"{store.SCHEMA}.{store.debtors.name}"


async def _load_debtors(session: AsyncSession, keys: Iterable[DebtorKey]) -> dict[DebtorKey, StoredDebtor]:
    wanted = sorted(keys)
    if not wanted:
        return {}
    connection = await driver_connection(session)
    return await _debtor_rows(connection, [t for t, _ in wanted], [d for _, d in wanted])


async def _debtor_rows(
    connection: Any, tenants: list[str], debtors: list[str]
) -> dict[DebtorKey, StoredDebtor]:
    rows = await connection.fetch(
        f"SELECT d.tenant_id, d.debtor_id, d.paperless, d.collector, d.xmin::text AS version FROM {_DEBTORS}"
        " AS d JOIN unnest($1::text[], $2::text[]) AS k(t, d) ON d.tenant_id = k.t AND d.debtor_id = k.d",
        tenants,
        debtors,
    )
    return {
        (r["tenant_id"], r["debtor_id"]): StoredDebtor(
            {"paperless": r["paperless"], "collector": r["collector"]}, r["version"]
        )
        for r in rows
    }


async def save_debtors(
    session: AsyncSession, values: dict[DebtorKey, dict[str, Any]], read: dict[DebtorKey, Version]
) -> None:
    """Write each debtor's row only if it is still as this transaction read it: at the version in
    `read`, or still absent when `read` has none. Every writer of a debtor's invoices or scores writes
    its row first, so a second group member holding the debtor for a moment during a rebalance finds
    the row changed and raises `StaleState`: its batch is rolled back and read again."""
    if values:
        await write_debtor_rows(await driver_connection(session), values, read)


async def write_debtor_rows(
    connection: Any, values: dict[DebtorKey, dict[str, Any]], read: dict[DebtorKey, Version]
) -> None:
    """`save_debtors` on a driver connection, in its transaction."""
    ordered = sorted(values.items())  # one lock order for every writer
    existing = [(k, v) for k, v in ordered if k in read]
    new = [(k, v) for k, v in ordered if k not in read]
    written = 0
    if existing:
        rows = await connection.fetch(
            f"UPDATE {_DEBTORS} AS d SET paperless = k.paperless, collector = k.collector"
            " FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[])"
            " AS k(tenant_id, debtor_id, paperless, collector, version)"
            " WHERE d.tenant_id = k.tenant_id AND d.debtor_id = k.debtor_id AND d.xmin::text = k.version"
            " RETURNING d.debtor_id",
            [k[0] for k, _ in existing],
            [k[1] for k, _ in existing],
            [v["paperless"] for _, v in existing],
            [v["collector"] for _, v in existing],
            [read[k] for k, _ in existing],
        )
        written += len(rows)
    if new:
        rows = await connection.fetch(
            f"INSERT INTO {_DEBTORS} (tenant_id, debtor_id, paperless, collector)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[])"
            " ON CONFLICT (tenant_id, debtor_id) DO NOTHING RETURNING debtor_id",
            [k[0] for k, _ in new],
            [k[1] for k, _ in new],
            [v["paperless"] for _, v in new],
            [v["collector"] for _, v in new],
        )
        written += len(rows)
    if written != len(ordered):
        raise StaleState(f"{len(ordered) - written} scoring debtor rows changed since read")


# --- the business day --------------------------------------------------------------------------

_INVOICES = f"{store.SCHEMA}.{store.invoices.name}"
_OPEN_DEBTORS = (
    f"SELECT DISTINCT debtor_id FROM {_INVOICES}"
    " WHERE tenant_id = $1 AND status = 'open' AND issue_date <= $2 ORDER BY debtor_id"
)
_DATES = ("issue_date", "due_date", "settled_date", "written_off_date", "disputed_date")
_OTHERS = ("debtor_id", "invoice_id", "currency", "amount_minor", "outstanding_minor")
INVOICE_COLUMNS = _OTHERS + _DATES
"""What a business day reads of each invoice, column by column."""


def _ordinal(column: str) -> str:
    """The date as `date.toordinal` counts it (`NEVER`: none), in SQL."""
    return f"coalesce({column} - DATE '0001-01-01' + 1, {NEVER})"


# The chunk's invoices as one array per column: no row objects, dates as day numbers.
_CHUNK_READ = (
    "SELECT * FROM (SELECT "
    + ", ".join([f"array_agg({c})" for c in _OTHERS] + [f"array_agg({_ordinal(c)})" for c in _DATES])
    + f" FROM {_INVOICES} WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])) AS i, ("
    + _PUBLISHED
    + ") AS p"
)
"""A chunk's invoices and what was last published of its debtors, as arrays (the list of debtors
sent once)."""


def invoice_columns(
    rows: Sequence[dict[str, Any]], debtor_ids: list[str] | None = None
) -> dict[str, list[Any]]:
    """Invoice rows (with dates) as a chunk's invoice columns; `debtor_ids`: each row's debtor, when
    the rows do not say."""
    columns = {
        c: [NEVER if r[c] is None else r[c].toordinal() for r in rows]
        if c in _DATES
        else [r[c] for r in rows]
        for c in INVOICE_COLUMNS
        if c != "debtor_id" or debtor_ids is None
    }
    if debtor_ids is not None:
        columns["debtor_id"] = debtor_ids
    return columns


@dataclass(frozen=True)
class ChunkInput:
    """What deciding a chunk of a business day needs, as plain data."""

    version: int | None
    rule: WriteOffRule
    tenant: str
    day: dt.date
    debtors: list[str]
    paperless: dict[str, bool | None]
    invoices: Mapping[str, Sequence[Any]]
    """The invoices of the chunk's debtors, in any order, column by column (`INVOICE_COLUMNS`);
    dates as `date.toordinal` counts them, `NEVER` for none."""
    published: Published


ChunkOutcome = tuple[list[list[Any]], list[Message]]
"""The score rows, column by column (`_SCORE_TYPES`), and the score events to publish."""


def decide_chunk(
    scorer: Scorer, chunk: ChunkInput, causes: Mapping[DebtorKey, str] | None = None
) -> ChunkOutcome:
    """The scores of a chunk's debtors as of its day, and which of them to publish: what
    `histories_of`, `score_debtors` and `_outcome` give, the histories made as columns straight from
    the rows. `causes`: the event each debtor's score event names as its cause, if any."""
    if not chunk.invoices["debtor_id"]:
        return [[] for _ in _SCORE_TYPES], []
    scored = scored_columns(scorer, _columns(chunk), chunk.day)
    if scored is not None:
        return _outcome_of(scored, chunk.version, chunk.published, causes or {}, chunk.rule)
    # An invoice id twice in one history: debtor by debtor.
    scores = score_chunk(scorer, _histories(chunk), chunk.day)
    score_rows, messages = _outcome(scores, chunk.version, chunk.published, causes or {}, chunk.rule)
    return [[r[c] for r in score_rows] for c in _SCORE_TYPES], messages


def _columns(chunk: ChunkInput) -> Columns:
    """The chunk's histories as columns: debtor by debtor in the chunk's order, a history per
    currency (sorted), its invoices by issue date and id, as `histories_of` orders them."""
    invoices = chunk.invoices
    at = {d: i for i, d in enumerate(chunk.debtors)}
    debtor = np.array([at[d] for d in invoices["debtor_id"]], dtype=np.int64)
    currencies = sorted(set(invoices["currency"]))
    rank = {c: i for i, c in enumerate(currencies)}
    currency = np.array([rank[c] for c in invoices["currency"]], dtype=np.int64)
    ids = invoices["invoice_id"]
    issue = np.array(invoices["issue_date"], dtype=np.int64)
    order = sort_by((debtor, currency, issue), ids)
    history = (debtor * len(currencies) + currency)[order]
    first = np.flatnonzero(np.r_[True, history[1:] != history[:-1]])
    counts = np.diff(np.r_[first, len(order)])
    firsts = order[first]
    debtor_ids = [chunk.debtors[i] for i in debtor[firsts].tolist()]

    def column(name: str) -> np.ndarray:
        out: np.ndarray = np.array(invoices[name], dtype=np.int64)[order]
        return out

    return Columns(
        tenant_ids=[chunk.tenant] * len(first),
        debtor_ids=debtor_ids,
        currencies=[currencies[i] for i in currency[firsts].tolist()],
        paperless=[chunk.paperless.get(d) for d in debtor_ids],
        credit_limits=[None] * len(first),
        counts=counts.astype(np.int64),
        invoice_ids=[ids[i] for i in order.tolist()],
        issue=issue[order],
        due=column("due_date"),
        settled=column("settled_date"),
        written_off=column("written_off_date"),
        disputed=column("disputed_date"),
        amount=column("amount_minor"),
        outstanding=column("outstanding_minor"),
    )


def _histories(chunk: ChunkInput) -> list[DebtorHistory]:
    """The chunk's histories as `histories_of` makes them."""
    columns = chunk.invoices

    def date(day: int) -> dt.date | None:
        return None if day == NEVER else dt.date.fromordinal(day)

    by_debtor: dict[str, list[InvoiceRow]] = defaultdict(list)
    for k, debtor in enumerate(columns["debtor_id"]):
        row = {c: columns[c][k] for c in _OTHERS} | {c: date(columns[c][k]) for c in _DATES}
        by_debtor[debtor].append(row)
    return [
        h
        for debtor in chunk.debtors
        for h in histories_of(chunk.tenant, debtor, by_debtor[debtor], chunk.paperless.get(debtor))
    ]


@dataclass(frozen=True)
class DayChunk:
    """A chunk of a tenant's business day: which debtors to score again, as of which day."""

    version: int | None
    rule: WriteOffRule
    tenant: str
    day: dt.date
    debtors: list[str]
    traceparent: bytes | None = None
    """The trace context of the batch that started the day, given to its score events."""


async def _rescore_chunk(connection: Any, scorer: Scorer, chunk: DayChunk) -> None:
    """Score a chunk of a tenant's debtors as of its day and write their scores and events in the
    connection's transaction: a locking write, one read and three bulk writes, whatever its size."""
    tenant, debtors = chunk.tenant, chunk.debtors
    paperless = await _lock_debtors(connection, tenant, debtors)
    arrays = await connection.fetchrow(_CHUNK_READ, tenant, debtors)
    invoices = {c: arrays[k] or [] for k, c in enumerate(INVOICE_COLUMNS)}
    decided = ChunkInput(
        version=chunk.version,
        rule=chunk.rule,
        tenant=tenant,
        day=chunk.day,
        debtors=debtors,
        paperless=paperless,
        invoices=invoices,
        published=_published_of(tenant, arrays[len(INVOICE_COLUMNS) :]),
    )
    columns, messages = decide_chunk(scorer, decided)
    await save_scores(connection, columns)
    if chunk.traceparent is not None:
        messages = [with_traceparent(m, chunk.traceparent) for m in messages]
    await copy_to_outbox(connection, store.runtime, messages)


async def _lock_debtors(connection: Any, tenant: str, debtors: list[str]) -> dict[str, bool | None]:
    """Write the chunk's debtor rows before reading anything of theirs, and their billing channels:
    a writer that read one of them before fails its version check, and none can change them until
    this transaction ends. A row another writer inserted meanwhile fails the chunk."""
    written = await connection.fetch(
        f"UPDATE {_DEBTORS} SET paperless = paperless WHERE tenant_id = $1 AND debtor_id = ANY($2::text[])"
        " RETURNING debtor_id, paperless",
        tenant,
        debtors,
    )
    paperless: dict[str, bool | None] = {r["debtor_id"]: r["paperless"] for r in written}
    if missing := sorted(set(debtors) - set(paperless)):
        await write_debtor_rows(connection, {(tenant, d): dict(NO_DEBTOR) for d in missing}, {})
    return paperless


RescoreChunk = Callable[[DayChunk], Coroutine[Any, Any, None]]


def _rescore_here(scorer: Scorer, bind: Any) -> RescoreChunk:
    """Chunks scored in this process, each in a transaction of its own."""

    async def rescore(chunk: DayChunk) -> None:
        async with AsyncSession(bind, expire_on_commit=False) as own, own.begin():
            await _rescore_chunk(await driver_connection(own), scorer, chunk)

    return rescore


_worker_scorer: tuple[str, Scorer] | None = None
"""In a worker process: the scorer last sent, by the SHA-256 of its pickle."""
_worker_loop: asyncio.AbstractEventLoop | None = None
_worker_connection: tuple[str, Any] | None = None
"""In a worker process: its event loop and its connection to the database, by URL."""


def _warm() -> None:
    """Nothing: a worker process that ran it has imported this module and the model libraries."""


def _scorer_in_worker(key: str, blob: bytes) -> Scorer:
    global _worker_scorer
    if _worker_scorer is None or _worker_scorer[0] != key:
        _worker_scorer = (key, pickle.loads(blob))  # sent by this service's own process
    return _worker_scorer[1]


def _decide_in_worker(key: str, blob: bytes, chunk: ChunkInput) -> ChunkOutcome:
    return decide_chunk(_scorer_in_worker(key, blob), chunk)


def _rescore_in_worker(key: str, blob: bytes, database: str, chunk: DayChunk) -> None:
    """A chunk read, scored and written in a worker process, in a transaction of its own on the
    worker's own connection: both cores work while the consumer only hands out chunks."""
    global _worker_loop
    scorer = _scorer_in_worker(key, blob)
    if _worker_loop is None:
        _worker_loop = asyncio.new_event_loop()
    _worker_loop.run_until_complete(_rescore_on_own_connection(scorer, database, chunk))


async def _rescore_on_own_connection(scorer: Scorer, database: str, chunk: DayChunk) -> None:
    global _worker_connection
    if _worker_connection is None or _worker_connection[0] != database or _worker_connection[1].is_closed():
        _worker_connection = (database, await asyncpg.connect(database))
    connection = _worker_connection[1]
    try:
        async with connection.transaction():
            await _rescore_chunk(connection, scorer, chunk)
    except StaleState:
        raise
    except BaseException:
        _worker_connection = None  # a connection in doubt is not used again
        connection.terminate()
        raise
