"""The ledger's hand-made encodings give the contracts' bytes, and its state cache holds committed state
only."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from contracts import receivables as facts
from contracts.envelope import Envelope
from contracts.money import Money
from contracts.registry import (
    ContractError,
    _decode_event,
    decode_event,
    encode_event,
    make_event,
    parse_event,
)
from services.ledger import projection as ledger_projection
from services.ledger import state_codec, store
from services.ledger.domain import DebtorLedger, LedgerEvent, evolve, initial_state
from services.ledger.projection import FACT_TYPE, LedgerProjection, receivable_fact
from services.runtime.consumer import Delivered, StaleState
from services.runtime.log import Record

from . import adjusted, allocated, cancelled, credit_note, invoice, payment, profile, reversed_, written_off

AT = dt.datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt.UTC)


def envelope(data: LedgerEvent, event_id: str, *, correlation_id: str | None = None) -> Envelope[Any]:
    event_type = data.TYPES[0]
    return make_event(
        event_type,
        data,
        event_id=event_id,
        tenant_id="acme",
        debtor_id="debtor-1",
        source="erp",
        time=AT,
        correlation_id=correlation_id,
    )


def history() -> list[Envelope[Any]]:
    """Events whose balance changes include every kind, in EUR and in JPY (no minor digits)."""
    return [
        envelope(profile(), "e0"),
        envelope(invoice("I1", 10_000, issued="2026-01-01", due="2026-01-31"), "e1"),
        envelope(invoice("I2", 5_000, issued="2026-01-02", due="2026-02-01"), "e2", correlation_id="c-9"),
        envelope(invoice("Y1", 250_000, issued="2026-01-03", due="2026-02-02", currency="JPY"), "e3"),
        envelope(payment("P1", 4_000, on="2026-01-10"), "e4"),
        envelope(payment("P2", 6_000, on="2026-01-11", to={"I1": 6_000}), "e5"),
        envelope(payment("PY", 250_000, on="2026-01-12", currency="JPY"), "e6"),
        envelope(reversed_("P2", on="2026-01-13"), "e7"),
        envelope(adjusted("I2", 3_000, on="2026-01-14"), "e8"),
        envelope(written_off("W1", "I2", None, on="2026-01-15"), "e9"),
        envelope(invoice("I3", 700, issued="2026-01-16", due="2026-02-15"), "e10"),
        envelope(cancelled("I3", on="2026-01-17"), "e11"),
        envelope(credit_note("C1", 1_000, on="2026-01-18", for_invoice="I1"), "e12"),
        envelope(allocated("P1", {"I1": 4_000}, on="2026-01-19"), "e13"),
    ]


def applied(events: Iterable[Envelope[Any]]) -> tuple[list[tuple[Envelope[Any], Any]], DebtorLedger]:
    state = initial_state("acme", "debtor-1")
    changes: list[tuple[Envelope[Any], Any]] = []
    for event in events:
        transition = evolve(state, event.data)
        assert transition.rejection is None, transition.rejection
        state = transition.state
        changes.extend((event, c) for c in transition.changes)
    return changes, state


def contract_fact(cause: Envelope[Any], change: Any, at: dt.datetime = AT) -> bytes:
    invoice_ = change.invoice
    currency = invoice_.currency
    return encode_event(
        make_event(
            FACT_TYPE[change.kind],
            facts.ReceivableBalance(
                invoice_id=invoice_.invoice_id,
                issue_date=invoice_.issue_date,
                due_date=invoice_.due_date,
                amount=Money(amount_minor=invoice_.amount, currency=currency),
                outstanding=Money(amount_minor=invoice_.outstanding, currency=currency),
                change=Money(amount_minor=change.change, currency=currency),
                status=invoice_.status,
                effective_date=change.effective_date,
                cause_type=cause.type,
                cause_id=cause.id,
            ),
            event_id=str(
                uuid.uuid5(
                    uuid.UUID("5f0c8d3e-0a4b-4c1f-9a57-6c1f3c2d9e10"),
                    f"{cause.tenantid}|{cause.id}|{invoice_.invoice_id}",
                )
            ),
            tenant_id=cause.tenantid,
            debtor_id=cause.debtorid,
            source="arrears/ledger",
            time=at,
            causation_id=cause.id,
            correlation_id=cause.correlationid or cause.id,
        )
    )


def test_balance_facts_are_the_contracts_bytes_for_every_kind_of_change() -> None:
    changes, _ = applied(history())
    assert {c.kind for _, c in changes} == set(FACT_TYPE)
    assert "JPY" in {c.invoice.currency for _, c in changes}
    for cause, change in changes:
        message = receivable_fact(cause, change, AT)
        assert message.value == contract_fact(cause, change), change
        assert message.key == b"acme:debtor-1"
        assert decode_event(message.value).data.outstanding.amount_minor == change.invoice.outstanding


@pytest.mark.parametrize(
    "at",
    [
        dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 4, 5, 6, 7, 999, tzinfo=dt.UTC),
        dt.datetime.fromtimestamp(1_767_225_600_001 / 1000, dt.UTC),
    ],
)
def test_fact_times_are_formatted_as_the_contracts_format_them(at: dt.datetime) -> None:
    changes, _ = applied(history())
    for cause, change in changes[:3]:
        assert receivable_fact(cause, change, at).value == contract_fact(cause, change, at)


def test_states_are_encoded_as_pydantic_encodes_them_and_decode_to_equal_states() -> None:
    _, state = applied(history())
    for source in state.sources.values():  # memoized sums must not reach the JSON
        assert source.undirected >= 0 and source.applied >= 0
    raw = state_codec.encode_ledger(state)
    assert raw == TypeAdapter(DebtorLedger).dump_json(state)
    assert state_codec.decode_ledger(raw) == state
    assert state_codec.encode_ledger(state_codec.decode_ledger(raw)) == raw


def test_records_decode_to_the_same_envelopes_and_errors_as_the_general_path() -> None:
    for event in history():
        value = encode_event(event)
        assert decode_event(value) == _decode_event(value) == parse_event(orjson.loads(value)) == event
    bad = orjson.loads(encode_event(history()[1]))
    bad["data"]["amount"]["amount_minor"] = 10.5
    with pytest.raises(ContractError) as fast:
        decode_event(orjson.dumps(bad))
    with pytest.raises(ContractError) as general:
        _decode_event(orjson.dumps(bad))
    assert str(fast.value) == str(general.value)
    assert "data.amount.amount_minor" in str(fast.value)
    with pytest.raises(ContractError, match="not JSON"):
        decode_event(b'{"type":"ar.invoice.issued.v1",')


# --- the projection's cache of debtor states ---------------------------------------------------


class FakeStore:
    """The store functions the projection calls, on a dict instead of the database; a row's version
    changes with every write, as `xmin` does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: dict[store.DebtorKey, tuple[bytes, str]] = {}
        self.loads: list[set[store.DebtorKey]] = []
        self.writes = 0
        monkeypatch.setattr(store, "load_ledger_versions", self.load_ledger_versions)
        monkeypatch.setattr(store, "save_ledgers", self.save_ledgers)
        monkeypatch.setattr(store, "record_movements", self.nothing)
        monkeypatch.setattr(store, "advance_business_dates", self.nothing)
        monkeypatch.setattr(store, "record_outcomes", self.nothing)

    def write(self, key: store.DebtorKey, state: DebtorLedger) -> str:
        self.writes += 1
        self.rows[key] = (state_codec.encode_ledger(state), f"v{self.writes}")
        return f"v{self.writes}"

    async def load_ledger_versions(
        self, session: Any, keys: Iterable[store.DebtorKey], known: dict[store.DebtorKey, str]
    ) -> tuple[dict[store.DebtorKey, DebtorLedger], dict[store.DebtorKey, str]]:
        found = {k: self.rows[k] for k in keys if k in self.rows}
        decoded = {
            k: state_codec.decode_ledger(raw)
            for k, (raw, version) in found.items()
            if known.get(k) != version
        }
        self.loads.append(set(decoded))
        return decoded, {k: version for k, (_, version) in found.items()}

    async def save_ledgers(
        self, session: Any, states: dict[store.DebtorKey, DebtorLedger], read: dict[store.DebtorKey, str]
    ) -> dict[store.DebtorKey, str]:
        changed = [k for k in states if read.get(k) != self.rows.get(k, (b"", None))[1]]
        if changed:
            raise StaleState(str(changed))
        return {k: self.write(k, v) for k, v in states.items()}

    async def nothing(self, *args: Any) -> None:
        return None


