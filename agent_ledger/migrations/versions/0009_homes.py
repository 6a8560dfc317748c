"""Every money row carries its home: the team its money lives with, ready to distribute.

To scale out on Citus (distributed Postgres), the tables a money decision touches are
distributed and co-located on one column, so that a decision reads and writes one node's rows
in one local transaction. That column is ``home_id``: an agent's team, or, for an agent without
a team, the agent itself (a team of one; the API still shows its ``team_id`` as null). A team's
balance row lives in the team's own home. So everywhere: home_id = coalesce(team_id, agent or
owner id), held to that by a CHECK on every table.

- balances, ledger_entries, holds, idempotency_keys, spend_rollups and spend_rollups_daily get
  ``home_id`` and primary keys that lead with it (Citus requires a unique key to include the
  distribution column); lookups by the old keys keep plain indexes. ``seq`` stays unique by its
  sequence (now the column's default, which Citus turns into per-node ranges).
- Balance rows are no longer made and moved by triggers on agents and teams (a trigger on a
  table that Citus replicates to every node cannot write a distributed table): the services
  create them with the agent or team, and moving an agent to another team moves its balance
  row and its idempotency answers to the new home, in one transaction.

On plain Postgres (the default) nothing is distributed and nothing else changes; `migrate` on a
Citus coordinator distributes the tables afterwards (agent_ledger/citus.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = [
    "DROP TRIGGER agents_have_balances ON agents",
    "DROP TRIGGER teams_have_balances ON teams",
    "DROP FUNCTION balances_follow_owner()",
    # --- balances ------------------------------------------------------------------------------
    "ALTER TABLE balances ADD COLUMN home_id text",
    "UPDATE balances SET home_id = coalesce(team_id, owner_id)",
    "ALTER TABLE balances ALTER COLUMN home_id SET NOT NULL",
    """ALTER TABLE balances ADD CONSTRAINT balances_home
           CHECK (home_id = coalesce(team_id, owner_id))""",
    "ALTER TABLE balances DROP CONSTRAINT balances_pkey",
    "ALTER TABLE balances ADD PRIMARY KEY (home_id, owner_id)",
    "CREATE INDEX balances_owner_idx ON balances (owner_id)",
    # --- ledger_entries (append-only: the backfill runs with its triggers off) -----------------
    "ALTER TABLE ledger_entries ADD COLUMN home_id text",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
    "UPDATE ledger_entries SET home_id = coalesce(team_id, agent_id)",
    "ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only",
    "ALTER TABLE ledger_entries ALTER COLUMN home_id SET NOT NULL",
    """ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_home
           CHECK (home_id = coalesce(team_id, agent_id))""",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey",
    "ALTER TABLE ledger_entries ADD PRIMARY KEY (home_id, id)",
    "CREATE INDEX ledger_entries_id_idx ON ledger_entries (id)",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_seq_key",
    "CREATE INDEX ledger_entries_seq_idx ON ledger_entries (seq)",
    "ALTER TABLE ledger_entries ALTER COLUMN seq SET DEFAULT nextval('ledger_entries_seq')",
    "ALTER SEQUENCE ledger_entries_seq OWNED BY ledger_entries.seq",
    "DROP INDEX ledger_entries_one_resolution_per_hold",
    """CREATE UNIQUE INDEX ledger_entries_one_resolution_per_hold
           ON ledger_entries (home_id, hold_id) WHERE kind IN ('capture', 'release', 'expire')""",
    # --- holds -----------------------------------------------------------------------------------
    "ALTER TABLE holds ADD COLUMN home_id text",
    "UPDATE holds SET home_id = coalesce(team_id, agent_id)",
    "ALTER TABLE holds ALTER COLUMN home_id SET NOT NULL",
    "ALTER TABLE holds ADD CONSTRAINT holds_home CHECK (home_id = coalesce(team_id, agent_id))",
    "ALTER TABLE holds DROP CONSTRAINT holds_pkey",
    "ALTER TABLE holds ADD PRIMARY KEY (home_id, id)",
    "CREATE INDEX holds_id_idx ON holds (id)",
    # --- idempotency_keys: an agent's answers live in its current home ----------------------------
    "ALTER TABLE idempotency_keys ADD COLUMN home_id text",
    """UPDATE idempotency_keys AS k SET home_id = coalesce(a.team_id, a.id)
           FROM agents AS a WHERE a.id = k.agent_id""",
    "UPDATE idempotency_keys SET home_id = agent_id WHERE home_id IS NULL",
    "ALTER TABLE idempotency_keys ALTER COLUMN home_id SET NOT NULL",
    "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey",
    "ALTER TABLE idempotency_keys ADD PRIMARY KEY (home_id, agent_id, key)",
    # --- report rollups ('' stands for no team there) --------------------------------------------
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            "ALTER TABLE {table} ADD COLUMN home_id text",
            "UPDATE {table} SET home_id = CASE team_id WHEN '' THEN agent_id ELSE team_id END",
            "ALTER TABLE {table} ALTER COLUMN home_id SET NOT NULL",
            """ALTER TABLE {table} ADD CONSTRAINT {table}_home
                   CHECK (home_id = CASE team_id WHEN '' THEN agent_id ELSE team_id END)""",
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} ADD PRIMARY KEY (home_id, agent_id, {period}, team_id, model)",
            "CREATE INDEX {table}_agent_idx ON {table} (agent_id, {period})",
        )
    ),
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


DOWNGRADE = [
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} ADD PRIMARY KEY (agent_id, {period}, team_id, model)",
            "DROP INDEX {table}_agent_idx",
            "ALTER TABLE {table} DROP COLUMN home_id",
        )
    ),
    "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey",
    "ALTER TABLE idempotency_keys ADD PRIMARY KEY (agent_id, key)",
    "ALTER TABLE idempotency_keys DROP COLUMN home_id",
    "ALTER TABLE holds DROP CONSTRAINT holds_pkey",
    "ALTER TABLE holds ADD PRIMARY KEY (id)",
    "DROP INDEX holds_id_idx",
    "ALTER TABLE holds DROP COLUMN home_id",
    "DROP INDEX ledger_entries_one_resolution_per_hold",
    """CREATE UNIQUE INDEX ledger_entries_one_resolution_per_hold ON ledger_entries (hold_id)
           WHERE kind IN ('capture', 'release', 'expire')""",
    "ALTER SEQUENCE ledger_entries_seq OWNED BY NONE",
    "ALTER TABLE ledger_entries ALTER COLUMN seq DROP DEFAULT",
    "DROP INDEX ledger_entries_seq_idx",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_seq_key UNIQUE (seq)",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey",
    "ALTER TABLE ledger_entries ADD PRIMARY KEY (id)",
    "DROP INDEX ledger_entries_id_idx",
    "ALTER TABLE ledger_entries DROP COLUMN home_id",
    "ALTER TABLE balances DROP CONSTRAINT balances_pkey",
    "ALTER TABLE balances ADD PRIMARY KEY (owner_id)",
    "DROP INDEX balances_owner_idx",
    "ALTER TABLE balances DROP COLUMN home_id",
]


def downgrade() -> None:
    import importlib

    ledger = importlib.import_module("agent_ledger.migrations.versions.0002_ledger")
    for statement in DOWNGRADE:
        op.execute(statement)
    # The balance triggers as 0002 made them (function and the two triggers, not the backfill).
    for statement in ledger.BALANCE_TRIGGERS[:3]:
        op.execute(statement)
