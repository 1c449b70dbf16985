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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from contracts.money import minor_unit_exponent
from services.scoring.credit import MONTH_DAYS, WINDOW_DAYS, CreditLimit, round_down
from services.scoring.features import FEATURE_NAMES, RECENT, DebtorHistory, Features
from services.scoring.model import (
    TOP_REASONS,
    DebtorScore,
    InvoiceScore,
    Scorer,
    phrase,
    score_debtors,
    segment_of,
)

NEVER = 10**9
"""An ordinal later than any date: "not (yet)"."""
COLUMN = {name: j for j, name in enumerate(FEATURE_NAMES)}


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
    billed_last_year: np.ndarray
    invoices_last_year: np.ndarray
    first_issue: np.ndarray
    known_invoices: np.ndarray
    sum_terms: np.ndarray


def chunk_features(histories: Sequence[DebtorHistory], as_of: dt.date) -> ChunkFeatures | None:
    """The features of every debtor and open invoice of the chunk, computed at once; None when an
    invoice id appears twice in one history (`features_at` leaves out an invoice by its id)."""
    ids = [inv.invoice_id for h in histories for inv in h.invoices]
    n = len(histories)
    day = as_of.toordinal()
    counts = np.array([len(h.invoices) for h in histories], dtype=np.int64)
    g = np.repeat(np.arange(n), counts)
    id_rank = np.unique(np.array(ids, dtype=object), return_inverse=True)[1].reshape(-1).astype(np.int64)
    if len(np.unique(g * (len(ids) + 1) + id_rank)) != len(ids):
        return None

    def dates(attr: str) -> np.ndarray:
        return np.array(
            [
                NEVER if (d := getattr(inv, attr)) is None else d.toordinal()
                for h in histories
                for inv in h.invoices
            ],
            dtype=np.int64,
        )

    issue, due = dates("issue_date"), dates("due_date")
    settled, written_off, disputed = dates("settled_date"), dates("written_off_date"), dates("disputed_date")
    amount = np.array([inv.amount_minor for h in histories for inv in h.invoices], dtype=np.int64)
    outstanding = np.array([inv.outstanding() for h in histories for inv in h.invoices], dtype=np.int64)
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
    order = np.lexsort((id_rank, closed_on, g))
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
    position = np.full(len(ids), -1, dtype=np.int64)
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
    scales = [10 ** minor_unit_exponent(h.currency) for h in histories]
    typical_amount = [0 if math.isnan(m) else int(m) for m in typical_median.tolist()]
    for i, (h, scale, overdue_sum, m, amt) in enumerate(
        zip(
            histories,
            scales,
            overdue_minor_amount.tolist(),
            typical_median.tolist(),
            typical_amount,
            strict=True,
        )
    ):
        overdue_major = float(overdue_sum / scale)
        x[i, COLUMN["overdue_amount"]] = overdue_major
        limit = h.credit_limit_minor
        if limit:
            x[i, COLUMN["overdue_share_of_limit"]] = overdue_major / float(limit / scale)
        if h.paperless is not None:
            x[i, COLUMN["paperless"]] = float(h.paperless)
        if not math.isnan(m) and m > 0:
            x[i, COLUMN["amount_ratio"]] = amt / m
        x[i, COLUMN["log_amount"]] = math.log1p(max(0.0, float(amt / scale)))

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
    for k, (i, m, amt, overdue_sum) in enumerate(
        zip(og.tolist(), own_median.tolist(), amount[own].tolist(), own_overdue_minor.tolist(), strict=True)
    ):
        h, scale = histories[i], scales[i]
        overdue_major = float(overdue_sum / scale)
        own_x[k, COLUMN["overdue_amount"]] = overdue_major
        limit = h.credit_limit_minor
        if limit:
            own_x[k, COLUMN["overdue_share_of_limit"]] = overdue_major / float(limit / scale)
        own_x[k, COLUMN["amount_ratio"]] = amt / m if not math.isnan(m) and m > 0 else math.nan
        own_x[k, COLUMN["log_amount"]] = math.log1p(max(0.0, float(amt / scale)))

    year_ago = day - WINDOW_DAYS
    first_issue = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_issue, g[known], issue[known])
    return ChunkFeatures(
        typical=x,
        own=own_x,
        own_debtor=og,
        own_invoice=own,
        outstanding=outstanding,
        billed_last_year=per_debtor(np.where(known & (issue > year_ago), amount, 0)),
        invoices_last_year=per_debtor(known & (issue > year_ago)),
        first_issue=first_issue,
        known_invoices=n_known,
        sum_terms=sum_terms,
    )


