"""Who pays late: a model per invoice, a risk score and segment per debtor, with reasons in words.

A trained model is a calibrated gradient-boosting classifier for "paid late" and a gradient-boosting
regressor for the days to settle, both with a fixed random state. With too little history (fewer
than `MIN_EXAMPLES` examples, or only one outcome) a transparent scorecard stands in.

Model work runs on one thread: the service scores small batches, where starting threads costs more
than it saves, and results do not depend on how many cores a machine has.

Reason codes are found the same way for either: each feature in turn is set to its typical value
(the training median) and the change of the probability says how much that feature moved the score;
the largest moves are said in a collector's words.

Segments have fixed meanings in probabilities of paying late, not quantiles of a portfolio, so that a
debtor's segment means the same thing from one model version to the next.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from statistics import fmean, median
from typing import Any, ClassVar, Literal, Protocol, cast

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from contracts.money import format_major
from services.scoring.credit import recommend
from services.scoring.features import (
    FEATURE_NAMES,
    DebtorHistory,
    Example,
    Features,
    InvoiceFact,
    features_at,
)
from services.scoring.units import minor_per_major

RANDOM_STATE = 20130101
MIN_EXAMPLES = 200
Segment = Literal["low", "medium", "high"]
SEGMENTS: tuple[Segment, ...] = ("low", "medium", "high")
SEGMENT_FLOORS: dict[Segment, float] = {"low": 0.0, "medium": 0.3, "high": 0.6}
"""A debtor is in the highest segment whose floor its probability of paying late reaches."""
TOP_REASONS = 3


def segment_of(p_late: float) -> Segment:
    chosen: Segment = "low"
    for name in SEGMENTS:
        if p_late >= SEGMENT_FLOORS[name]:
            chosen = name
    return chosen


@dataclass(frozen=True)
class Prediction:
    p_late: float
    days_to_settle: float


class Scorer(Protocol):
    kind: str
    reference: Features
    """Typical values of the features: what a feature is set to when its influence is measured."""

    def predict(self, rows: Sequence[Features]) -> list[Prediction]: ...


def features_read(scorer: Scorer) -> tuple[int, ...]:
    """The columns of `FEATURE_NAMES` a scorer's probability of paying late depends on (all, unless
    it says): a feature it does not read cannot be a reason."""
    read: tuple[int, ...] | None = getattr(scorer, "features_read", None)
    return tuple(range(len(FEATURE_NAMES))) if read is None else read


def _matrix(rows: Sequence[Features]) -> np.ndarray:
    return np.array([r.row() for r in rows], dtype=float).reshape(len(rows), len(FEATURE_NAMES))


def _reference(rows: Sequence[Features]) -> Features:
    values: dict[str, float | None] = {}
    for name in FEATURE_NAMES:
        known = [v for r in rows if (v := getattr(r, name)) is not None]
        values[name] = float(median(known)) if known else None
    defaults = {"invoice_count": 0.0, "settled_count": 0.0, "open_count": 0.0, "overdue_count": 0.0}
    defaults |= {"overdue_amount": 0.0, "log_amount": 0.0, "terms_days": 30.0}
    chosen: dict[str, Any] = {
        n: values[n] if values[n] is not None else defaults.get(n) for n in FEATURE_NAMES
    }
    return Features(**chosen)


@dataclass
class TrainedModel:
    classifier: CalibratedClassifierCV
    regressor: HistGradientBoostingRegressor
    reference: Features
    columns: tuple[int, ...]
    """The features the model uses: those known for at least some training examples."""
    kind: str = "gradient-boosting"

    @property
    def features_read(self) -> tuple[int, ...]:
        return self.columns

    def predict(self, rows: Sequence[Features]) -> list[Prediction]:
        if not rows:
            return []
        x = _matrix(rows)[:, list(self.columns)]
        with threadpool_limits(limits=1):
            p = self.classifier.predict_proba(x)[:, 1]
            days = self.regressor.predict(x)
        return [Prediction(float(pi), max(0.0, float(di))) for pi, di in zip(p, days, strict=True)]

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict` of a matrix of feature rows (NaN: unknown): probabilities and days, row by row
        the same numbers."""
        if not len(x):
            return np.zeros(0), np.zeros(0)
        with threadpool_limits(limits=1):
            p = self.classifier.predict_proba(x[:, list(self.columns)])[:, 1]
            days = self.regressor.predict(x[:, list(self.columns)])
        return p.astype(float), np.where(days > 0.0, days, 0.0)


