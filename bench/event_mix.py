"""What a portfolio's events need of the debtor states they are applied to: the portfolio replayed
through the ledger's `evolve` alone (no broker, no database), counting the events by type, those
whose transition can need no item of the state (an invoice issued to a debtor with no free cash,
no earmark and no parked event; a change of master data), the items a debtor holds when an event
reaches it, and how many debtors a batch of one consumer meets per event as its window grows.
Each event counted as needing no item is also applied to its state stripped of every other item,
and the two transitions compared: any difference is reported (and would make the count wrong).
Each state is also stored as the ledger stores it (`state_codec.encode_stored`, once per event
rather than per batch), to count the events that meet a row with an archive and those the
projection applies to the row's working part alone (`state_codec.needs_archive`).

    python -m bench.event_mix --size full
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from bench import entry
from bench.portfolio import SIZES, Portfolio, generate, spec_for
from contracts.journal import DebtorProfile, InvoiceIssued
from contracts.registry import decode_event
from contracts.topics import CLOCK
from services.ledger import state_codec
from services.ledger.domain import DebtorLedger, Transition, evolve, initial_state, replace


def needs_no_items(state: DebtorLedger, event: object) -> bool:
    """Whether the event's transition reads nothing of the state's invoices and sources beyond the
    ids of the invoices (an invoice issued: unless cash waits for it or could pay it)."""
    if isinstance(event, DebtorProfile):
        return True
    if not isinstance(event, InvoiceIssued) or state.parked:
        return False
    return not any(source.undirected > 0 or source.directed for source in state.sources.values())


def stripped(state: DebtorLedger, event: object) -> DebtorLedger:
    """The state without the items the event does not name, but for the sources `earmarked_by`
    lists (a source whose earmarks were used up stays listed until the debtor's next event)."""
    named = event.invoice_id if isinstance(event, InvoiceIssued) else None
    return replace(
        state,
        invoices={k: v for k, v in state.invoices.items() if k == named},
        timelines={k: v for k, v in state.timelines.items() if k == named},
        sources={k: state.sources[k] for k in state.earmarked_by},
        write_offs={},
        discounts={},
    )


def same_effect(whole: Transition, partial: Transition, before: DebtorLedger) -> bool:
    """Whether the transition of the stripped state did what the whole state's did: the same
    movements, balance changes and outcome, and the same state once its untouched items are put back."""
    outcome = (whole.movements, whole.changes, whole.rejection, whole.parked, whole.resolved)
    if outcome != (partial.movements, partial.changes, partial.rejection, partial.parked, partial.resolved):
        return False
    after = partial.state
    restored = replace(
        after,
        invoices={**before.invoices, **after.invoices},
        timelines={**before.timelines, **after.timelines},
        sources={**before.sources, **after.sources},
        write_offs=before.write_offs,
        discounts=before.discounts,
    )
    return restored == whole.state


@dataclass
class Mix:
    debtors: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    no_items: int = 0
    """Events whose transition needs no item of the state beyond the invoice it names."""
    differing: int = 0
    """Of those, the ones whose transition on the stripped state differed (0 unless the count is wrong)."""
    archived: int = 0
    """Events whose debtor's row had an archive when they came."""
    working_alone: int = 0
    """Of those, the ones applied to the row's working part alone (the archive not read)."""
    items: list[int] = field(default_factory=list)
    """Per event: the invoices and cash sources its debtor held."""
    open_invoices: list[int] = field(default_factory=list)
    debtors_per_event: dict[int, float] = field(default_factory=dict)
    """Per window of records of one of two consumers: the distinct debtors in it per record."""


WINDOWS = (2_000, 20_000, 200_000, 1_000_000)


def debtors_per_event(keys: list[bytes], window: int) -> float:
    """Distinct keys per record in consecutive windows of `window` records."""
    distinct = sum(len(set(keys[start : start + window])) for start in range(0, len(keys), window))
    return distinct / len(keys) if keys else 0.0


Row = tuple[bytes, bytes | None, bytes | None]
"""A stored state's working part, archive and archive index."""


def stored(row: Row | None, state: DebtorLedger) -> Row:
    """The state's row once it is written over `row` (its archive and index kept unless rewritten)."""
    working, archive, index = state_codec.encode_stored(state)
    if archive is None and row is not None:
        return working, row[1], row[2]
    return working, archive, index


def measure(portfolio: Portfolio) -> Mix:
    mix = Mix()
    states: dict[tuple[str, str], DebtorLedger] = {}
    rows: dict[tuple[str, str], Row] = {}
    one_consumer: list[bytes] = []  # the records of half the debtors, as one of two consumers reads them
    for record in portfolio.events:
        if record.topic == CLOCK.name:
            continue
        if murmur2(record.key) & 1:
            one_consumer.append(record.key)
        event = decode_event(record.value)
        key = (event.tenantid, event.debtorid or "")
        state = states.get(key) or initial_state(*key)
        mix.kinds[type(event.data).__name__] += 1
        mix.items.append(len(state.invoices) + len(state.sources))
        mix.open_invoices.append(sum(invoice.status == "open" for invoice in state.invoices.values()))
        row = rows.get(key)
        if row is not None and row[1] is not None:
            mix.archived += 1
            working_part = state_codec.decode_working(row[0], True, row[2])
            mix.working_alone += not state_codec.needs_archive(working_part, [event.data])
        transition = evolve(state, event.data, event_id=event.id)
        if needs_no_items(state, event.data):
            mix.no_items += 1
            partial = evolve(stripped(state, event.data), event.data, event_id=event.id)
            mix.differing += not same_effect(transition, partial, state)
        if transition.rejection is None:
            states[key] = transition.state
            rows[key] = stored(rows.get(key), transition.state)
    mix.debtors = len(states)
    mix.debtors_per_event = {window: debtors_per_event(one_consumer, window) for window in WINDOWS}
    return mix


def summary_lines(mix: Mix) -> list[str]:
    events = len(mix.items)
    lines = [f"{events:,} events, {mix.debtors:,} debtors"]
    lines += [f"  {kind:<20} {count:>10,}  {count / events:6.1%}" for kind, count in mix.kinds.most_common()]
    lines.append(
        f"  needing no item of the state: {mix.no_items:,} ({mix.no_items / events:.1%});"
        f" applied to the state without its other items, {mix.differing:,} did something else"
    )
    lines.append(
        f"  meeting a row with an archive: {mix.archived:,} ({mix.archived / events:.1%}); applied to the"
        f" working part alone: {mix.working_alone:,} ({mix.working_alone / events:.1%})"
    )
    for name, values in (
        ("items (invoices and cash sources)", mix.items),
        ("open invoices", mix.open_invoices),
    ):
        deciles = statistics.quantiles(values, n=10)
        lines.append(
            f"  {name} of the debtor at its event: mean {statistics.fmean(values):.1f},"
            f" median {deciles[4]:.0f}, 90th percentile {deciles[8]:.0f}"
        )
    lines.append(
        "  debtors per record in a window of one of two consumers: "
        + ", ".join(f"{window:,} records {ratio:.2f}" for window, ratio in mix.debtors_per_event.items())
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.event_mix", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    portfolio = generate(spec_for(args.size, seed=args.seed))
    entry.prepare()  # the portfolio out of the collector's sight, its collections rare, as in `bench.run`
    print("\n".join(summary_lines(measure(portfolio))))


if __name__ == "__main__":
    main()
