"""Alembic migrations for agent-ledger: raw SQL through ``op.execute``, each with a downgrade."""
