"""Scoring a chunk at once (`batch.score_chunk`) gives exactly the scores of scoring debtor by debtor
(`model.score_debtors`): segment, score, probabilities, reasons, invoices, credit limit and so the
write-off proposal, for the scorecard and for a trained model, on random portfolios."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import pickle
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from contracts.registry import encode_event
from services.scoring.batch import NEVER, chunk_features, columns_of, score_chunk, scored_columns
from services.scoring.features import DebtorHistory, Features, InvoiceFact, examples_known_before, features_at
from services.scoring.model import (
    SEGMENTS,
    DebtorScore,
    Prediction,
    Scorecard,
    Scorer,
    TrainedModel,
    default_scorecard,
    score_debtors,
    train,
)
from services.scoring.projection import (
    _SCORE_TYPES,
    ChunkInput,
    ChunkOutcome,
    LastPublished,
    _decide_in_worker,
    _outcome,
    decide_chunk,
    histories_of,
    invoice_columns,
    score_envelope,
    score_event,
)
from services.scoring.worklist import ActionCosts
from services.scoring.writeoff import WriteOffRule, propose, propose_each

AS_OF = dt.date(2025, 6, 2)
CURRENCIES = ("EUR", "USD", "JPY", "KWD", "RUB")


def random_history(rng: random.Random, n: int) -> DebtorHistory:
    """A debtor with any mix of open, paid (early, late, after the date), written-off and disputed
    invoices, repeated amounts and dates, and invoices issued after the date."""
    invoices = []
    for k in range(rng.choice((0, 1, 1, 2, 3, 4, 5, 6, 8, 12))):
        issued = AS_OF - dt.timedelta(days=rng.randint(-20, 500))
        due = issued + dt.timedelta(days=rng.choice((0, 7, 14, 30, 30, 45, 60, 90)))
        amount = rng.choice((0, 100, 5_000, 5_000, 12_345, 180_000)) or rng.randint(1, 10**8)
        settled = written_off = disputed = None
        kind = rng.random()
        if kind < 0.5:
            settled = due + dt.timedelta(days=rng.randint(-30, 120))
        elif kind < 0.6:
            written_off = due + dt.timedelta(days=rng.randint(0, 400))
            if rng.random() < 0.3:
                settled = written_off + dt.timedelta(days=rng.choice((-5, 0, 5)))
        if rng.random() < 0.15:
            disputed = issued + dt.timedelta(days=rng.randint(0, 200))
        outstanding = rng.choice((None, None, 0, amount // 2, amount))
        invoices.append(
            InvoiceFact(
                f"inv-{rng.randint(0, 99)}-{k}",
                issued,
                due,
                amount,
                settled,
                disputed,
                written_off,
                outstanding,
            )
        )
    rng.shuffle(invoices)
    return DebtorHistory(
        "t1",
        f"d{n}",
        rng.choice(CURRENCIES),
        tuple(invoices),
        paperless=rng.choice((None, True, False)),
        credit_limit_minor=rng.choice((None, None, 0, 50_000, 1_000_000)),
    )


def portfolio(seed: int, size: int) -> list[DebtorHistory]:
    rng = random.Random(seed)
    return [random_history(rng, n) for n in range(size)]


def assert_same_features(histories: Sequence[DebtorHistory], as_of: dt.date) -> None:
    features = chunk_features(histories, as_of)
    assert features is not None
    typical = np.array([features_at(h, as_of).row() for h in histories]).reshape(
        -1, features.typical.shape[1]
    )
    own = [
        features_at(h, as_of, inv).row()
        for h in histories
        for inv in h.invoices
        if inv.issue_date <= as_of
        and not (inv.settled_date and inv.settled_date <= as_of)
        and not (inv.written_off_date and inv.written_off_date <= as_of)
    ]
    np.testing.assert_array_equal(features.typical, typical)  # NaN where unknown, on both sides
    np.testing.assert_array_equal(features.own, np.array(own).reshape(-1, features.typical.shape[1]))


def assert_same(scorer: Scorer, histories: Sequence[DebtorHistory], as_of: dt.date) -> None:
    one_by_one = score_debtors(scorer, histories, as_of)
    at_once = score_chunk(scorer, histories, as_of)
    assert at_once == one_by_one
    assert [propose(s) for s in at_once] == [propose(s) for s in one_by_one]


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    histories = portfolio(7, 400)
    scorer = train(examples_known_before(histories, AS_OF))
    assert isinstance(scorer, TrainedModel)
    return scorer


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_scorecard_scores_a_chunk_as_it_scores_each_debtor(seed: int) -> None:
    histories = portfolio(seed, 1_500)
    for as_of in (AS_OF, AS_OF - dt.timedelta(days=90), AS_OF + dt.timedelta(days=400)):
        assert_same_features(histories, as_of)
        assert_same(default_scorecard(), histories, as_of)


def test_a_scorecard_with_known_typical_values_gives_the_same_reasons() -> None:
    histories = portfolio(11, 800)
    fitted = train(examples_known_before(histories[:20], AS_OF))
    assert isinstance(fitted, Scorecard)
    assert_same(fitted, histories, AS_OF)
    assert_same(Scorecard(0.55, 12.0, features_at(histories[3], AS_OF)), histories, AS_OF)


def test_a_trained_model_scores_a_chunk_as_it_scores_each_debtor(trained: TrainedModel) -> None:
    histories = portfolio(5, 600)
    assert_same(trained, histories, AS_OF)
    assert_same(trained, histories, AS_OF - dt.timedelta(days=60))


class RowByRow:
    """A scorer with only `predict`: the chunk asks it row by row."""

    kind = "row-by-row"

    def __init__(self) -> None:
        self.reference = default_scorecard().reference

    def predict(self, rows: Sequence[Features]) -> list[Prediction]:
        return default_scorecard().predict(rows)


def test_a_scorer_without_a_matrix_method_gives_the_same_scores() -> None:
    assert_same(RowByRow(), portfolio(13, 300), AS_OF)


def test_an_empty_chunk_and_an_invoice_id_twice_are_scored_as_one_by_one() -> None:
    assert score_chunk(default_scorecard(), [], AS_OF) == []
    twice = portfolio(17, 1)[0]
    inv = InvoiceFact("same", AS_OF - dt.timedelta(days=40), AS_OF - dt.timedelta(days=10), 1_000)
    assert_same(default_scorecard(), [DebtorHistory("t1", "d", "EUR", (inv, inv)), twice], AS_OF)


@settings(max_examples=60, deadline=None)
@for_all(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 40), days=st.integers(-400, 400))
def test_any_small_portfolio_on_any_day(seed: int, size: int, days: int) -> None:
    assert_same_features(portfolio(seed, size), AS_OF + dt.timedelta(days=days))
    assert_same(default_scorecard(), portfolio(seed, size), AS_OF + dt.timedelta(days=days))


def day_chunk(seed: int = 19, size: int = 400, as_of: dt.date = AS_OF) -> tuple[ChunkInput, ChunkOutcome]:
    """A chunk of a business day (its rows in any order), and what the per-debtor path stores and
    publishes for it."""
    histories = portfolio(seed, size)
    tenant = "t1"
    rows = [
        {
            "debtor_id": h.debtor_id,
            "invoice_id": inv.invoice_id,
            "currency": currency,
            "issue_date": inv.issue_date,
            "due_date": inv.due_date,
            "amount_minor": inv.amount_minor,
            "outstanding_minor": inv.outstanding(),
            "status": "open",
            "settled_date": inv.settled_date,
            "written_off_date": inv.written_off_date,
            "disputed_date": inv.disputed_date,
        }
        for n, h in enumerate(histories)
        for k, inv in enumerate(h.invoices)
        # a debtor in two currencies now and then
        for currency in [CURRENCIES[(n + k) % 2] if n % 7 == 0 else h.currency]
    ]
    random.Random(seed).shuffle(rows)
    debtors = sorted({h.debtor_id for h in histories})
    paperless = {h.debtor_id: h.paperless for h in histories}
    published = {
        (tenant, d, c): LastPublished(score, segment, write_off)
        for i, d in enumerate(debtors[::3])
        for c, score, segment, write_off in [("EUR", 10 * (i % 10), SEGMENTS[i % 3], i % 2 == 0)]
    }
    chunk = ChunkInput(1, WriteOffRule(), tenant, as_of, debtors, paperless, invoice_columns(rows), published)
    by_debtor = {d: [r for r in rows if r["debtor_id"] == d] for d in debtors}
    expected_scores = score_debtors(
        default_scorecard(),
        [h for d in debtors for h in histories_of(tenant, d, by_debtor[d], paperless[d])],
        as_of,
    )
    expected_rows, expected_messages = _outcome(expected_scores, 1, published, {}, WriteOffRule())
    return chunk, ([[r[c] for r in expected_rows] for c in _SCORE_TYPES], expected_messages)


def test_a_business_day_chunk_decides_as_the_per_debtor_path() -> None:
    """`projection.decide_chunk` (rows as tuples in any order, made into columns, the chunk at
    once, also through a worker's entry point) stores and publishes what `histories_of`,
    `score_debtors` and `_outcome` give."""
    chunk, expected = day_chunk()
    assert len(expected[1]) < len(expected[0][0])  # some were published before and did not move
    assert decide_chunk(default_scorecard(), chunk) == expected
    blob = pickle.dumps(default_scorecard())
    assert _decide_in_worker("k", blob, pickle.loads(pickle.dumps(chunk))) == expected


@settings(max_examples=40, deadline=None)
@for_all(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 30), days=st.integers(-400, 400))
def test_any_small_day_chunk_decides_as_the_per_debtor_path(seed: int, size: int, days: int) -> None:
    chunk, expected = day_chunk(seed, size, AS_OF + dt.timedelta(days=days))
    assert decide_chunk(default_scorecard(), chunk) == expected


def test_a_chunk_with_an_invoice_id_twice_in_a_history_decides_as_the_per_debtor_path() -> None:
    chunk, _ = day_chunk(29, 40)
    columns = {c: [*values, values[0]] for c, values in chunk.invoices.items()}  # the first row again
    twice = replace(chunk, invoices=columns)
    rows = [{c: columns[c][k] for c in columns} for k in range(len(columns["debtor_id"]))]
    for row in rows:
        for c, value in row.items():
            if c.endswith("_date"):
                row[c] = None if value == NEVER else dt.date.fromordinal(value)
    scores = score_debtors(
        default_scorecard(),
        [
            h
            for d in chunk.debtors
            for h in histories_of("t1", d, [r for r in rows if r["debtor_id"] == d], chunk.paperless[d])
        ],
        AS_OF,
    )
    expected_rows, expected_messages = _outcome(scores, 1, chunk.published, {}, WriteOffRule())
    assert decide_chunk(default_scorecard(), twice) == (
        [[r[c] for r in expected_rows] for c in _SCORE_TYPES],
        expected_messages,
    )


def test_a_worker_process_decides_a_chunk_as_the_consumer_would() -> None:
    chunk, expected = day_chunk()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        blob = pickle.dumps(default_scorecard())
        assert pool.submit(_decide_in_worker, "k", blob, chunk).result() == expected


def every_score_event(scores: Sequence[DebtorScore]) -> list[tuple[Any, ...]]:
    """Each score with each kind of what an event may say: a previous segment or none, a cause or
    none, a model version or the scorecard, a write-off proposal made, not made, or none."""
    out = []
    for n, s in enumerate(scores):
        proposal = propose(s, WriteOffRule(max_days_past_due=30 + n % 300))
        for previous, cause, version in [(None, None, None), (SEGMENTS[n % 3], f"e-{n}", n % 5 + 1)]:
            out.append((s, version, previous, cause, proposal))
        out.append((s, 2, "low", None, None))
    return out


def test_score_events_are_formatted_as_the_contracts_encode_them() -> None:
    """`score_event` writes the bytes `encode_event` gives for the contracts envelope, for the
    scores of a portfolio (reasons, credit limits, write-off proposals and their reasons)."""
    scores = score_chunk(default_scorecard(), portfolio(23, 600), AS_OF)
    cases = every_score_event(scores)
    assert any(c[4] is not None and c[4].proposed for c in cases)
    assert any(c[0].recommended_limit_minor is None for c in cases)
    for case in cases:
        message = score_event(*case)
        envelope = score_envelope(*case)
        assert message.value == encode_event(envelope)
        assert message.key == envelope.key.encode() and message.topic == "collections.scores.v1"


@settings(max_examples=40, deadline=None)
@for_all(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 20), days=st.integers(-400, 400))
def test_any_score_event_is_formatted_as_the_contracts_encode_it(seed: int, size: int, days: int) -> None:
    scores = score_chunk(default_scorecard(), portfolio(seed, size), AS_OF + dt.timedelta(days=days))
    for case in every_score_event(scores):
        assert score_event(*case).value == encode_event(score_envelope(*case))


@settings(max_examples=40, deadline=None)
@for_all(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 30),
    days=st.integers(-400, 400),
    max_days=st.integers(0, 400),
    reminder=st.sampled_from((0, 50, 10**6)),
    agency=st.sampled_from((0, 5_000, 10**9)),
)
def test_write_offs_proposed_for_a_chunk_are_those_of_each_score(
    seed: int, size: int, days: int, max_days: int, reminder: int, agency: int
) -> None:
    """`propose_each` on a chunk scored as columns proposes what `propose` does for each score,
    under any maximum age and any costs of the actions, for the scores it has something to say of."""
    as_of = AS_OF + dt.timedelta(days=days)
    costs = ActionCosts({"reminder": reminder, "call": 500, "claim_letter": 1_500, "agency": agency})
    rule = WriteOffRule(max_days_past_due=max_days, costs=costs)
    histories = portfolio(seed, size)
    scored = scored_columns(default_scorecard(), columns_of(histories), as_of)
    assert scored is not None
    assert propose_each(scored, rule) == [
        p if p is not None and (p.reasons or p.invoices) else None
        for s in score_debtors(default_scorecard(), histories, as_of)
        for p in [propose(s, rule)]
    ]


def test_amounts_too_large_to_add_up_in_64_bits_are_added_exactly() -> None:
    """Open and overdue amounts and the usual monthly billing whose sums pass 2**63 are what the
    per-debtor path adds up (the features made of them are floats either way)."""
    big = 2**62
    invoices = tuple(
        InvoiceFact(
            f"inv-{k}", AS_OF - dt.timedelta(days=90 + k), AS_OF - dt.timedelta(days=60 + k), big, None
        )
        for k in range(3)
    )
    history = DebtorHistory("t1", "d1", "EUR", invoices)
    scored = scored_columns(default_scorecard(), columns_of([history]), AS_OF)
    assert scored is not None
    at_once, one_by_one = scored.debtor(0), score_debtors(default_scorecard(), [history], AS_OF)[0]
    assert at_once.open_minor == at_once.overdue_minor == one_by_one.open_minor == 3 * big
    assert at_once.overdue_minor == one_by_one.overdue_minor and at_once.invoices == one_by_one.invoices
    assert at_once.usual_monthly_billing_minor == one_by_one.usual_monthly_billing_minor
