"""Runs: spend per agent task or session, and a cap per run (issue 17, item 2).

- Charges and holds may carry a ``run_id`` (1 to 255 printable ASCII). A hold keeps it, and its
  capture, release and expire entries carry it too. Entries record it, and it is covered by
  hash version 3 (version 2 plus ``run_id``); older entries keep the version they were hashed
  with, and the ledger never rewrites them.
- ``runs`` keeps each run's counters (what it spent, how many charges and captures) and its
  cap: the limit, who set it last (``admin`` or ``agent``) and the ceiling an admin set
  (``admin_limit``: an agent key may lower its run's cap below it, never raise it above).
  Distributed on ``home_id`` beside the balances on Citus (agent_ledger/citus.py): the money
  decision writes it under the agent's balance row lock, which is what serialises a run.
- A run's held is not stored: the decision sums the agent's open, unexpired holds of the run
  (the partial index below), and only for a run that has a cap.

The two CHECK constraints on ``ledger_entries`` are added NOT VALID: every existing row is NULL
or version 1 or 2 and passes, and an append-only table of any size is not scanned under an
exclusive lock to prove it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"
_RUN_ID = r"run_id ~ '^[\x20-\x7e]{1,255}$'"

UPGRADE = [
    "ALTER TABLE ledger_entries ADD COLUMN run_id text",
    f"ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_run_id_check CHECK ({_RUN_ID})"
    " NOT VALID",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_hash_version_check",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_hash_version_check"
    " CHECK (hash_version IN (1, 2, 3)) NOT VALID",
    "ALTER TABLE ledger_entries ALTER COLUMN hash_version SET DEFAULT 3",
    # GET /v1/entries?run_id= in commit order, like the other filters (0003).
    "CREATE INDEX ledger_entries_run_page_idx ON ledger_entries (run_id, xid, seq)"
    " WHERE run_id IS NOT NULL",
    f"ALTER TABLE holds ADD COLUMN run_id text CHECK ({_RUN_ID})",
    # A capped run's live held: the agent's open holds of the run.
    "CREATE INDEX holds_open_by_run_idx ON holds (home_id, agent_id, run_id)"
    " WHERE status = 'open' AND run_id IS NOT NULL",
    f"""
    CREATE TABLE runs (
        home_id       text NOT NULL,
        agent_id      text NOT NULL,
        run_id        text NOT NULL CHECK ({_RUN_ID}),
        limit_total   bigint CHECK (limit_total >= 0),
        limit_set_by  text CHECK (limit_set_by IN ('admin', 'agent')),
        admin_limit   bigint CHECK (admin_limit >= 0),
        spent         bigint NOT NULL DEFAULT 0 CHECK (spent >= 0),
        charges       bigint NOT NULL DEFAULT 0 CHECK (charges >= 0),
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (home_id, agent_id, run_id),
        CHECK ((limit_total IS NULL) = (limit_set_by IS NULL)),
        CHECK (admin_limit IS NULL OR limit_total <= admin_limit)
    )
    """,
    # 0005's default privileges give the service role SELECT, INSERT and UPDATE; an agent that
    # changes team takes its runs along (inserted in the new home, deleted from the old).
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            GRANT SELECT, INSERT, UPDATE, DELETE ON runs TO {ROLE};
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "DROP TABLE runs",
    "DROP INDEX holds_open_by_run_idx",
    "ALTER TABLE holds DROP COLUMN run_id",
    "DROP INDEX ledger_entries_run_page_idx",
    "ALTER TABLE ledger_entries ALTER COLUMN hash_version SET DEFAULT 2",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_hash_version_check",
    # NOT VALID: entries hashed as version 3 meanwhile stay as they are (append-only).
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_hash_version_check"
    " CHECK (hash_version IN (1, 2)) NOT VALID",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_run_id_check",
    "ALTER TABLE ledger_entries DROP COLUMN run_id",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
