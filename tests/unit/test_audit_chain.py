"""The debtor's record as a hash chain: it verifies as written, and a changed, removed or moved entry
is named at the right place."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools

from services.dunning.domain.audit import GENESIS, Entry, Head, Line, append, canonical, verify

AT = dt.datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=dt.UTC)


def lines() -> list[Line]:
    return [
        Line(dt.date(2026, 1, 5), "invoice", "invoice I-1 issued", "e-1", "EUR", "D1:EUR", 120_000),
        Line(dt.date(2026, 1, 6), "invoice", "invoice I-2 issued", "e-2", "USD", "D1:USD", 50_00),
        Line(dt.date(2026, 2, 1), "payment", "invoice I-1: 200.00 EUR less", "e-3", "EUR", "D1:EUR", 20_000),
        Line(
            dt.date(2026, 2, 9), "delivery.delivered", "sent", "e-4", "EUR", "D1:EUR", None, "email", "<c@a>"
        ),
    ]


def chain(debtor: str = "D1") -> tuple[list[Entry], Head]:
    return append("T", debtor, Head(), AT, lines())


def changed(entries: list[Entry], index: int, **fields: object) -> list[Entry]:
    entry = entries[index]
    return [
        *entries[:index],
        dataclasses.replace(entry, line=dataclasses.replace(entry.line, **fields)),  # type: ignore[arg-type]
        *entries[index + 1 :],
    ]


def test_a_chain_as_written_verifies_and_counts_its_entries() -> None:
    entries, head = chain()
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].previous_hash == GENESIS == "0" * 64
    assert all(b.previous_hash == a.hash for a, b in itertools.pairwise(entries))
    assert head == Head(4, entries[-1].hash)
    assert verify(entries, {"D1": head}) == (4, [])


def test_the_hash_is_sha256_of_the_canonical_entry_and_the_previous_hash() -> None:
    entries, _ = chain()
    first = entries[0]
    body = canonical("T", "D1", 1, AT, first.line) + GENESIS.encode()
    assert first.hash == hashlib.sha256(body).hexdigest()
    # The canonical form is sorted compact JSON, the moment in UTC with microseconds.
    assert canonical("T", "D1", 1, AT, first.line).startswith(
        b'{"amount_minor":120000,"business_date":"2026-01-05"'
    )
    assert b'"recorded_at":"2026-03-02T09:30:00.123456+00:00"' in canonical("T", "D1", 1, AT, first.line)


def test_a_changed_amount_is_named_at_its_seq_with_both_hashes() -> None:
    entries, head = chain()
    tampered = changed(entries, 2, amount_minor=2_000)
    checked, breaks = verify(tampered, {"D1": head})
    assert checked == 4
    [found] = breaks
    assert (found.debtor_id, found.seq, found.what) == ("D1", 3, "hash")
    assert found.stored == entries[2].hash
    recomputed = hashlib.sha256(
        canonical("T", "D1", 3, AT, tampered[2].line) + entries[1].hash.encode()
    ).hexdigest()
    assert found.recomputed == recomputed != found.stored


def test_a_changed_date_or_kind_is_named_at_its_seq() -> None:
    entries, head = chain()
    _, by_date = verify(changed(entries, 0, business_date=dt.date(2026, 1, 4)), {"D1": head})
    _, by_kind = verify(changed(entries, 3, kind="delivery.failed"), {"D1": head})
    assert [(b.seq, b.what) for b in by_date] == [(1, "hash")]
    assert [(b.seq, b.what) for b in by_kind] == [(4, "hash")]


def test_a_removed_entry_is_detected_at_the_one_after_it() -> None:
    entries, head = chain()
    _, breaks = verify([entries[0], entries[2], entries[3]], {"D1": head})
    [found] = breaks
    assert (found.seq, found.what, found.stored, found.recomputed) == (3, "seq", "3", "2")


def test_a_removed_last_entry_is_detected_by_the_chain_head() -> None:
    entries, head = chain()
    _, breaks = verify(entries[:3], {"D1": head})
    [found] = breaks
    assert (found.seq, found.what) == (4, "head")
    assert found.stored == f"4/{head.hash}" and found.recomputed == f"3/{entries[2].hash}"


def test_reordered_entries_are_detected() -> None:
    entries, head = chain()
    # Two entries' contents swapped, each keeping the other's place (seq): the chain breaks at the first.
    first, second = entries[1], entries[2]
    swapped = [
        entries[0],
        dataclasses.replace(second, seq=2),
        dataclasses.replace(first, seq=3),
        entries[3],
    ]
    _, breaks = verify(swapped, {"D1": head})
    [found] = breaks
    assert (found.seq, found.what) == (2, "previous hash")


def test_each_broken_debtor_is_named_once_and_intact_ones_not_at_all() -> None:
    d1, h1 = chain("D1")
    d2, h2 = chain("D2")
    d3, h3 = chain("D3")
    entries = [*changed(d1, 1, sentence="x"), *d2, *changed(d3, 0, currency="GBP")]
    checked, breaks = verify(entries, {"D1": h1, "D2": h2, "D3": h3})
    assert checked == 12
    assert [(b.debtor_id, b.seq) for b in breaks] == [("D1", 2), ("D3", 1)]


def test_a_chain_head_whose_entries_are_gone_is_a_break() -> None:
    _, head = chain("D1")
    assert [(b.debtor_id, b.seq, b.what) for b in verify([], {"D1": head})[1]] == [("D1", 1, "head")]


def test_appending_continues_a_chain_from_its_head() -> None:
    entries, head = chain()
    more, end = append("T", "D1", head, AT + dt.timedelta(days=1), lines()[:1])
    assert more[0].seq == 5 and more[0].previous_hash == head.hash
    assert verify([*entries, *more], {"D1": end}) == (5, [])