def delivered(event: Envelope[Any], offset: int) -> Delivered:
    record = Record("ar.journal.v1", 0, offset, event.key.encode(), b"", (), 1_767_225_600_000 + offset)
    return Delivered(record, event)


def debtor(debtor_id: str, data: LedgerEvent, event_id: str) -> Envelope[Any]:
    return make_event(
        data.TYPES[0], data, event_id=event_id, tenant_id="acme", debtor_id=debtor_id, source="erp", time=AT
    )


def test_the_cache_serves_committed_states_and_forgets_failed_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeStore(monkeypatch)
    projection = LedgerProjection(state_cache_size=10)
    i1 = debtor("D1", invoice("I1", 100, issued="2026-01-01"), "e1")
    i2 = debtor("D1", invoice("I2", 50, issued="2026-01-02"), "e2")
    i3 = debtor("D1", invoice("I3", 25, issued="2026-01-03"), "e3")
    key = ("acme", "D1")

    async def run() -> None:
        await projection.apply(None, [delivered(i1, 0)])  # type: ignore[arg-type]
        projection.batch_committed()
        await projection.apply(None, [delivered(i2, 1)])  # type: ignore[arg-type]
        assert fake.loads[-1] == set()  # the second batch found D1 in the cache
        projection.batch_failed()  # rolled back: the database keeps the state after I1 only
        fake.write(key, applied_state([i1]))
        await projection.apply(None, [delivered(i3, 2)])  # type: ignore[arg-type]
        assert fake.loads[-1] == {key}  # loaded again, not the uncommitted state with I2
        projection.batch_committed()
        assert set(state_codec.decode_ledger(fake.rows[key][0]).invoices) == {"I1", "I3"}
        projection.partitions_changed()
        await projection.apply(None, [delivered(i2, 3)])  # type: ignore[arg-type]
        assert fake.loads[-1] == {key}
        projection.batch_committed()

    asyncio.run(run())


