"""The operations dashboard: one page of charts for finance and operations, served with a same-origin
pass-through to the ledger, dunning, scoring and notifier APIs. The page calls aggregate endpoints only
(and the worklist's head), so it stays as fast with a million open items as with ten."""
