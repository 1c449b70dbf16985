"""Leakage-free evaluation on a history of invoices, split at a business date D.

The model is trained on what was known before D: invoices paid before D, each with its features as
of its issue date. It then predicts every invoice issued on or after D from its features as of its
own issue date (which may use payments made after D but before that issue date: they were known
when the prediction would have been made). Two baselines stand beside it: the majority class of the
training set, and each debtor's own past late share and days to settle as of the issue date.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from statistics import fmean
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, mean_absolute_error, roc_auc_score

from services.sample.ibm import CURRENCY, SampleInvoice
from services.scoring.features import DebtorHistory, InvoiceFact, examples_known_before, features_at, is_late
from services.scoring.model import Scorer, train


def dispute_date(inv: SampleInvoice) -> dt.date | None:
    """The sample says only that an invoice was disputed: take the day after it fell due (as the
    sample replay does), or its settlement if that came first."""
    if not inv.disputed:
        return None
    return min(inv.due_date + dt.timedelta(days=1), inv.settled_date)


def histories_of_sample(invoices: Sequence[SampleInvoice], tenant_id: str) -> list[DebtorHistory]:
    by_debtor: dict[str, list[SampleInvoice]] = defaultdict(list)
    for inv in invoices:
        by_debtor[inv.customer_id].append(inv)
    return [
        DebtorHistory(
            tenant_id=tenant_id,
            debtor_id=debtor,
            currency=CURRENCY,
            paperless=rows[0].paperless,
            invoices=tuple(
                InvoiceFact(
                    invoice_id=inv.invoice_number,
                    issue_date=inv.invoice_date,
                    due_date=inv.due_date,
                    amount_minor=inv.amount_minor,
                    settled_date=inv.settled_date,
                    disputed_date=dispute_date(inv),
                )
                for inv in sorted(rows, key=lambda i: (i.invoice_date, i.invoice_number))
            ),
        )
        for debtor, rows in sorted(by_debtor.items())
    ]


def _metrics(late: np.ndarray, p: np.ndarray, days: np.ndarray, predicted_days: np.ndarray) -> dict[str, Any]:
    auc = float(roc_auc_score(late, p)) if len(set(late.tolist())) > 1 else None
    return {
        "accuracy": round(float(accuracy_score(late, p >= 0.5)), 4),
        "roc_auc": None if auc is None else round(auc, 4),
        "brier": round(float(brier_score_loss(late, p)), 4),
        "mae_days_to_settle": round(float(mean_absolute_error(days, predicted_days)), 2),
    }


def evaluate(histories: Sequence[DebtorHistory], split: dt.date) -> tuple[dict[str, Any], Scorer]:
    examples = examples_known_before(list(histories), split)
    scorer = train(examples)
    tests = [
        (h, inv)
        for h in histories
        for inv in h.invoices
        if inv.issue_date >= split and inv.settled_date is not None
    ]
    late = np.array([is_late(inv) for _, inv in tests], dtype=int)
    days = np.array([(inv.settled_date - inv.issue_date).days for _, inv in tests if inv.settled_date])
    rows = [features_at(h, inv.issue_date, inv) for h, inv in tests]
    predictions = scorer.predict(rows)

    train_rate = fmean(e.late for e in examples) if examples else 0.0
    train_days = fmean(e.days_to_settle for e in examples) if examples else 30.0
    own_p = [train_rate if f.late_share is None else f.late_share for f in rows]
    own_days = [train_days if f.mean_days_to_settle is None else f.mean_days_to_settle for f in rows]
    n = len(tests)
    report = {
        "split_date": split.isoformat(),
        "train_invoices": len(examples),
        "train_late_share": round(train_rate, 4),
        "test_invoices": n,
        "test_late_share": round(float(late.mean()), 4) if n else None,
        "model_kind": scorer.kind,
        "model": _metrics(
            late,
            np.array([p.p_late for p in predictions]),
            days,
            np.array([p.days_to_settle for p in predictions]),
        ),
        "baseline_majority": _metrics(late, np.full(n, train_rate), days, np.full(n, train_days)),
        "baseline_debtor_average": _metrics(late, np.array(own_p), days, np.array(own_days)),
    }
    return report, scorer
