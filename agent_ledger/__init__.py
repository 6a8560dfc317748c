"""agent-ledger: per-agent credentials, exact budgets and a tamper-evident spend ledger."""

__version__ = "0.1.0"
