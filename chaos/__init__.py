"""Fault scenarios on real Arrears processes: `python -m chaos` (`make chaos`), see docs/reliability.md.

processes.py  the service processes (start, SIGKILL, restart on the same port), fresh databases and topics
workload.py   the seeded stream of ERP events and the end state it implies, computed from the stream alone
poster.py     the ERP: posts batches over HTTP until each is answered 202; a readiness probe
faults.py     SIGKILL loops, broker and PostgreSQL outages, poison records
checks.py     what the ledger, dunning and the notifier show against what the stream says
scenarios.py  kill, broker, postgres, rebalance, poison, cluster
report.py     the figures of a scenario and its table
"""
