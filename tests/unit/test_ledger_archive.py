"""A debtor state is stored as a working part and an archive (`state_codec.encode_stored`): what a user sees
(the state decoded from its row) is the state as evolved, whatever the batches were, and a batch
rewrites the working part only."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from unittest.mock import patch

from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from bench.portfolio import generate, spec_for
from contracts.registry import decode_event
from contracts.topics import CLOCK
from services.ledger import state_codec
from services.ledger.domain import DebtorLedger, LedgerEvent, Transition, evolve, initial_state

from . import given, invoice, payment, profile, reversed_
from .test_ledger_properties import histories

Key = tuple[str, str]
Row = tuple[bytes, bytes | None, bytes | None]
"""A row's working part, archive and archive index."""


def saved(row: Row | None, state: DebtorLedger) -> Row:
    """The row after `save_ledgers` wrote the state over `row` (its archive and index kept unless
    rewritten)."""
    stored = state_codec.encode_stored(state)
    if stored.archive is None:
        return stored.working, row[1] if row else None, row[2] if row else None
    return stored


def outcome(transition: Transition) -> tuple[object, ...]:
    """What a transition decided, beside the state it left."""
    t = transition
    return (t.movements, t.changes, t.rejection, t.parked, t.resolved)


@dataclass(frozen=True)
class Entry:
    key: Key
    event: LedgerEvent
    event_id: str


@dataclass
class Replay:
    rows: dict[Key, Row]
    evolved: dict[Key, DebtorLedger]
    partial_batches: int
    """Debtor batches applied to a partial state (the working part alone)."""


@contextmanager
def archiving_every(items: int) -> Iterator[None]:
    with patch.object(state_codec, "ARCHIVE_EVERY", items):
        yield


def replay(entries: Sequence[Entry], rng: random.Random, evict: float = 0.3) -> Replay:
    """The entries in random batches as the projection applies them (states read from their rows
    as `load_ledger_versions` and `load_archives` read them, kept between batches, some evicted),
    each transition checked against the same events applied to whole states never stored."""
    rows: dict[Key, Row] = {}
    held: dict[Key, DebtorLedger] = {}  # the projection's cache
    evolved: dict[Key, DebtorLedger] = {}
    partial_batches = start = 0
    while start < len(entries):
        batch = entries[start : start + rng.randint(1, 60)]
        start += len(batch)
        for key in [k for k in held if rng.random() < evict]:
            del held[key]  # evicted or written by another member: read from the row again
        events: dict[Key, list[LedgerEvent]] = {}
        for entry in batch:
            events.setdefault(entry.key, []).append(entry.event)
        for key, its_events in events.items():
            if key not in held and key in rows:
                working, archive, index = rows[key]
                held[key] = state_codec.decode_working(working, archive is not None, index)
            if key in held and state_codec.needs_archive(held[key], its_events):
                held[key] = state_codec.with_archive(held[key], rows[key][1] or b"")
            elif key in held and "_archive_index" in held[key].__dict__:
                partial_batches += 1
        changed: dict[Key, DebtorLedger] = {}
        for entry in batch:
            key = entry.key
            before = held.get(key) or initial_state(*key)
            transition = evolve(before, entry.event, event_id=entry.event_id)
            plain = evolve(evolved.get(key) or initial_state(*key), entry.event, event_id=entry.event_id)
            assert outcome(transition) == outcome(plain)
            evolved[key] = plain.state
            if transition.rejection is None and transition.state is not before:
                held[key] = changed[key] = transition.state
        for key, state in changed.items():
            rows[key] = saved(rows.get(key), state)
    return Replay(rows, evolved, partial_batches)


def assert_rows_hold(result: Replay) -> None:
    assert result.rows.keys() <= result.evolved.keys()
    for key, (working, archive, _) in result.rows.items():
        assert state_codec.decode_ledger(working, archive) == result.evolved[key]


def test_states_read_back_as_evolved_over_random_batches_and_cache_misses() -> None:
    portfolio = generate(spec_for("tiny"))
    events = [decode_event(e.value) for e in portfolio.events if e.topic != CLOCK.name]
    entries = [Entry((e.tenantid, e.debtorid or ""), e.data, e.id) for e in events]
    result = replay(entries, random.Random(7))
    assert_rows_hold(result)
    assert result.partial_batches > 100, result.partial_batches  # most invoices needed no archive

    whole = sum(len(state_codec.encode_ledger(state)) for state in result.evolved.values())
    written = sum(len(working) for working, _, _ in result.rows.values())
    assert written < 0.6 * whole, (written, whole)  # most of the settled history is in the archives


