"""Scoring many debtors at once: `score_chunk` gives exactly what `model.score_debtors` gives for the
same histories and date, computed for the whole chunk with array operations instead of one Python
pass per debtor and per invoice.

- The features of every debtor (a typical next invoice) and of every open invoice (the same history
  without that invoice) come from the chunk's invoices as arrays: counts, sums, per-debtor maxima
  and medians over invoices grouped by debtor. Sums of whole days and minor units are exact
  integers, divided once, as `statistics.fmean` divides its exact sum: the same floats.
- Every prediction of the chunk is one call of the scorer on a matrix (`predict_matrix`).
- Reasons: for each feature, every debtor whose value is not the typical one gets a probe row with
  that one feature set to the typical value; all probes are predicted in one more call.
- What is rounded to decimals (probabilities, terms factor) is rounded by Python's `round` per
  debtor, as in `score_debtors`: numpy's rounding to decimals is not the same function.

`tests/unit/test_scoring_batch.py` checks, on random portfolios, that both give equal scores.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from services.scoring.credit import MONTH_DAYS, WINDOW_DAYS, round_down
from services.scoring.features import FEATURE_NAMES, RECENT, DebtorHistory, Features
from services.scoring.model import (
    TOP_REASONS,
    DebtorScore,
    InvoiceScore,
    Scorer,
    Segment,
    features_read,
    phrase,
    score_debtors,
    segment_of,
)
from services.scoring.units import minor_per_major

NEVER = 10**9
"""An ordinal later than any date: "not (yet)"."""
COLUMN = {name: j for j, name in enumerate(FEATURE_NAMES)}
_NAME_RANK = np.argsort(np.argsort(np.array(FEATURE_NAMES)))
"""Each feature's place among the features' names in alphabetical order."""
_HAS_WORDS_UNKNOWN = np.array([phrase(name, None, "EUR") is not None for name in FEATURE_NAMES])
"""Features with something to say when their value is unknown."""


def predict_matrix(scorer: Scorer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of paying late and days to settle for each row of a feature matrix."""
    fast = getattr(scorer, "predict_matrix", None)
    if fast is not None:
        p, days = fast(x)
        return np.asarray(p, dtype=float), np.asarray(days, dtype=float)
    make = cast(Callable[..., Features], Features)
    rows = [make(*[None if math.isnan(v) else float(v) for v in r]) for r in x.tolist()]
    predictions = scorer.predict(rows)
    return (
        np.array([pr.p_late for pr in predictions], dtype=float),
        np.array([pr.days_to_settle for pr in predictions], dtype=float),
    )


