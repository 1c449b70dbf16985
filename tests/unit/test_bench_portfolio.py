"""The benchmark's synthetic portfolios: valid ledger events, encoded as the contracts encode them,
in business-date order, reproducible from their seed, and with every behaviour and currency in play."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace

import orjson
import pytest

from bench.portfolio import (
    BEHAVIOURS,
    CLOCK_TOPIC,
    MINOR_DIGITS,
    SIZES,
    Portfolio,
    PortfolioEvent,
    PortfolioSpec,
    check_sample,
    generate,
    spec_for,
)
from contracts.registry import decode_event
from services.ledger.domain import DebtorLedger, evolve, initial_state

SPEC = PortfolioSpec(tenants=3, debtors=150, invoices=2_000, days=90, history_days=90, seed=7)


@pytest.fixture(scope="module")
def portfolio() -> Portfolio:
    return generate(SPEC)


def test_every_event_meets_its_contract_and_is_encoded_as_the_contracts_encode_it(
    portfolio: Portfolio,
) -> None:
    assert check_sample(portfolio.events) == len(portfolio.events)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    assert generate(SPEC).events == generate(SPEC).events
    assert generate(replace(SPEC, seed=8)).events != generate(SPEC).events


def test_events_come_in_business_date_order_with_a_clock_event_per_tenant_and_day(
    portfolio: Portfolio,
) -> None:
    day_of_post = [orjson.loads(e.value)["time"][:10] for e in portfolio.events]
    assert day_of_post == sorted(day_of_post)
    clock = [orjson.loads(e.value) for e in portfolio.events if e.topic == CLOCK_TOPIC]
    assert len(clock) == SPEC.tenants * SPEC.days
    first_of_day: dict[str, PortfolioEvent] = {}
    for index, event in enumerate(portfolio.events):
        first_of_day.setdefault(day_of_post[index], event)
    assert all(e.topic == CLOCK_TOPIC for e in first_of_day.values()), "each day starts with the clock"
    assert clock[-1]["data"]["business_date"] == SPEC.end.isoformat()


def test_every_behaviour_currency_and_event_type_is_in_play(portfolio: Portfolio) -> None:
    assert set(portfolio.behaviours) == {b for b, _ in BEHAVIOURS}
    assert set(portfolio.currencies) == set(MINOR_DIGITS)
    assert {
        "ar.debtor.registered.v1",
        "ar.debtor.updated.v1",
        "ar.invoice.issued.v1",
        "ar.invoice.adjusted.v1",
        "ar.invoice.cancelled.v1",
        "ar.creditnote.issued.v1",
        "ar.payment.received.v1",
        "ar.payment.allocated.v1",
        "ar.payment.reversed.v1",
        "ar.writeoff.posted.v1",
        "ar.businessday.started.v1",
    } <= set(portfolio.counts)
    assert sum(portfolio.counts.values()) == len(portfolio.events)


def test_amounts_are_integer_minor_units_log_normally_spread(portfolio: Portfolio) -> None:
    by_currency: dict[str, list[int]] = {}
    for event in portfolio.events:
        raw = orjson.loads(event.value)
        if raw["type"] == "ar.invoice.issued.v1":
            amount = raw["data"]["amount"]
            assert isinstance(amount["amount_minor"], int) and amount["amount_minor"] > 0
            by_currency.setdefault(amount["currency"], []).append(amount["amount_minor"])
    eur = sorted(by_currency["EUR"])
    median = eur[len(eur) // 2]
    assert 50_000 < median < 1_000_000, "a median EUR invoice of a few thousand euros, in cents"
    assert eur[-1] > 10 * median, "a long tail of large invoices"
    jpy = sorted(by_currency["JPY"])
    assert 50_000 < jpy[len(jpy) // 2] < 2_000_000, "yen have no minor digits"


def test_the_ledger_applies_every_event_without_a_rejection(portfolio: Portfolio) -> None:
    states: dict[tuple[str, str], DebtorLedger] = {}
    rejected = []
    for event in portfolio.events:
        if event.topic == CLOCK_TOPIC:
            continue
        envelope = decode_event(event.value)
        key = (envelope.tenantid, envelope.debtorid or "")
        transition = evolve(states.get(key) or initial_state(*key), envelope.data)
        if transition.rejection:
            rejected.append(transition.rejection)
        states[key] = transition.state
    assert rejected == []
    statuses = Counter(i.status for s in states.values() for i in s.invoices.values())
    assert statuses["open"] and statuses["settled"] and statuses["written_off"] and statuses["cancelled"]
    reversed_payments = [s for st in states.values() for s in st.sources.values() if s.reversed_on]
    assert reversed_payments


def test_the_opening_load_posts_what_was_open_when_the_window_starts(portfolio: Portfolio) -> None:
    first_day = SPEC.start.isoformat()
    issued_before = [
        raw
        for raw in (orjson.loads(e.value) for e in portfolio.events)
        if raw["type"] == "ar.invoice.issued.v1" and raw["data"]["issue_date"] < first_day
    ]
    assert issued_before, "history that is still open"
    assert all(raw["time"].startswith(first_day) for raw in issued_before)


def test_sizes_scale_and_explicit_counts_override_them() -> None:
    assert SIZES["tiny"].debtors < SIZES["small"].debtors < SIZES["medium"].debtors < SIZES["full"].debtors
    spec = spec_for("small", debtors=10, invoices=50, seed=3)
    assert (spec.debtors, spec.invoices, spec.seed) == (10, 50, 3)
    assert spec.end == spec.start + dt.timedelta(days=spec.days - 1)