@dataclass
class Scorecard:
    """Points anyone can check: the debtor's own late share, smoothed towards the base rate by
    `PRIOR_WEIGHT` invoices, plus fixed points for overdue debt, a long silence and disputes."""

    base_rate: float
    base_days: float
    reference: Features
    kind: str = "scorecard"
    PRIOR_WEIGHT = 3.0
    READS = ("settled_count", "late_share", "overdue_amount", "days_since_last_payment", "dispute_share")
    features_read: ClassVar[tuple[int, ...]] = tuple(FEATURE_NAMES.index(name) for name in READS)
    """What `predict_one`'s probability reads (`mean_days_late` and `terms_days` move only the days)."""

    def predict_one(self, f: Features) -> Prediction:
        settled = f.settled_count
        late = (f.late_share or 0.0) * settled
        p = (late + self.PRIOR_WEIGHT * self.base_rate) / (settled + self.PRIOR_WEIGHT)
        p += 0.10 if f.overdue_amount > 0 else 0.0
        p += 0.10 if (f.days_since_last_payment or 0.0) > 60 else 0.0
        p += 0.05 if (f.dispute_share or 0.0) > 0.2 else 0.0
        late_days = ((f.mean_days_late or 0.0) * settled + self.PRIOR_WEIGHT * self.base_days) / (
            settled + self.PRIOR_WEIGHT
        )
        return Prediction(min(0.99, max(0.01, p)), f.terms_days + late_days)

    def predict(self, rows: Sequence[Features]) -> list[Prediction]:
        return [self.predict_one(r) for r in rows]

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict_one` of every row of a feature matrix (NaN: unknown) at once, the same
        operations in the same order, so the same numbers."""
        column = {name: x[:, j] for j, name in enumerate(FEATURE_NAMES)}

        def known(name: str) -> np.ndarray:  # `value or 0.0`
            v = column[name]
            return np.where(np.isnan(v), 0.0, v)

        settled = column["settled_count"]
        late = known("late_share") * settled
        p = (late + self.PRIOR_WEIGHT * self.base_rate) / (settled + self.PRIOR_WEIGHT)
        p = p + np.where(column["overdue_amount"] > 0, 0.10, 0.0)
        p = p + np.where(known("days_since_last_payment") > 60, 0.10, 0.0)
        p = p + np.where(known("dispute_share") > 0.2, 0.05, 0.0)
        late_days = (known("mean_days_late") * settled + self.PRIOR_WEIGHT * self.base_days) / (
            settled + self.PRIOR_WEIGHT
        )
        return np.minimum(0.99, np.maximum(0.01, p)), column["terms_days"] + late_days


def train(examples: Sequence[Example], *, min_examples: int = MIN_EXAMPLES) -> Scorer:
    """A model from examples (features as of issue date, outcome), or the scorecard if too few."""
    rows = [e.features for e in examples]
    labels = np.array([e.late for e in examples], dtype=int)
    reference = _reference(rows)
    if len(examples) < min_examples or len(set(labels.tolist())) < 2:
        base_rate = float(labels.mean()) if len(labels) else 0.3
        late_days = [max(0.0, e.days_to_settle - e.features.terms_days) for e in examples]
        return Scorecard(base_rate, fmean(late_days) if late_days else 5.0, reference)
    full = _matrix(rows)
    columns = tuple(int(i) for i in np.flatnonzero(~np.isnan(full).all(axis=0)))
    x = full[:, list(columns)]
    booster = HistGradientBoostingClassifier(
        max_depth=3,
        learning_rate=0.05,
        max_iter=150,
        min_samples_leaf=30,
        l2_regularization=1.0,
        random_state=RANDOM_STATE,
    )
    classifier = CalibratedClassifierCV(booster, method="sigmoid", cv=5)
    with threadpool_limits(limits=1):
        classifier.fit(x, labels)
    regressor = HistGradientBoostingRegressor(
        loss="absolute_error",
        max_depth=3,
        learning_rate=0.05,
        max_iter=150,
        min_samples_leaf=30,
        l2_regularization=1.0,
        random_state=RANDOM_STATE,
    )
    with threadpool_limits(limits=1):
        regressor.fit(x, np.array([e.days_to_settle for e in examples], dtype=float))
    return TrainedModel(classifier, regressor, reference, columns)


# --- reasons -----------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{round(100 * x)} %"


def _money(major: float, currency: str) -> str:
    minor = round(major * minor_per_major(currency))
    return f"{currency} {format_major(minor, currency)}"


def _phrase(name: str, f: Features, currency: str) -> str | None:
    """The feature's value in words, or None if there is nothing to say."""
    return phrase(name, getattr(f, name), currency)


_UNKNOWN = {"late_share": "no paid invoice yet", "days_since_last_payment": "no payment yet"}
_PHRASES: dict[str, Callable[[float, str], str]] = {
    "invoice_count": lambda x, _: f"{int(x)} invoices of history",
    "settled_count": lambda x, _: f"{int(x)} invoices paid so far",
    "late_share": lambda x, _: f"pays {_pct(x)} of invoices late",
    "mean_days_late": lambda x, _: f"pays {x:.0f} days late on average",
    "days_late_trend": lambda x, _: (
        f"recently pays {x:.0f} days later than usual"
        if x >= 0
        else f"recently pays {-x:.0f} days earlier than usual"
    ),
    "mean_days_to_settle": lambda x, _: f"takes {x:.0f} days to pay on average",
    "days_since_last_payment": lambda x, _: f"{x:.0f} days since last payment",
    "open_count": lambda x, _: f"{int(x)} open invoices",
    "overdue_count": lambda x, _: f"{int(x)} overdue invoices",
    "overdue_amount": lambda x, c: f"{_money(x, c)} overdue" if x > 0 else "nothing overdue",
    "overdue_share_of_limit": lambda x, _: f"overdue is {_pct(x)} of the credit limit",
    "dispute_share": lambda x, _: f"disputed {_pct(x)} of invoices",
    "paperless": lambda x, _: "billed electronically" if x else "billed on paper",
    "amount_ratio": lambda x, _: f"invoice is {x:.1f} times the usual amount",
    "log_amount": lambda x, c: f"invoice of {_money(math.expm1(x), c)}",
    "terms_days": lambda x, _: f"{x:.0f} days payment terms",
}


def phrase(name: str, v: float | None, currency: str) -> str | None:
    """A feature's value in words, or None if there is nothing to say."""
    if v is None:
        return _UNKNOWN.get(name)
    # + 0.0 makes -0.0 zero: they are one key of the cache, so they must be one phrase ("0", not "-0").
    v = float(v) + 0.0
    return _PHRASES[name](v, currency) if name in _AMOUNTS else _phrased(name, v, currency)


_AMOUNTS = frozenset({"overdue_amount", "log_amount"})
"""Features whose values seldom repeat: not remembered."""


@lru_cache(maxsize=1 << 14)
def _phrased(name: str, v: float, currency: str) -> str:
    # A business day says the same few thousand things of a million debtors (counts, days, shares).
    return _PHRASES[name](v, currency)


def reasons(scorer: Scorer, rows: Sequence[Features], currencies: Sequence[str]) -> list[list[str]]:
    """For each row, up to `TOP_REASONS` phrases for the features that raised its probability of
    paying late most (or, where none raised it, lowered it most)."""
    if not rows:
        return []
    values_of = attrgetter(*FEATURE_NAMES)
    make = cast(Callable[..., Features], Features)
    reference = values_of(scorer.reference)
    # Only a feature away from its typical value can move the score: the others are not probed.
    moved = []
    probes = []
    for r in rows:
        values = values_of(r)
        changed = [j for j, v in enumerate(values) if v != reference[j]]
        moved.append(changed)
        probes += [make(*values[:j], reference[j], *values[j + 1 :]) for j in changed]
    base = scorer.predict(rows)
    probed = iter(scorer.predict(probes))
    out = []
    for i, row in enumerate(rows):
        deltas = [(base[i].p_late - next(probed).p_late, FEATURE_NAMES[j]) for j in moved[i]]
        raising = sorted((d, n) for d, n in deltas if d > 0.005)[::-1]
        chosen = raising or sorted((d, n) for d, n in deltas if d < -0.005)
        phrases = [p for _, n in chosen if (p := _phrase(n, row, currencies[i]))]
        out.append(phrases[:TOP_REASONS])
    return out


# --- debtors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceScore:
    invoice_id: str
    outstanding_minor: int
    due_date: dt.date
    p_late: float
    expected_settle_date: dt.date


@dataclass(frozen=True)
class DebtorScore:
    tenant_id: str
    debtor_id: str
    currency: str
    as_of: dt.date
    score: int
    """0..100: the probability, in per cent, that the debtor's next invoice is paid late."""
    p_late: float
    segment: Segment
    expected_days_to_settle: float
    reasons: tuple[str, ...]
    open_minor: int
    overdue_minor: int
    oldest_days_past_due: int
    invoices: tuple[InvoiceScore, ...]
    model_kind: str
    usual_monthly_billing_minor: int | None = None
    recommended_limit_minor: int | None = None
    """`credit.recommend`: None without an invoice in the last year."""


def _open_at(history: DebtorHistory, as_of: dt.date) -> list[InvoiceFact]:
    return [
        inv
        for inv in history.invoices
        if inv.issue_date <= as_of
        and not (inv.settled_date and inv.settled_date <= as_of)
        and not (inv.written_off_date and inv.written_off_date <= as_of)
    ]


def score_debtors(scorer: Scorer, histories: Sequence[DebtorHistory], as_of: dt.date) -> list[DebtorScore]:
    """Score each debtor as of `as_of`: a typical next invoice gives the debtor's risk, and each open
    invoice its own probability of paying late (1 once it is past due and unpaid) and settle date.
    Every prediction of the call is made in one batch."""
    typical = [features_at(h, as_of) for h in histories]
    open_invoices = [_open_at(h, as_of) for h in histories]
    own_rows = [
        features_at(h, as_of, inv) for h, invs in zip(histories, open_invoices, strict=True) for inv in invs
    ]
    predictions = scorer.predict(typical + own_rows)
    own = iter(predictions[len(typical) :])
    words = reasons(scorer, typical, [h.currency for h in histories])
    out = []
    for history, prediction, why, invs in zip(
        histories, predictions[: len(typical)], words, open_invoices, strict=True
    ):
        invoices = []
        for inv in invs:
            p = next(own)
            overdue = inv.due_date < as_of
            settle = inv.issue_date + dt.timedelta(days=round(p.days_to_settle))
            invoices.append(
                InvoiceScore(
                    invoice_id=inv.invoice_id,
                    outstanding_minor=inv.outstanding(),
                    due_date=inv.due_date,
                    p_late=1.0 if overdue else round(p.p_late, 4),
                    expected_settle_date=max(settle, as_of + dt.timedelta(days=1)) if overdue else settle,
                )
            )
        overdue_days = [(as_of - inv.due_date).days for inv in invs if inv.due_date < as_of]
        p_late = round(prediction.p_late, 4)
        limit = recommend(history, as_of, p_late)
        out.append(
            DebtorScore(
                tenant_id=history.tenant_id,
                debtor_id=history.debtor_id,
                currency=history.currency,
                as_of=as_of,
                score=round(100 * p_late),
                p_late=p_late,
                segment=segment_of(p_late),
                expected_days_to_settle=round(prediction.days_to_settle, 1),
                reasons=tuple(why),
                open_minor=sum(i.outstanding_minor for i in invoices),
                overdue_minor=sum(i.outstanding_minor for i in invoices if i.due_date < as_of),
                oldest_days_past_due=max(overdue_days, default=0),
                invoices=tuple(invoices),
                model_kind=scorer.kind,
                usual_monthly_billing_minor=limit.usual_monthly_billing_minor if limit else None,
                recommended_limit_minor=limit.recommended_minor if limit else None,
            )
        )
    return out


def default_scorecard() -> Scorecard:
    """The scorecard used before any model is trained: a base rate of 30 % late, 5 days late."""
    return Scorecard(base_rate=0.3, base_days=5.0, reference=_reference([]))
