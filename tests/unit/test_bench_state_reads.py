"""`bench.state_reads`: the two reads it compares write the same row (it checks), and the working
part it reads for a new invoice is a small share of the row."""

from __future__ import annotations

from bench.state_reads import measure, summary_lines


def test_the_bytes_read_for_a_new_invoice_stay_flat_as_the_history_grows() -> None:
    short, long = measure(4), measure(64)
    assert long.row_bytes > 10 * short.row_bytes
    assert long.working_bytes < long.row_bytes / 10  # the index holds the archive's ids, not its items
    assert len(summary_lines([short, long])) == 5