def test_a_cached_state_another_writer_changed_is_loaded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(monkeypatch)
    projection = LedgerProjection(state_cache_size=10)
    key = ("acme", "D1")

    async def run() -> None:
        await projection.apply(None, [delivered(debtor("D1", invoice("I1", 100), "e1"), 0)])  # type: ignore[arg-type]
        projection.batch_committed()
        # The member holding D1's master-data partition writes its profile meanwhile.
        fake.write(key, evolve(state_codec.decode_ledger(fake.rows[key][0]), profile("Other Name")).state)
        await projection.apply(None, [delivered(debtor("D1", invoice("I2", 50), "e2"), 1)])  # type: ignore[arg-type]
        projection.batch_committed()
        assert fake.loads[-1] == {key}
        saved = state_codec.decode_ledger(fake.rows[key][0])
        assert saved.profile is not None and saved.profile.name == "Other Name"
        assert set(saved.invoices) == {"I1", "I2"}

    asyncio.run(run())


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(monkeypatch)
    projection = LedgerProjection(state_cache_size=2)

    async def run() -> None:
        for n in range(5):
            event = debtor(f"D{n}", invoice("I1", 100, issued="2026-01-01"), f"e{n}")
            await projection.apply(None, [delivered(event, n)])  # type: ignore[arg-type]
            projection.batch_committed()
        await projection.apply(None, [delivered(debtor("D4", invoice("I2", 1), "x"), 9)])  # type: ignore[arg-type]
        assert fake.loads[-1] == set()  # among the two most recent: cached
        projection.batch_committed()
        await projection.apply(None, [delivered(debtor("D0", invoice("I2", 1), "y"), 10)])  # type: ignore[arg-type]
        assert fake.loads[-1] == {("acme", "D0")}  # evicted: loaded again

    asyncio.run(run())


def applied_state(events: list[Envelope[Any]]) -> DebtorLedger:
    state = initial_state("acme", "D1")
    for event in events:
        state = evolve(state, event.data).state
    return state


def test_projections_without_the_optional_hooks_still_work() -> None:
    from services.runtime.consumer import _hook

    class Plain:
        group_id = "plain"
        topics: tuple[str, ...] = ("t",)

        async def apply(self, session: Any, batch: Any) -> Any:
            return None

    assert _hook(Plain(), "batch_committed")() is None
    projection = LedgerProjection()
    assert _hook(projection, "batch_committed") == projection.batch_committed
    assert ledger_projection.DEFAULT_STATE_CACHE > 0


def test_one_dump_gives_the_record_and_the_content_digest_of_the_contracts() -> None:
    from bench.portfolio import generate, spec_for
    from services.ledger.ingest import content_digest, encoded_with_digest

    portfolio = generate(spec_for("tiny"))
    events = [decode_event(e.value) for e in portfolio.events[:600]] + history()
    events.append(envelope(profile(email=None, consented_channels=None), "p-none"))  # type: ignore[arg-type]
    for event in events:
        assert encoded_with_digest(event) == (encode_event(event), content_digest(event))
