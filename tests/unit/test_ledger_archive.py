"""A debtor state is stored as a working part and an archive (`state_codec.encode_stored`): what a user sees
(the state decoded from its row) is the state as evolved, whatever the batches were, and a batch
rewrites the working part only."""

from __future__ import annotations

import random

from bench.portfolio import generate, spec_for
from contracts.registry import decode_event
from contracts.topics import CLOCK
from services.ledger import state_codec
from services.ledger.domain import DebtorLedger, evolve, initial_state

from . import given, invoice, payment, reversed_

Row = tuple[bytes, bytes | None]


def saved(row: Row | None, state: DebtorLedger) -> Row:
    """The row after `save_ledgers` wrote the state over `row` (its archive kept unless rewritten)."""
    working, archive = state_codec.encode_stored(state)
    return working, archive if archive is not None else (row[1] if row else None)


def test_states_read_back_as_evolved_over_random_batches_and_cache_misses() -> None:
    portfolio = generate(spec_for("tiny"))
    events = [decode_event(e.value) for e in portfolio.events if e.topic != CLOCK.name]
    rng = random.Random(7)
    rows: dict[tuple[str, str], Row] = {}
    held: dict[tuple[str, str], DebtorLedger] = {}  # the projection's cache
    evolved: dict[tuple[str, str], DebtorLedger] = {}  # the same events, never stored
    start = 0
    while start < len(events):
        batch = events[start : start + rng.randint(1, 60)]
        start += len(batch)
        for key in [k for k in held if rng.random() < 0.3]:
            del held[key]  # evicted or written by another member: read from the row again
        changed: dict[tuple[str, str], DebtorLedger] = {}
        for event in batch:
            key = (event.tenantid, event.debtorid or "")
            if key not in held and key in rows:
                held[key] = state_codec.decode_ledger(*rows[key])
            before = held.get(key) or initial_state(*key)
            transition = evolve(before, event.data, event_id=event.id)
            plain = evolve(evolved.get(key) or initial_state(*key), event.data, event_id=event.id)
            assert transition == plain
            evolved[key] = plain.state
            if transition.rejection is None and transition.state is not before:
                held[key] = changed[key] = transition.state
        for key, state in changed.items():
            rows[key] = saved(rows.get(key), state)
    assert rows.keys() == evolved.keys()
    for key, (working, archive) in rows.items():
        assert state_codec.decode_ledger(working, archive) == evolved[key]

    whole = sum(len(state_codec.encode_ledger(state)) for state in evolved.values())
    written = sum(len(working) for working, _ in rows.values())
    assert written < 0.6 * whole, (written, whole)  # most of the settled history is in the archives


def test_what_changes_after_the_archive_is_written_goes_to_the_working_part() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
    )
    working, archive = state_codec.encode_stored(state)
    assert archive is not None  # twelve items: archived, the working part has none of them
    assert state_codec.decode_ledger(working).invoices == {}
    row = (working, archive)

    reopened = evolve(state_codec.decode_ledger(*row), reversed_("P2", on="2024-03-05")).state
    assert reopened.invoices["I2"].status == "open"
    working, unchanged = state_codec.encode_stored(reopened)
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
        working, unchanged = state_codec.encode_stored(later)
        assert state_codec.decode_ledger(working, unchanged or archive) == later
    # written again once the working part had gathered ARCHIVE_EVERY items, and empty from then on
    assert gathered + 1 >= state_codec.ARCHIVE_EVERY
    assert state_codec.decode_ledger(working).invoices == {}


def test_a_state_with_nothing_to_archive_is_stored_as_before() -> None:
    state = given(invoice("I1", 100), payment("P1", 40))
    assert state_codec.encode_stored(state) == (state_codec.encode_ledger(state), None)
    assert state_codec.decode_ledger(state_codec.encode_ledger(state)) == state
