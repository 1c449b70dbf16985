"""`bench.projection_alone`'s summary: beside the throughput, the cache size it ran with and each
process's peak memory, which `docs/benchmarks.md` states beside every figure."""

from __future__ import annotations

from typing import Any

from bench.projection_alone import summary_lines


def _measure(**extra: Any) -> dict[str, Any]:
    return {
        "figure": 7294.0,
        "records": 2_335_074,
        "seconds": 320.1,
        "members": 2,
        "cpu_seconds": {"bench": 230.0, "projection_member_2": 214.0, "postgres": 135.0, "kafka": 21.0},
        "database": {"tables": {"outbox": {"inserts": 2_159_673, "updates": 0, "hot_updates": 0}}},
        **extra,
    }


def test_the_summary_states_the_cache_size_and_each_process_peak_memory() -> None:
    lines = summary_lines(
        _measure(
            state_cache=130_000,
            memory={
                "bench": {"peak_pss_sum_bytes": 2_876_000_000},
                "projection_member_2": {"peak_pss_sum_bytes": 1_536_000_000},
                "postgres": {"peak_pss_sum_bytes": None},
            },
        )
    )
    assert "7,294 events/s" in lines[0]
    assert "each keeping up to 130,000 debtor states decoded" in lines[0]
    assert "ledger processes 190 us, PostgreSQL 58 us, Kafka 9 us" in lines[1]
    memory = lines[-1]
    assert "the first consumer's process (it holds the portfolio) 2,876 MB" in memory
    assert "the second consumer 1,536 MB" in memory
    assert "PostgreSQL" not in memory  # a process group never sampled is left out, not shown as 0


def test_a_measure_written_before_the_cache_size_was_recorded_still_reads() -> None:
    assert "debtor states decoded" not in summary_lines(_measure())[0]
