"""The payment-behaviour model: honest evaluation on the sample, determinism, the stand-in
scorecard, reasons in words, and a model file that is loaded only when its hash matches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from services.sample import ibm
from services.scoring import artifacts
from services.scoring.evaluation import evaluate, histories_of_sample
from services.scoring.features import (
    FEATURE_NAMES,
    DebtorHistory,
    Features,
    InvoiceFact,
    examples_known_before,
    features_at,
)
from services.scoring.model import (
    Scorecard,
    TrainedModel,
    default_scorecard,
    features_read,
    phrase,
    score_debtors,
    segment_of,
    train,
)

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibm-accounts-receivable-2012-2013H1.csv"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_file(), reason="the shared sample data is not beside the repository"
)
SPLIT = dt.date(2013, 1, 1)


@pytest.fixture(scope="module")
def histories() -> list[DebtorHistory]:
    return histories_of_sample(ibm.load(SAMPLE), "sample")


@needs_sample
def test_evaluation_beats_the_majority_class_without_looking_ahead(histories: list[DebtorHistory]) -> None:
    report, scorer = evaluate(histories, SPLIT)
    assert isinstance(scorer, TrainedModel)
    model, majority = report["model"], report["baseline_majority"]
    assert majority["roc_auc"] == 0.5
    assert model["roc_auc"] > 0.75 > majority["roc_auc"]
    assert model["brier"] < majority["brier"]
    assert model["accuracy"] > majority["accuracy"]
    assert model["mae_days_to_settle"] < majority["mae_days_to_settle"]
    # Trained only on invoices paid before the split; judged on every invoice issued from it on.
    issued_after = sum(1 for h in histories for i in h.invoices if i.issue_date >= SPLIT)
    paid_before = sum(1 for h in histories for i in h.invoices if i.settled_date and i.settled_date < SPLIT)
    assert (report["train_invoices"], report["test_invoices"]) == (paid_before, issued_after)


@needs_sample
def test_the_same_history_gives_the_same_scores(histories: list[DebtorHistory]) -> None:
    examples = examples_known_before(histories, SPLIT)
    first = score_debtors(train(examples), histories, dt.date(2013, 3, 1))
    second = score_debtors(train(examples), histories, dt.date(2013, 3, 1))
    assert first == second
    assert {s.segment for s in first} == {"low", "medium", "high"}
    assert all(s.reasons for s in first)


def late_payer(debtor: str, late_days: int, count: int = 8) -> DebtorHistory:
    start = dt.date(2024, 1, 1)
    invoices = []
    for n in range(count):
        issued = start + dt.timedelta(days=15 * n)
        due = issued + dt.timedelta(days=30)
        invoices.append(InvoiceFact(f"{debtor}-{n}", issued, due, 10_000, due + dt.timedelta(days=late_days)))
    return DebtorHistory("t1", debtor, "EUR", tuple(invoices), paperless=False)


def test_with_little_history_a_scorecard_stands_in_and_says_why() -> None:
    histories = [late_payer("prompt", 0), late_payer("slow", 25)]
    scorer = train(examples_known_before(histories, dt.date(2025, 1, 1)))
    assert isinstance(scorer, Scorecard)
    prompt, slow = score_debtors(scorer, histories, dt.date(2025, 1, 1))
    assert slow.p_late > prompt.p_late
    assert (prompt.segment, slow.segment) == ("low", "high")
    assert "pays 100 % of invoices late" in slow.reasons
    assert any("days since last payment" in r for r in slow.reasons)


_value = st.one_of(st.none(), st.floats(0, 1e6))


@for_all(st.lists(_value, min_size=2 * len(FEATURE_NAMES), max_size=2 * len(FEATURE_NAMES)))
def test_what_the_scorecard_does_not_read_never_moves_it(values: list[float | None]) -> None:
    # Business days probe only the features a scorer reads for reasons: one it reads but does not
    # declare would silently never be a reason.
    scorer = default_scorecard()
    known = {"invoice_count", "settled_count", "open_count", "overdue_count", "overdue_amount"}
    known |= {"log_amount", "terms_days"}
    base, other = values[: len(FEATURE_NAMES)], values[len(FEATURE_NAMES) :]
    first: dict[str, Any] = {
        n: (v or 0.0) if n in known else v for n, v in zip(FEATURE_NAMES, base, strict=True)
    }
    for j, name in enumerate(FEATURE_NAMES):
        if j in features_read(scorer):
            continue
        moved = first | {name: (other[j] or 0.0) if name in known else other[j]}
        before, after = scorer.predict([Features(**first), Features(**moved)])
        assert before.p_late == after.p_late, name


def test_the_scorecard_declares_what_it_reads() -> None:
    scorer = default_scorecard()
    quiet = dict.fromkeys(FEATURE_NAMES, 0.0) | {"terms_days": 30.0, "settled_count": 10.0, "late_share": 0.5}
    moves = {
        "settled_count": 0.0,
        "late_share": 1.0,
        "overdue_amount": 100.0,
        "days_since_last_payment": 90.0,
        "dispute_share": 0.5,
    }
    assert {FEATURE_NAMES[j] for j in features_read(scorer)} == set(moves)
    for name, value in moves.items():
        before, after = scorer.predict([Features(**quiet), Features(**(quiet | {name: value}))])
        assert before.p_late != after.p_late, name


def test_a_reason_says_the_same_of_zero_whatever_its_sign_and_whatever_was_said_before() -> None:
    # Phrases are remembered by value; -0.0 equals 0.0, so both must read "0", not "-0".
    assert phrase("days_late_trend", -0.0, "EUR") == "recently pays 0 days later than usual"
    assert phrase("days_late_trend", 0.0, "EUR") == "recently pays 0 days later than usual"
    assert (
        phrase("amount_ratio", -0.0, "EUR")
        == phrase("amount_ratio", 0.0, "EUR")
        == "invoice is 0.0 times the usual amount"
    )
    assert phrase("overdue_amount", 1234.5, "EUR") == "EUR 1234.50 overdue"
    assert phrase("overdue_amount", 1234.6, "JPY") == "JPY 1235 overdue"
    assert phrase("days_since_last_payment", None, "EUR") == "no payment yet"


def test_segments_have_fixed_meanings() -> None:
    assert [segment_of(p) for p in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]


@needs_sample
def test_a_model_file_is_loaded_only_if_its_hash_matches(
    histories: list[DebtorHistory], tmp_path: Path
) -> None:
    scorer = train(examples_known_before(histories, SPLIT))
    manifest = artifacts.save(
        scorer, tmp_path, trained_from=None, trained_until=SPLIT.isoformat(), examples=1, metrics={}
    )
    assert manifest.version == 1 and artifacts.current_version(tmp_path) == 1
    loaded, read = artifacts.load(tmp_path)
    rows = [features_at(h, SPLIT) for h in histories[:10]]
    assert loaded.predict(rows) == scorer.predict(rows)
    assert (
        read == manifest and json.loads((tmp_path / "manifest.json").read_text())["sha256"] == manifest.sha256
    )

    model_file = tmp_path / manifest.file
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    with pytest.raises(artifacts.ModelIntegrityError, match="SHA-256"):
        artifacts.load(tmp_path)
    again = artifacts.save(
        scorer, tmp_path, trained_from=None, trained_until="2013-02-01", examples=1, metrics={}
    )
    assert again.version == 2 and artifacts.load(tmp_path)[1].version == 2