@settings(max_examples=300, deadline=None)
@for_all(histories(), st.integers(0, 2**32 - 1))
def test_a_partial_state_decides_as_the_whole_one_over_random_histories(
    history: list[LedgerEvent], seed: int
) -> None:
    """Parked events, earmarks, free cash, two currencies and repeats, with archives written every
    two items, so that most batches meet a state with an archive."""
    entries = [Entry(("acme", "debtor-1"), event, f"e{n}") for n, event in enumerate(history)]
    with archiving_every(2):
        result = replay(entries, random.Random(seed), evict=0.5)
    assert_rows_hold(result)


def test_what_changes_after_the_archive_is_written_goes_to_the_working_part() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
    )
    working, archive, _ = state_codec.encode_stored(state)
    assert archive is not None  # twelve items: archived, the working part has none of them
    assert state_codec.decode_ledger(working).invoices == {}
    row = (working, archive)

    reopened = evolve(state_codec.decode_ledger(*row), reversed_("P2", on="2024-03-05")).state
    assert reopened.invoices["I2"].status == "open"
    working, unchanged, _ = state_codec.encode_stored(reopened)
    assert unchanged is None  # the archive stays; the reopened invoice and its payment are written
    assert set(state_codec.decode_ledger(working).invoices) == {"I2"}
    assert set(state_codec.decode_ledger(working).sources) == {"P2"}
    assert state_codec.decode_ledger(working, archive) == reopened

    later, added = reopened, 0
    while unchanged is None:
        before = state_codec.decode_ledger(working)
        gathered = len(before.invoices) + len(before.sources)
        later = evolve(later, invoice(f"I1{added}", 70, issued=f"2024-03-{added + 6:02d}")).state
        added += 1
        working, unchanged, _ = state_codec.encode_stored(later)
        assert state_codec.decode_ledger(working, unchanged or archive) == later
    # written again once the working part had gathered ARCHIVE_EVERY items, and empty from then on
    assert gathered + 1 >= state_codec.ARCHIVE_EVERY
    assert state_codec.decode_ledger(working).invoices == {}


def test_a_state_with_nothing_to_archive_is_stored_as_before() -> None:
    state = given(invoice("I1", 100), payment("P1", 40))
    assert state_codec.encode_stored(state) == (state_codec.encode_ledger(state), None, None)
    assert state_codec.decode_ledger(state_codec.encode_ledger(state)) == state


def partial(state: DebtorLedger) -> DebtorLedger:
    """The state as a batch first reads it from its row: the working part alone."""
    working, archive, index = state_codec.encode_stored(state)
    assert archive is not None
    return state_codec.decode_working(working, True, index)


def settled_history(*more: LedgerEvent) -> DebtorLedger:
    return given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
        *more,
    )


def test_only_new_invoices_and_master_data_go_without_the_archive() -> None:
    archived = settled_history()
    state = partial(archived)
    assert state.invoices == {} and state.sources == {}
    assert not state_codec.needs_archive(state, [invoice("I9", 50), profile("Acme SA")])
    assert state_codec.needs_archive(state, [invoice("I3", 100)])  # known: a repeat, or a conflict
    assert state_codec.needs_archive(state, [invoice("I9", 50), payment("P9", 50)])  # pays open invoices
    assert state_codec.needs_archive(state, [reversed_("P2")])

    with_free_cash = partial(settled_history(payment("P7", 30, on="2024-03-01")))
    assert not with_free_cash.sources  # the payment is archived with the rest
    assert state_codec.needs_archive(with_free_cash, [invoice("I9", 50)])  # the cash would pay it

    whole = state_codec.with_archive(state, state_codec.encode_stored(settled_history()).archive or b"")
    assert whole == archived
    assert not state_codec.needs_archive(whole, [payment("P9", 50)])


def test_a_row_archived_before_its_index_existed_is_read_whole() -> None:
    archived = given(*(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(9)))
    working, archive, _ = state_codec.encode_stored(archived)
    state = state_codec.decode_working(working, archive is not None, None)
    assert state_codec.needs_archive(state, [invoice("I10", 50)])
