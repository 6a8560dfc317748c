"""Who priced each entry, and budgets that insist on the server's price.

Issue 12: a client could send ``{"amount": "0.000000001", "model": "gpt-4o", ...}`` and have it
booked, and reported, as gpt-4o spend. Now:

- every new entry records ``priced_by``: 'server' (priced from model and tokens) or 'client'
  (an explicit amount). A hold keeps it too, so that its capture of the whole hold, its release
  and its expiry say who priced the money they move. Entries written before this revision stay
  NULL: nothing recorded then tells the two apart, and the ledger is append-only;
- the hash of an entry covers ``priced_by`` from this revision on: ``hash_version`` says which
  canonical encoding an entry was hashed with (1 for every older entry, 2 from now on; the
  version is itself inside the hashed text, so changing it breaks the hash);
- the report rollups are kept per ``priced_by`` too ('' for money recorded before), so reports
  can split or filter spend by who priced it without reading the ledger;
- a balance row (agent or team) may require server pricing; its budget status says so.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_PRICED_BY = "CHECK (priced_by IN ('server', 'client'))"

UPGRADE = [
    # A constant default is stored in the catalog, not written into rows: the append-only
    # triggers never fire, and every existing entry reads as version 1.
    f"ALTER TABLE ledger_entries ADD COLUMN priced_by text {_PRICED_BY}",
    "ALTER TABLE ledger_entries ADD COLUMN hash_version smallint NOT NULL DEFAULT 1"
    " CHECK (hash_version IN (1, 2))",
    # Rows written from now on are version 2 (existing rows keep the 1 they were added with).
    "ALTER TABLE ledger_entries ALTER COLUMN hash_version SET DEFAULT 2",
    f"ALTER TABLE holds ADD COLUMN priced_by text {_PRICED_BY}",
    "ALTER TABLE balances ADD COLUMN require_server_pricing boolean NOT NULL DEFAULT false",
    "ALTER TYPE budget_snapshot ADD ATTRIBUTE require_server_pricing boolean",
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            "ALTER TABLE {table} ADD COLUMN priced_by text NOT NULL DEFAULT ''"
            " CHECK (priced_by IN ('', 'server', 'client'))",
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} ADD PRIMARY KEY"
            " (home_id, agent_id, {period}, team_id, model, priced_by)",
        )
    ),
]

DOWNGRADE = [
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            # Fold the split rows back into one per (agent, period, team, model).
            """
            CREATE TEMPORARY TABLE {table}_folded ON COMMIT DROP AS
            SELECT home_id, agent_id, {period}, team_id, model, sum(spent)::bigint AS spent,
                   sum(charges)::bigint AS charges
            FROM {table} GROUP BY 1, 2, 3, 4, 5
            """,
            "DELETE FROM {table}",
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} DROP COLUMN priced_by",
            """
            INSERT INTO {table} (home_id, agent_id, {period}, team_id, model, spent, charges)
            SELECT home_id, agent_id, {period}, team_id, model, spent, charges
            FROM {table}_folded
            """,
            "ALTER TABLE {table} ADD PRIMARY KEY (home_id, agent_id, {period}, team_id, model)",
        )
    ),
    "ALTER TYPE budget_snapshot DROP ATTRIBUTE require_server_pricing",
    "ALTER TABLE balances DROP COLUMN require_server_pricing",
    "ALTER TABLE holds DROP COLUMN priced_by",
    "ALTER TABLE ledger_entries DROP COLUMN hash_version",
    "ALTER TABLE ledger_entries DROP COLUMN priced_by",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
