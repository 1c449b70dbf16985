"""The Arrears benchmark harness: `python -m bench --size tiny|small|medium|full` (docs/benchmarks.md).

- portfolio.py  synthetic receivables portfolios as ledger events, reproducible from a seed
- infra.py      the broker and database of a run, fresh databases on them, the machine's description
- limits.py     raw Kafka produce/consume and PostgreSQL COPY rates of this machine
- pipeline.py   the ledger's figures: ingest over HTTP, projection, replay, API reads
- server.py     the ledger API in a process of its own
- processes.py  CPU time and peak memory of the processes involved, from /proc
- profiling.py  optional py-spy profiles of each stage
- report.py     ratios to the binding limits, targets, the printed summary, the JSON file
- run.py        one run, measure by measure
"""