def _group_sum(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sum of `values[starts[i]:ends[i]]` for each group, exact for integers."""
    total = np.zeros(len(values) + 1, dtype=values.dtype)
    np.cumsum(values, out=total[1:])
    out: np.ndarray = total[ends] - total[starts]
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN (unknown) where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / np.where(denominator == 0, 1, denominator)
    return np.where(denominator == 0, np.nan, out)


@dataclass(frozen=True)
class Columns:
    """A chunk's histories as columns: one entry per history, and one per invoice, history after
    history, each history's invoices in its own order. Dates are ordinals, `NEVER` for none."""

    tenant_ids: Sequence[str]
    debtor_ids: Sequence[str]
    currencies: Sequence[str]
    paperless: Sequence[bool | None]
    credit_limits: Sequence[int | None]
    counts: np.ndarray
    """Invoices per history."""
    invoice_ids: Sequence[str]
    issue: np.ndarray
    due: np.ndarray
    settled: np.ndarray
    written_off: np.ndarray
    disputed: np.ndarray
    amount: np.ndarray
    outstanding: np.ndarray


def ordinals(values: Iterable[dt.date | None]) -> np.ndarray:
    return np.array([NEVER if d is None else d.toordinal() for d in values], dtype=np.int64)


def columns_of(histories: Sequence[DebtorHistory]) -> Columns:
    invoices = [inv for h in histories for inv in h.invoices]
    return Columns(
        tenant_ids=[h.tenant_id for h in histories],
        debtor_ids=[h.debtor_id for h in histories],
        currencies=[h.currency for h in histories],
        paperless=[h.paperless for h in histories],
        credit_limits=[h.credit_limit_minor for h in histories],
        counts=np.array([len(h.invoices) for h in histories], dtype=np.int64),
        invoice_ids=[inv.invoice_id for inv in invoices],
        issue=ordinals(inv.issue_date for inv in invoices),
        due=ordinals(inv.due_date for inv in invoices),
        settled=ordinals(inv.settled_date for inv in invoices),
        written_off=ordinals(inv.written_off_date for inv in invoices),
        disputed=ordinals(inv.disputed_date for inv in invoices),
        amount=np.array([inv.amount_minor for inv in invoices], dtype=np.int64),
        outstanding=np.array([inv.outstanding() for inv in invoices], dtype=np.int64),
    )


@dataclass(frozen=True)
class ChunkFeatures:
    """The features of a chunk's debtors and open invoices, and what the scores are made of."""

    typical: np.ndarray
    """One row per debtor: `features_at(history, as_of).row()`."""
    own: np.ndarray
    """One row per open invoice, debtor by debtor in history order: `features_at(history, as_of,
    invoice).row()`."""
    own_debtor: np.ndarray
    own_invoice: np.ndarray
    """Index of each open invoice in the chunk's invoices, debtor by debtor."""
    outstanding: np.ndarray
    billed_last_year: list[int]
    """Exact, however large."""
    invoices_last_year: np.ndarray
    first_issue: np.ndarray
    known_invoices: np.ndarray
    sum_terms: np.ndarray


def chunk_features(histories: Sequence[DebtorHistory], as_of: dt.date) -> ChunkFeatures | None:
    """The features of every debtor and open invoice of the chunk, computed at once; None when an
    invoice id appears twice in one history (`features_at` leaves out an invoice by its id)."""
    return features_of(columns_of(histories), as_of)


def _scales(currencies: Sequence[str]) -> np.ndarray:
    scale = {c: minor_per_major(c) for c in set(currencies)}
    return np.array([scale[c] for c in currencies], dtype=np.int64)


def _log_amount(amount: np.ndarray, scale: np.ndarray) -> np.ndarray:
    # math.log1p, value by value: numpy's log1p may differ from the C library's in the last bit.
    major = np.maximum(0.0, amount / scale)
    return np.array([math.log1p(v) for v in major.tolist()], dtype=float)


def sort_by(keys: Sequence[np.ndarray], ids: Sequence[str]) -> np.ndarray:
    """The order of the rows by `keys` (the first first), then by id: numbers sort at once, and only
    rows equal in every key are put in order by their ids, in Python (ids compare as `sorted` does)."""
    order = np.lexsort(tuple(keys)[::-1])
    if len(order) < 2:
        return order
    tied = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        ordered = key[order]
        tied &= ordered[1:] == ordered[:-1]
    if not tied.any():
        return order
    # Runs of rows equal in every key: each sorted by id.
    edges = np.flatnonzero(np.diff(np.r_[0, tied.astype(np.int8), 0]))
    for start, end in zip(edges[::2].tolist(), (edges[1::2] + 1).tolist(), strict=True):
        run = order[start:end].tolist()
        order[start:end] = sorted(run, key=lambda row: ids[row])
    return order


def _repeats_an_id(group: np.ndarray, ids: Sequence[str]) -> bool:
    """Whether an id appears twice in one group: by hash first, then the ids of equal hashes."""
    if len(ids) < 2:
        return False
    hashes = np.array([hash(i) for i in ids], dtype=np.int64)
    order = np.lexsort((hashes, group))
    g, h = group[order], hashes[order]
    same = (g[1:] == g[:-1]) & (h[1:] == h[:-1])
    for k in np.flatnonzero(same).tolist():
        first = k
        while first > 0 and same[first - 1]:
            first -= 1
        run = [ids[row] for row in order[first : k + 2].tolist()]
        if len(set(run)) < len(run):
            return True
    return False


def features_of(c: Columns, as_of: dt.date) -> ChunkFeatures | None:
    """`chunk_features` of histories given as columns."""
    n = len(c.counts)
    day = as_of.toordinal()
    counts = c.counts
    g = np.repeat(np.arange(n), counts)
    n_ids = len(c.invoice_ids)
    if _repeats_an_id(g, c.invoice_ids):
        return None

    issue, due, amount = c.issue, c.due, c.amount
    settled, written_off, disputed = c.settled, c.written_off, c.disputed
    terms = due - issue

    known = issue <= day
    closed_on = np.minimum(
        np.where(settled <= day, settled, NEVER), np.where(written_off <= day, written_off, NEVER)
    )
    closed = known & (closed_on < NEVER)
    open_ = known & ~closed
    overdue = open_ & (due < day)
    late_days = np.maximum(0, closed_on - due)
    to_settle = closed & (written_off != closed_on)
    paid = known & (settled <= day)
    disputed_by = known & (disputed <= day)

    ends = np.cumsum(counts)
    starts = ends - counts

    def per_debtor(values: np.ndarray) -> np.ndarray:
        return _group_sum(values.astype(np.int64), starts, ends)

    n_known = per_debtor(known)
    n_closed = per_debtor(closed)
    n_open = per_debtor(open_)
    n_overdue = per_debtor(overdue)
    n_late = per_debtor(closed & (late_days > 0))
    sum_late = per_debtor(np.where(closed, late_days, 0))
    n_to_settle = per_debtor(to_settle)
    sum_to_settle = per_debtor(np.where(to_settle, closed_on - issue, 0))
    overdue_minor_amount = per_debtor(np.where(overdue, amount, 0))
    n_disputed = per_debtor(disputed_by)
    sum_terms = per_debtor(np.where(known, terms, 0))
    last_paid = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_paid, g[paid], settled[paid])

    # The trend compares the latest RECENT settled invoices (by settle date, then id) with all.
    order = sort_by((g, closed_on), c.invoice_ids)
    order = order[closed[order]]
    lateness = late_days[order]
    closed_ends = np.cumsum(n_closed)
    closed_starts = closed_ends - n_closed
    recent = _group_sum(lateness, np.maximum(closed_starts, closed_ends - RECENT), closed_ends)

    # Medians of the known amounts: sorted per debtor.
    by_amount = np.lexsort((amount, g))
    by_amount = by_amount[known[by_amount]]
    sorted_amounts = amount[by_amount]
    known_ends = np.cumsum(n_known)
    known_starts = known_ends - n_known
    position = np.full(n_ids, -1, dtype=np.int64)
    position[by_amount] = np.arange(len(by_amount)) - np.repeat(known_starts, n_known)

    def median(count: np.ndarray, start: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
        """The median of each group's `count` sorted amounts from `start`, leaving out the one at
        `skip` (None: none); NaN for no amounts."""
        if not len(count):
            return np.zeros(0)
        safe = np.maximum(count, 1)
        hi_i = safe // 2
        lo_i = np.where(safe % 2 == 1, hi_i, hi_i - 1)
        if skip is not None:
            hi_i = hi_i + (hi_i >= skip)
            lo_i = lo_i + (lo_i >= skip)
        top = len(sorted_amounts) - 1
        hi = (
            sorted_amounts[np.minimum(start + hi_i, top)]
            if len(sorted_amounts)
            else np.zeros(len(count), np.int64)
        )
        lo = (
            sorted_amounts[np.minimum(start + lo_i, top)]
            if len(sorted_amounts)
            else np.zeros(len(count), np.int64)
        )
        value = np.where(safe % 2 == 1, hi.astype(float), (lo + hi) / 2)
        return np.where(count == 0, np.nan, value)

    typical_median = median(n_known, known_starts, None)
    scale = _scales(c.currencies)
    limit = np.array([v or 0 for v in c.credit_limits], dtype=np.int64)
    has_limit = limit != 0
    limit_major = np.where(has_limit, limit / scale, 1.0)

    def amount_columns(
        x: np.ndarray, overdue_minor: np.ndarray, own_amount: np.ndarray, m: np.ndarray, rows: np.ndarray
    ) -> None:
        """Overdue amount, its share of the limit, the amount's ratio to the median and its log."""
        overdue_major = overdue_minor / scale[rows]
        x[:, COLUMN["overdue_amount"]] = overdue_major
        x[:, COLUMN["overdue_share_of_limit"]] = np.where(
            has_limit[rows], overdue_major / limit_major[rows], np.nan
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            x[:, COLUMN["amount_ratio"]] = np.where(m > 0, own_amount / np.where(m > 0, m, 1.0), np.nan)
        x[:, COLUMN["log_amount"]] = _log_amount(own_amount, scale[rows])

    x = np.full((n, len(FEATURE_NAMES)), np.nan)
    x[:, COLUMN["invoice_count"]] = n_known
    x[:, COLUMN["settled_count"]] = n_closed
    x[:, COLUMN["late_share"]] = _divide(n_late, n_closed)
    mean_late = _divide(sum_late, n_closed)
    x[:, COLUMN["mean_days_late"]] = mean_late
    x[:, COLUMN["days_late_trend"]] = np.where(n_closed > RECENT, recent / RECENT - mean_late, np.nan)
    x[:, COLUMN["mean_days_to_settle"]] = _divide(sum_to_settle, n_to_settle)
    x[:, COLUMN["days_since_last_payment"]] = np.where(last_paid >= 0, day - last_paid, np.nan)
    x[:, COLUMN["open_count"]] = n_open
    x[:, COLUMN["overdue_count"]] = n_overdue
    x[:, COLUMN["dispute_share"]] = _divide(n_disputed, n_known)
    x[:, COLUMN["terms_days"]] = np.where(n_known > 0, np.rint(_divide(sum_terms, n_known)), 30.0)
    x[:, COLUMN["paperless"]] = [np.nan if p is None else float(p) for p in c.paperless]
    # The typical amount is the median as `int` makes it (toward zero), 0 without amounts.
    typical_amount = np.where(np.isnan(typical_median), 0.0, np.trunc(typical_median))
    amount_columns(x, overdue_minor_amount, typical_amount, typical_median, np.arange(n))

    # Each open invoice: the debtor's features without it, its own amount and terms.
    own = np.flatnonzero(open_)
    og = g[own]
    own_x = x[og].copy()
    own_known = n_known[og] - 1
    own_overdue = overdue[own]
    own_x[:, COLUMN["invoice_count"]] = own_known
    own_x[:, COLUMN["open_count"]] = n_open[og] - 1
    own_x[:, COLUMN["overdue_count"]] = n_overdue[og] - own_overdue
    own_x[:, COLUMN["dispute_share"]] = _divide(n_disputed[og] - disputed_by[own], own_known)
    own_x[:, COLUMN["terms_days"]] = terms[own]
    own_median = median(own_known, known_starts[og], position[own])
    own_overdue_minor = overdue_minor_amount[og] - np.where(own_overdue, amount[own], 0)
    amount_columns(own_x, own_overdue_minor, amount[own], own_median, og)

    year_ago = day - WINDOW_DAYS
    first_issue = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_issue, g[known], issue[known])
    return ChunkFeatures(
        typical=x,
        own=own_x,
        own_debtor=og,
        own_invoice=own,
        outstanding=c.outstanding,
        billed_last_year=_exact_group_sums(
            np.where(known & (issue > year_ago), amount, 0), [0, *ends.tolist()]
        ),
        invoices_last_year=per_debtor(known & (issue > year_ago)),
        first_issue=first_issue,
        known_invoices=n_known,
        sum_terms=sum_terms,
    )


def score_chunk(scorer: Scorer, histories: Sequence[DebtorHistory], as_of: dt.date) -> list[DebtorScore]:
    """`score_debtors(scorer, histories, as_of)`, computed for all the histories at once."""
    if not histories:
        return []
    scores = score_columns(scorer, columns_of(histories), as_of)
    return score_debtors(scorer, histories, as_of) if scores is None else scores


def score_columns(scorer: Scorer, columns: Columns, as_of: dt.date) -> list[DebtorScore] | None:
    """`score_chunk` of histories given as columns; None when an invoice id appears twice in one
    history (then `score_debtors` scores them)."""
    scored = scored_columns(scorer, columns, as_of)
    return None if scored is None else [scored.debtor(i) for i in range(scored.n)]


@dataclass(frozen=True)
class ScoredColumns:
    """The scores of a chunk's histories, column by column: what `DebtorScore` holds for each
    history (`debtor(i)` makes the object), and for each open invoice, history after history."""

    as_of: dt.date
    model_kind: str
    tenant_ids: Sequence[str]
    debtor_ids: Sequence[str]
    currencies: Sequence[str]
    score: list[int]
    p_late: list[float]
    segment: list[Segment]
    expected_days_to_settle: list[float]
    reasons: list[list[str]]
    open_minor: list[int]
    overdue_minor: list[int]
    oldest_days_past_due: list[int]
    usual_monthly_billing_minor: list[int | None]
    recommended_limit_minor: list[int | None]
    invoice_starts: list[int]
    """Each history's open invoices are `invoice_*[invoice_starts[i]:invoice_starts[i + 1]]`."""
    invoice_ids: list[str]
    invoice_outstanding: list[int]
    invoice_due: list[int]
    invoice_p_late: list[float]
    invoice_settle: list[int]
    """Expected settle dates as ordinals (for an overdue invoice, not before the day after)."""

    @property
    def n(self) -> int:
        return len(self.debtor_ids)

    def debtor(self, i: int) -> DebtorScore:
        make = dt.date.fromordinal
        invoices = tuple(
            InvoiceScore(
                invoice_id=self.invoice_ids[k],
                outstanding_minor=self.invoice_outstanding[k],
                due_date=make(self.invoice_due[k]),
                p_late=self.invoice_p_late[k],
                expected_settle_date=make(self.invoice_settle[k]),
            )
            for k in range(self.invoice_starts[i], self.invoice_starts[i + 1])
        )
        return DebtorScore(
            tenant_id=self.tenant_ids[i],
            debtor_id=self.debtor_ids[i],
            currency=self.currencies[i],
            as_of=self.as_of,
            score=self.score[i],
            p_late=self.p_late[i],
            segment=self.segment[i],
            expected_days_to_settle=self.expected_days_to_settle[i],
            reasons=tuple(self.reasons[i]),
            open_minor=self.open_minor[i],
            overdue_minor=self.overdue_minor[i],
            oldest_days_past_due=self.oldest_days_past_due[i],
            invoices=invoices,
            model_kind=self.model_kind,
            usual_monthly_billing_minor=self.usual_monthly_billing_minor[i],
            recommended_limit_minor=self.recommended_limit_minor[i],
        )


def _exact_group_sums(values: np.ndarray, starts: list[int]) -> list[int]:
    """Sum of `values[starts[i]:starts[i + 1]]` for each group as Python integers: in int64 when no
    sum can overflow it, else one by one."""
    if not len(values) or float(np.abs(values.astype(float)).max()) < 2.0**62 / len(values):
        sums: list[int] = _group_sum(values, np.array(starts[:-1]), np.array(starts[1:])).tolist()
        return sums
    items = values.tolist()
    return [sum(items[a:b]) for a, b in itertools.pairwise(starts)]


def _no_scores(scorer: Scorer, as_of: dt.date) -> ScoredColumns:
    return ScoredColumns(
        as_of, scorer.kind, [], [], [], [], [], [], [], [], [], [], [], [], [], [0], [], [], [], [], []
    )


def scored_columns(scorer: Scorer, columns: Columns, as_of: dt.date) -> ScoredColumns | None:
    """The scores of histories given as columns, without an object per debtor or invoice; None when
    an invoice id appears twice in one history."""
    n = len(columns.counts)
    if not n:
        return _no_scores(scorer, as_of)
    c = features_of(columns, as_of)
    if c is None:
        return None
    day = as_of.toordinal()
    p_all, days_all = predict_matrix(scorer, np.vstack([c.typical, c.own]))
    why = _reasons(scorer, c.typical, p_all[:n], columns.currencies)
    if not np.isfinite(days_all[n:]).all():
        raise ValueError("cannot round a prediction that is not a number of days")

    # Python's own rounding to decimals, value by value; numpy's is not the same function.
    p_late = [round(v, 4) for v in p_all[:n].tolist()]
    score = [round(100 * v) for v in p_late]
    segment = [segment_of(v) for v in p_late]

    own_rows = c.own_invoice
    own_due = columns.due[own_rows]
    late = own_due < day
    # Python's round of a float goes to the nearest integer, ties to even, as numpy's rint does.
    settle = columns.issue[own_rows] + np.rint(days_all[n:]).astype(np.int64)
    settle = np.where(late, np.maximum(settle, day + 1), settle)
    outstanding = c.outstanding[own_rows]
    starts = np.searchsorted(c.own_debtor, np.arange(n + 1), side="left").tolist()
    oldest = np.zeros(n, dtype=np.int64)
    np.maximum.at(oldest, c.own_debtor[late], day - own_due[late])

    billed, n_billed = c.billed_last_year, c.invoices_last_year.tolist()
    firsts, known_counts, terms_sums = c.first_issue.tolist(), c.known_invoices.tolist(), c.sum_terms.tolist()
    usual: list[int | None] = [None] * n
    recommended: list[int | None] = [None] * n
    for i in range(n):
        if n_billed[i]:
            months = min(12.0, max(1.0, math.ceil((day - firsts[i]) / MONTH_DAYS)))
            monthly = round(billed[i] / months)
            mean_terms = terms_sums[i] / known_counts[i] if known_counts[i] else 30.0
            factor = round(1 + max(0.0, mean_terms) / 30, 2)
            usual[i] = monthly
            recommended[i] = round_down(monthly * factor * (1 - p_late[i]), columns.currencies[i])

    return ScoredColumns(
        as_of=as_of,
        model_kind=scorer.kind,
        tenant_ids=columns.tenant_ids,
        debtor_ids=columns.debtor_ids,
        currencies=columns.currencies,
        score=score,
        p_late=p_late,
        segment=segment,
        expected_days_to_settle=[round(v, 1) for v in days_all[:n].tolist()],
        reasons=why,
        open_minor=_exact_group_sums(outstanding, starts),
        overdue_minor=_exact_group_sums(np.where(late, outstanding, 0), starts),
        oldest_days_past_due=oldest.tolist(),
        usual_monthly_billing_minor=usual,
        recommended_limit_minor=recommended,
        invoice_starts=starts,
        invoice_ids=[columns.invoice_ids[k] for k in own_rows.tolist()],
        invoice_outstanding=outstanding.tolist(),
        invoice_due=own_due.tolist(),
        invoice_p_late=[
            1.0 if overdue else round(p, 4)
            for overdue, p in zip(late.tolist(), p_all[n:].tolist(), strict=True)
        ],
        invoice_settle=settle.tolist(),
    )


def _reasons(scorer: Scorer, x: np.ndarray, base: np.ndarray, currencies: Sequence[str]) -> list[list[str]]:
    """`model.reasons` for the rows of `x` whose probabilities are `base`: each feature away from
    its typical value is set to it, for all rows at once, and every probe predicted in one call."""
    n = len(x)
    reference = [scorer.reference.get(name) for name in FEATURE_NAMES]
    read = features_read(scorer)
    if not read:
        return [[] for _ in range(n)]
    probes = []
    moved = []
    for j in read:
        ref = reference[j]
        column = x[:, j]
        rows = np.flatnonzero(~np.isnan(column) if ref is None else column != ref)
        probe = x[rows].copy()
        probe[:, j] = np.nan if ref is None else ref
        probes.append(probe)
        moved.append(rows)
    probed = predict_matrix(scorer, np.vstack(probes))[0] if sum(len(r) for r in moved) else np.zeros(0)
    columns = np.array(read, dtype=np.int64)
    deltas = np.full((n, len(read)), np.nan)
    offset = 0
    for k, rows in enumerate(moved):
        deltas[rows, k] = base[rows] - probed[offset : offset + len(rows)]
        offset += len(rows)
    # Each row's features in the order `model.reasons` takes them: those that raised the probability
    # most first (ties: the later name first), or where none did, those that lowered it most (ties:
    # the earlier name first); of those, the first `TOP_REASONS` that have something to say (an
    # unknown value has words only for some features).
    with np.errstate(invalid="ignore"):
        raising: np.ndarray = deltas > 0.005
        lowering: np.ndarray = deltas < -0.005
    up = np.any(raising, axis=1, keepdims=True)
    values = x[:, columns]
    sayable = np.where(up, raising, lowering) & (~np.isnan(values) | _HAS_WORDS_UNKNOWN[columns])
    primary = np.where(sayable, np.where(up, -deltas, deltas), np.inf)
    secondary = np.where(up, -_NAME_RANK[columns], _NAME_RANK[columns])
    top = np.lexsort((secondary, primary), axis=1)[:, :TOP_REASONS]
    counts = np.minimum(sayable.sum(axis=1), TOP_REASONS).tolist()
    chosen_values = np.take_along_axis(values, top, axis=1).tolist()
    chosen_names = columns[top].tolist()
    out = []
    for i, count in enumerate(counts):
        row, names, currency = chosen_values[i], chosen_names[i], currencies[i]
        out.append(
            [
                words
                for t in range(count)
                if (
                    words := phrase(FEATURE_NAMES[names[t]], None if math.isnan(row[t]) else row[t], currency)
                )
            ]
        )
    return out
