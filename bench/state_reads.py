"""What a new invoice costs the ledger as its debtor's history grows, when the debtor's state is not
cached: its row read back, the invoice applied, the row's working part encoded again. Without
database or broker. Per history length: the whole row decoded (as every state was read before the
archive's index) against the working part alone (as the projection reads it for an invoice issued
to a debtor with no free or earmarked cash and no parked event), and beside them the raw limit of
reading the same bytes: `orjson.loads` parsing them into plain Python objects.

    python -m bench.state_reads
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench import entry
from contracts.journal import InvoiceIssued, PaymentReceived
from contracts.money import Money
from services.ledger import state_codec
from services.ledger.domain import DebtorLedger, evolve, initial_state

HISTORIES = (4, 16, 64, 256, 1024)
"""Invoices in a debtor's history, each paid by a payment of its own."""

START = dt.date(2020, 1, 1)


def settled_history(invoices: int) -> DebtorLedger:
    state = initial_state("acme", "D-1")
    for n in range(invoices):
        issued = START + dt.timedelta(days=n)
        amount = Money(amount_minor=10_000 + n, currency="EUR")
        for event in (
            InvoiceIssued(
                invoice_id=f"INV-{n:06d}",
                issue_date=issued,
                due_date=issued + dt.timedelta(days=30),
                amount=amount,
            ),
            PaymentReceived(
                payment_id=f"PAY-{n:06d}", value_date=issued + dt.timedelta(days=20), amount=amount
            ),
        ):
            state = evolve(state, event).state
    return state


@dataclass(frozen=True)
class Reads:
    invoices: int
    row_bytes: int
    working_bytes: int
    whole_us: float
    working_us: float
    parse_row_us: float
    parse_working_us: float


def per_call_us(work: Callable[[], object], minimum_s: float = 0.2) -> float:
    """Mean microseconds per call over at least `minimum_s`."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < minimum_s or calls < 5:
        work()
        calls += 1
    return elapsed / calls * 1e6


def measure(invoices: int) -> Reads:
    working, archive, index = state_codec.encode_stored(settled_history(invoices))
    assert archive is not None, "a history this long is archived"
    issued = START + dt.timedelta(days=invoices)
    event = InvoiceIssued(
        invoice_id="INV-NEW",
        issue_date=issued,
        due_date=issued + dt.timedelta(days=30),
        amount=Money(amount_minor=5_000, currency="EUR"),
    )

    def whole() -> bytes:
        state = state_codec.decode_ledger(working, archive)
        return state_codec.encode_stored(evolve(state, event).state).working

    def working_part() -> bytes:
        state = state_codec.decode_working(working, True, index)
        assert not state_codec.needs_archive(state, [event])
        return state_codec.encode_stored(evolve(state, event).state).working

    assert whole() == working_part(), "both reads write the same working part"
    return Reads(
        invoices=invoices,
        row_bytes=len(working) + len(archive),
        working_bytes=len(working) + len(index or b""),
        whole_us=per_call_us(whole),
        working_us=per_call_us(working_part),
        parse_row_us=per_call_us(lambda: (orjson.loads(working), orjson.loads(archive))),
        parse_working_us=per_call_us(lambda: (orjson.loads(working), orjson.loads(index or b"null"))),
    )


def summary_lines(results: list[Reads]) -> list[str]:
    lines = [
        "a new invoice to a debtor whose state is not cached: read back, applied, written (us per event)",
        f"  {'invoices':>8} {'row read':>10} {'whole row':>10} {'parse':>7}"
        f"   {'read':>9} {'working':>8} {'parse':>7}",
    ]
    for r in results:
        lines.append(
            f"  {r.invoices:>8,} {r.row_bytes:>9,}B {r.whole_us:>10,.0f} {r.parse_row_us:>7,.0f}"
            f"   {r.working_bytes:>8,}B {r.working_us:>8,.0f} {r.parse_working_us:>7,.0f}"
        )
    lines.append("  (parse: orjson.loads of the same bytes into plain objects, the floor of reading them)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_reads", description=__doc__.split("\n")[0])
    parser.parse_args()
    entry.prepare()
    print("\n".join(summary_lines([measure(invoices) for invoices in HISTORIES])))


if __name__ == "__main__":
    main()
