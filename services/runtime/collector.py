"""The cyclic garbage collector's settings for a service process.

A service's working objects are acyclic (decoded debtor states and cases, events, rows) and are freed
by reference counting the moment they are let go; what the cyclic collector does with them in
between is walk them. A decoded state is thousands of objects that all outlive their first
collections, so with Python's default thresholds (a collection of the youngest generation every 700
net allocations) each one is walked while it is built, promoted, and walked again by every full
collection, along with every state the service keeps cached. `docs/benchmarks.md` ("The garbage
collector") has the measurements.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 100_000
"""Net allocations between collections of the youngest generation (Python's default: 700). Garbage
in cycles, which is rare here (an exception and its traceback), lives at most this long."""
MIDDLE_COLLECTION_EVERY = 50
"""Young collections between collections of the middle generation (Python's default: 10)."""
FULL_COLLECTION_EVERY = 100
"""Middle collections before a full one is considered (Python's default: 10; a full collection
also waits until a quarter as many objects as it last found have been promoted since)."""


def settle() -> None:
    """Set every object alive now (modules, contract models, schemas, a parent's data in a forked
    child) aside from all later collections, and collect less often from here on. Called once a
    process has imported what it runs. (No collection first: in a forked child it would walk, and
    so copy, every page of the parent's objects.)"""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, FULL_COLLECTION_EVERY)