def score_chunk(scorer: Scorer, histories: Sequence[DebtorHistory], as_of: dt.date) -> list[DebtorScore]:
    """`score_debtors(scorer, histories, as_of)`, computed for all the histories at once."""
    if not histories:
        return []
    c = chunk_features(histories, as_of)
    if c is None:
        return score_debtors(scorer, histories, as_of)
    n = len(histories)
    day = as_of.toordinal()
    p_all, days_all = predict_matrix(scorer, np.vstack([c.typical, c.own]))
    why = _reasons(scorer, c.typical, p_all[:n], [h.currency for h in histories])

    # Assembly, debtor by debtor, with Python's own rounding.
    p_list, days_list = p_all[:n].tolist(), days_all[:n].tolist()
    own_p, own_days = p_all[n:].tolist(), days_all[n:].tolist()
    own_of: list[list[int]] = [[] for _ in range(n)]
    for k, i in enumerate(c.own_debtor.tolist()):
        own_of[i].append(k)
    invoice_of = [inv for h in histories for inv in h.invoices]
    own_rows = c.own_invoice.tolist()
    outstanding = c.outstanding
    tomorrow = as_of + dt.timedelta(days=1)
    billed, n_billed = c.billed_last_year.tolist(), c.invoices_last_year.tolist()
    firsts, known_counts, terms_sums = c.first_issue.tolist(), c.known_invoices.tolist(), c.sum_terms.tolist()
    out = []
    for i, h in enumerate(histories):
        invoices = []
        overdue_days = []
        for k in own_of[i]:
            inv = invoice_of[own_rows[k]]
            late = inv.due_date < as_of
            settle = inv.issue_date + dt.timedelta(days=round(own_days[k]))
            if late:
                overdue_days.append((as_of - inv.due_date).days)
            invoices.append(
                InvoiceScore(
                    invoice_id=inv.invoice_id,
                    outstanding_minor=int(outstanding[own_rows[k]]),
                    due_date=inv.due_date,
                    p_late=1.0 if late else round(own_p[k], 4),
                    expected_settle_date=max(settle, tomorrow) if late else settle,
                )
            )
        p_late = round(p_list[i], 4)
        limit = None
        if n_billed[i]:
            months = min(12.0, max(1.0, math.ceil((day - firsts[i]) / MONTH_DAYS)))
            monthly = round(billed[i] / months)
            mean_terms = terms_sums[i] / known_counts[i] if known_counts[i] else 30.0
            factor = round(1 + max(0.0, mean_terms) / 30, 2)
            limit = CreditLimit(monthly, factor, round_down(monthly * factor * (1 - p_late), h.currency))
        out.append(
            DebtorScore(
                tenant_id=h.tenant_id,
                debtor_id=h.debtor_id,
                currency=h.currency,
                as_of=as_of,
                score=round(100 * p_late),
                p_late=p_late,
                segment=segment_of(p_late),
                expected_days_to_settle=round(days_list[i], 1),
                reasons=tuple(why[i]),
                open_minor=sum(s.outstanding_minor for s in invoices),
                overdue_minor=sum(s.outstanding_minor for s in invoices if s.due_date < as_of),
                oldest_days_past_due=max(overdue_days, default=0),
                invoices=tuple(invoices),
                model_kind=scorer.kind,
                usual_monthly_billing_minor=limit.usual_monthly_billing_minor if limit else None,
                recommended_limit_minor=limit.recommended_minor if limit else None,
            )
        )
    return out


def _reasons(scorer: Scorer, x: np.ndarray, base: np.ndarray, currencies: Sequence[str]) -> list[list[str]]:
    """`model.reasons` for the rows of `x` whose probabilities are `base`: each feature away from
    its typical value is set to it, for all rows at once, and every probe predicted in one call."""
    n = len(x)
    reference = [scorer.reference.get(name) for name in FEATURE_NAMES]
    probes = []
    moved = []
    for j, ref in enumerate(reference):
        column = x[:, j]
        rows = np.flatnonzero(~np.isnan(column) if ref is None else column != ref)
        probe = x[rows].copy()
        probe[:, j] = np.nan if ref is None else ref
        probes.append(probe)
        moved.append(rows)
    probed = predict_matrix(scorer, np.vstack(probes))[0] if sum(len(r) for r in moved) else np.zeros(0)
    deltas = np.full((n, len(FEATURE_NAMES)), np.nan)
    offset = 0
    for j, rows in enumerate(moved):
        deltas[rows, j] = base[rows] - probed[offset : offset + len(rows)]
        offset += len(rows)
    values: list[list[Any]] = x.tolist()
    out = []
    for i, row_deltas in enumerate(deltas.tolist()):
        pairs = [(d, FEATURE_NAMES[j]) for j, d in enumerate(row_deltas) if not math.isnan(d)]
        raising = sorted((d, name) for d, name in pairs if d > 0.005)[::-1]
        chosen = raising or sorted((d, name) for d, name in pairs if d < -0.005)
        said = []
        for _, name in chosen:
            v = values[i][COLUMN[name]]
            if words := phrase(name, None if math.isnan(v) else v, currencies[i]):
                said.append(words)
        out.append(said[:TOP_REASONS])
    return out
