"""``GET /v1/ledger/verify``: recompute the chains and counters on demand."""
