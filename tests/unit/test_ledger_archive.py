"""A debtor state is stored as a working part and an archive (`store.encode_stored`): what a user sees
(the state decoded from its row) is the state as evolved, whatever the batches were, and a batch
rewrites the working part only."""

from __future__ import annotations

import random

import orjson

from bench.portfolio import generate, spec_for
from contracts.registry import decode_event
from contracts.topics import CLOCK
from services.ledger import store
from services.ledger.domain import DebtorLedger, evolve, initial_state
from services.ledger.layered import Layered

from . import given, invoice, payment, reversed_

Row = tuple[bytes, bytes | None]


def saved(row: Row | None, state: DebtorLedger) -> Row:
    """The row after `save_ledgers` wrote the state over `row` (its archive kept unless rewritten)."""
    working, archive = store.encode_stored(state)
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
                held[key] = store.decode_ledger(*rows[key])
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
        assert store.decode_ledger(working, archive) == evolved[key]

    whole = sum(len(store.encode_ledger(state)) for state in evolved.values())
    written = sum(len(working) for working, _ in rows.values())
    assert written < 0.6 * whole, (written, whole)  # most of the settled history is in the archives


def test_closed_items_go_to_the_archive_and_what_changes_since_to_the_working_part() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
        invoice("I6", 100, issued="2024-01-07"),
    )
    working, archive = store.encode_stored(state)
    assert archive is not None  # twelve settled items archived; the open invoice stays in the working part
    assert set(store.decode_ledger(working).invoices) == {"I6"}
    assert store.decode_ledger(working, archive) == state
    row = (working, archive)

    reopened = evolve(store.decode_ledger(*row), reversed_("P2", on="2024-03-05")).state
    assert reopened.invoices["I2"].status == "open"
    working, unchanged = store.encode_stored(reopened)
    assert unchanged is None  # the archive stays; the reopened invoice and its payment are written
    assert set(store.decode_ledger(working).invoices) == {"I2", "I6"}
    assert set(store.decode_ledger(working).sources) == {"P2"}
    assert store.decode_ledger(working, archive) == reopened

    later, added = reopened, 0
    while unchanged is None:
        gathered = store.decode_ledger(working)
        later = evolve(later, invoice(f"J{added}", 70, issued=f"2024-03-{added + 6:02d}")).state
        later = evolve(later, payment(f"Q{added}", 70, on=f"2024-03-{added + 6:02d}")).state
        added += 1
        working, unchanged = store.encode_stored(later)
        assert store.decode_ledger(working, unchanged or archive) == later
    # written again once the working part had gathered ARCHIVE_EVERY closed items, and from then on
    # it holds the open items only
    closed = [i for i in gathered.invoices.values() if i.status != "open"] + list(gathered.sources.values())
    assert len(closed) + 2 >= store.ARCHIVE_EVERY
    open_now = {k for k, i in later.invoices.items() if i.status == "open"}
    assert open_now and set(store.decode_ledger(working).invoices) == open_now
    assert all(s.unapplied for s in store.decode_ledger(working).sources.values())


def test_a_state_read_back_decodes_its_archive_only_when_an_event_names_an_archived_item() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(8)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(8)),
    )
    row = store.encode_stored(state)
    assert row[1] is not None
    read = store.decode_ledger(*row)
    assert isinstance(read.invoices, Layered)
    archive = read.invoices.archive
    assert not archive.is_decoded

    paid = evolve(
        evolve(read, invoice("I9", 50, issued="2024-03-01")).state, payment("P9", 80, on="2024-03-02")
    )
    assert not archive.is_decoded  # a new invoice, a new payment applied to it: open items only
    assert paid.state.sources["P9"].unapplied == 30
    assert (
        paid.state
        == evolve(
            evolve(state, invoice("I9", 50, issued="2024-03-01")).state, payment("P9", 80, on="2024-03-02")
        ).state
    )
    assert archive.is_decoded  # comparing with the state never stored read every item

    read = store.decode_ledger(*row)
    assert isinstance(read.invoices, Layered) and not read.invoices.archive.is_decoded
    reversal = evolve(read, reversed_("P3", on="2024-03-05"))
    assert read.invoices.archive.is_decoded  # the reversal reopens an archived invoice
    assert reversal.state.invoices["I3"].status == "open"
    assert reversal == evolve(state, reversed_("P3", on="2024-03-05"))


def test_a_state_with_nothing_to_archive_is_stored_as_before() -> None:
    state = given(invoice("I1", 100), payment("P1", 40))
    assert store.encode_stored(state) == (store.encode_ledger(state), None)
    assert store.decode_ledger(store.encode_ledger(state)) == state


def test_a_row_whose_archive_holds_every_item_reads_back_whole_and_is_rewritten_by_its_next_batch() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(8)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(7)),
    )
    # as rows were written before the archive held closed items only: every item in the archive,
    # the working part without the ids of what the archive holds
    whole = store.LedgerArchive(invoices=state.invoices, sources=state.sources, timelines=state.timelines)
    working = orjson.loads(store.encode_ledger(state)) | {"invoices": {}, "sources": {}, "timelines": {}}
    row = (orjson.dumps(working), orjson.dumps(whole))
    read = store.decode_ledger(*row)
    assert read == state and read.invoices["I7"].status == "open"

    later = evolve(read, payment("P9", 30, on="2024-03-01")).state
    working_part, archive = store.encode_stored(later)
    assert archive is not None  # the next batch writes the archive in the new layout
    assert set(store.decode_ledger(working_part).invoices) == {"I7"}
    assert store.decode_ledger(working_part, archive) == later
