"""A debtor state is stored as a working part, its open items (`held`) and its closed items
(`archive`) (`store.encode_stored`): what a user sees (the state decoded from its row) is the state
as evolved, whatever the batches were; a batch rewrites the working part only, and a state read
back decodes its archive only when an event needs an archived item."""

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


def saved(row: store.StoredRow | None, new: store.StoredRow) -> store.StoredRow:
    """The row after `save_ledgers` wrote `new` over `row` (`held` and `archive` kept unless written
    again)."""
    if row is None or new.archive is not None:
        return new
    return store.StoredRow(new.state, row.held, row.archive)


def read(row: store.StoredRow) -> DebtorLedger:
    return store.decode_ledger(row.state, row.archive, row.held)


def test_states_read_back_as_evolved_over_random_batches_and_cache_misses() -> None:
    portfolio = generate(spec_for("tiny"))
    events = [decode_event(e.value) for e in portfolio.events if e.topic != CLOCK.name]
    rng = random.Random(7)
    rows: dict[tuple[str, str], store.StoredRow] = {}
    cached: dict[tuple[str, str], DebtorLedger] = {}  # the projection's cache
    evolved: dict[tuple[str, str], DebtorLedger] = {}  # the same events, never stored
    start = 0
    while start < len(events):
        batch = events[start : start + rng.randint(1, 60)]
        start += len(batch)
        for key in [k for k in cached if rng.random() < 0.3]:
            del cached[key]  # evicted or written by another member: read from the row again
        changed: dict[tuple[str, str], DebtorLedger] = {}
        for event in batch:
            key = (event.tenantid, event.debtorid or "")
            if key not in cached and key in rows:
                cached[key] = read(rows[key])
            before = cached.get(key) or initial_state(*key)
            transition = evolve(before, event.data, event_id=event.id)
            plain = evolve(evolved.get(key) or initial_state(*key), event.data, event_id=event.id)
            assert transition == plain
            evolved[key] = plain.state
            if transition.rejection is None and transition.state is not before:
                cached[key] = changed[key] = transition.state
        for key, state in changed.items():
            rows[key] = saved(rows.get(key), store.encode_stored(state))
    assert rows.keys() == evolved.keys()
    for key, row in rows.items():
        assert read(row) == evolved[key]

    whole = sum(len(store.encode_ledger(state)) for state in evolved.values())
    written = sum(len(row.state) for row in rows.values())
    assert written < 0.6 * whole, (written, whole)  # most items are held or archived


def test_closed_items_are_archived_open_ones_held_and_what_changes_since_goes_to_the_working_part() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(6)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(6)),
        invoice("I6", 100, issued="2024-01-07"),
    )
    row = store.encode_stored(state)
    assert row.archive is not None and row.held is not None
    assert store.decode_ledger(row.state).invoices == {}
    assert set(orjson.loads(row.held)["invoices"]) == {"I6"}  # the open invoice
    assert len(orjson.loads(row.archive)["invoices"]) == 6  # the settled ones
    assert read(row) == state

    reopened = evolve(read(row), reversed_("P2", on="2024-03-05")).state
    assert reopened.invoices["I2"].status == "open"
    new = store.encode_stored(reopened)
    assert new.archive is None and new.held is None  # the reopened invoice and its payment are written
    assert set(store.decode_ledger(new.state).invoices) == {"I2"}
    assert set(store.decode_ledger(new.state).sources) == {"P2"}
    row = saved(row, new)
    assert read(row) == reopened

    later, added = reopened, 0
    while new.archive is None:
        gathered = store.decode_ledger(row.state)
        later = evolve(later, invoice(f"J{added}", 70, issued=f"2024-03-{added + 6:02d}")).state
        later = evolve(later, payment(f"Q{added}", 70, on=f"2024-03-{added + 6:02d}")).state
        added += 1
        new = store.encode_stored(later)
        row = saved(row, new)
        assert read(row) == later
    # written again once the working part had gathered ARCHIVE_EVERY items; the open items held
    assert len(gathered.invoices) + len(gathered.sources) + 2 >= store.ARCHIVE_EVERY
    assert store.decode_ledger(row.state).invoices == {}
    assert row.held is not None
    open_now = {k for k, i in later.invoices.items() if i.status == "open"}
    assert open_now and set(orjson.loads(row.held)["invoices"]) == open_now


def test_a_state_read_back_decodes_its_archive_only_when_an_event_names_an_archived_item() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(8)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(8)),
    )
    row = store.encode_stored(state)
    first = read(row)
    assert isinstance(first.invoices, Layered)
    archive = first.invoices.archive
    assert not archive.is_decoded

    more = (invoice("I9", 50, issued="2024-03-01"), payment("P9", 80, on="2024-03-02"))
    paid = evolve(evolve(first, more[0]).state, more[1])
    assert not archive.is_decoded  # a new invoice, a new payment applied to it: open items only
    assert paid.state.sources["P9"].unapplied == 30
    assert paid.state == evolve(evolve(state, more[0]).state, more[1]).state
    assert archive.is_decoded  # comparing with the state never stored read every item

    again = read(row)
    assert isinstance(again.invoices, Layered) and not again.invoices.archive.is_decoded
    reversal = evolve(again, reversed_("P3", on="2024-03-05"))
    assert again.invoices.archive.is_decoded  # the reversal reopens an archived invoice
    assert reversal.state.invoices["I3"].status == "open"
    assert reversal == evolve(state, reversed_("P3", on="2024-03-05"))


def test_a_state_with_few_items_is_stored_whole() -> None:
    state = given(invoice("I1", 100), payment("P1", 40))
    assert store.encode_stored(state) == store.StoredRow(store.encode_ledger(state))
    assert store.decode_ledger(store.encode_ledger(state)) == state


def test_a_row_whose_archive_holds_every_item_reads_back_whole_and_is_rewritten_by_its_next_batch() -> None:
    state = given(
        *(invoice(f"I{n}", 100, issued=f"2024-01-{n + 1:02d}") for n in range(8)),
        *(payment(f"P{n}", 100, on=f"2024-02-{n + 1:02d}") for n in range(7)),
    )
    # as rows were written before: every item in the archive, no `held`, and the working part
    # without the ids of what the archive holds
    whole = store.LedgerArchive(invoices=state.invoices, sources=state.sources, timelines=state.timelines)
    working = orjson.loads(store.encode_ledger(state)) | {"invoices": {}, "sources": {}, "timelines": {}}
    old = store.StoredRow(orjson.dumps(working), None, orjson.dumps(whole))
    assert read(old) == state and read(old).invoices["I7"].status == "open"

    later = evolve(read(old), payment("P9", 30, on="2024-03-01")).state
    new = store.encode_stored(later)
    assert new.archive is not None and new.held is not None  # the next batch writes the new layout
    assert set(orjson.loads(new.held)["invoices"]) == {"I7"}
    assert read(new) == later
