"""Delegation in escrow: child agents spending a grant carved from their parent's budget.

Issue 17, item 1. An agent an admin allows (``agents.can_delegate``) creates child agents in
its own team, each with a grant: money moved from the parent's available budget into escrow.

- The escrow is a hold on the parent (``holds.grant_id`` names its grant): it counts as held on
  the parent, and on the team when the parent is not itself a child, from the moment the grant
  opens. It never lapses on its own: closing the grant (by request, or the sweeper once the
  grant's time is up) writes its closing entry.
- A child spends only within its grant: its spent plus its own holds never pass the grant. What
  it spends moves, in the same decision, from held to spent on every ancestor (a
  ``grant_spend`` entry on each ancestor's chain) and on the team (once); its own holds count on
  itself alone (``holds.within_grant``): the team already counts the escrow they are carved
  from.
- Closing returns the unspent rest: a ``grant_return`` entry on the parent's chain (held down by
  the rest) and a ``grant_closed`` entry on the child's; a ``grant_received`` entry on the
  child's chain records the opening beside the parent's ``grant``. Either closing entry may
  carry 0 when nothing is left.
- Reports roll a child's spend up to its ancestors (``agents.ancestors``, parent first) on
  request.
- A child's balance row carries what a decision needs without another read: its ancestors
  (parent first), its depth, its grant and the grant's escrow hold. Lock order stays one order
  everywhere: deeper agents first (depth descending, then id), then the team, then holds.

``grants`` is distributed on ``home_id`` on Citus, co-located with the balances: a child lives
in its parent's team, so a grant, its escrow and every row a child's decision touches share one
home.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ROLE = "agent_ledger_service"

_HOLD_KINDS = "'hold', 'capture', 'release', 'expire', 'grant', 'grant_spend', 'grant_return'"
_KINDS = (
    "'charge', 'hold', 'capture', 'release', 'expire', 'adjustment', "
    "'grant', 'grant_spend', 'grant_return', 'grant_received', 'grant_closed'"
)

UPGRADE = [
    """
    ALTER TABLE agents
        ADD COLUMN can_delegate boolean NOT NULL DEFAULT false,
        ADD COLUMN parent_id text REFERENCES agents (id),
        ADD COLUMN depth smallint NOT NULL DEFAULT 0 CHECK (depth >= 0),
        ADD COLUMN grant_id text,
        ADD COLUMN ancestors text[],
        ADD CONSTRAINT agents_parent_depth CHECK ((parent_id IS NULL) = (depth = 0)),
        ADD CONSTRAINT agents_parent_grant CHECK ((parent_id IS NULL) = (grant_id IS NULL)),
        ADD CONSTRAINT agents_parent_in_team CHECK (parent_id IS NULL OR team_id IS NOT NULL),
        ADD CONSTRAINT agents_ancestors CHECK (
            (parent_id IS NULL) = (ancestors IS NULL)
            AND (parent_id IS NULL OR (ancestors[1] = parent_id
                                       AND cardinality(ancestors) = depth)))
    """,
    "CREATE INDEX agents_parent_idx ON agents (parent_id) WHERE parent_id IS NOT NULL",
    """
    ALTER TABLE balances
        ADD COLUMN parent_id text,
        ADD COLUMN ancestors text[],
        ADD COLUMN depth smallint NOT NULL DEFAULT 0,
        ADD COLUMN grant_id text,
        ADD COLUMN grant_amount bigint CHECK (grant_amount > 0),
        ADD COLUMN grant_expires_at timestamptz,
        ADD COLUMN grant_hold_id text,
        ADD CONSTRAINT balances_delegated CHECK (
            (parent_id IS NULL) = (grant_id IS NULL)
            AND (parent_id IS NULL) = (grant_amount IS NULL)
            AND (parent_id IS NULL) = (grant_hold_id IS NULL)
            AND (parent_id IS NULL) = (depth = 0)
            AND (parent_id IS NULL OR ancestors[1] = parent_id)
            AND (parent_id IS NULL OR cardinality(ancestors) = depth))
    """,
    """
    ALTER TABLE holds
        ADD COLUMN grant_id text,
        ADD COLUMN within_grant boolean NOT NULL DEFAULT false
    """,
    """
    CREATE TABLE grants (
        home_id           text NOT NULL,
        id                text NOT NULL,
        parent_id         text NOT NULL REFERENCES agents (id),
        child_id          text NOT NULL REFERENCES agents (id),
        hold_id           text NOT NULL,
        amount            bigint NOT NULL CHECK (amount > 0),
        currency          text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
        status            text NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'closed', 'expired')),
        spent             bigint CHECK (spent >= 0),
        returned          bigint CHECK (returned >= 0),
        key_id            text,
        closed_by_key_id  text,
        created_at        timestamptz NOT NULL,
        expires_at        timestamptz NOT NULL,
        closed_at         timestamptz,
        PRIMARY KEY (home_id, id),
        UNIQUE (home_id, child_id),
        CHECK (expires_at > created_at),
        CHECK ((status = 'open') = (closed_at IS NULL)),
        CHECK ((status = 'open') = (returned IS NULL AND spent IS NULL))
    )
    """,
    "CREATE INDEX grants_id_idx ON grants (id)",
    "CREATE INDEX grants_parent_idx ON grants (parent_id, created_at)",
    "CREATE INDEX grants_open_by_expiry_idx ON grants (expires_at) WHERE status = 'open'",
    # The entry kinds of grants. grant, grant_spend and grant_return name the escrow hold; the
    # closing entries may carry 0 (nothing was left to return).
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check",
    f"""ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ({_KINDS}))""",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_check1",
    f"""ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_check1
        CHECK ((kind IN ({_HOLD_KINDS}, 'grant_received', 'grant_closed'))
               = (hold_id IS NOT NULL))""",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_amount_check",
    """ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_amount_check
        CHECK (amount <> 0 OR kind IN ('grant_return', 'grant_closed'))""",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_check",
    """ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_check
        CHECK (kind = 'adjustment' OR amount > 0
               OR (kind IN ('grant_return', 'grant_closed') AND amount = 0))""",
    # An escrow is closed once, as any hold is.
    "DROP INDEX ledger_entries_one_resolution_per_hold",
    """CREATE UNIQUE INDEX ledger_entries_one_resolution_per_hold ON ledger_entries
        (home_id, hold_id) WHERE kind IN ('capture', 'release', 'expire', 'grant_return')""",
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            GRANT SELECT, INSERT, UPDATE ON grants TO {ROLE};
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "DROP INDEX ledger_entries_one_resolution_per_hold",
    """CREATE UNIQUE INDEX ledger_entries_one_resolution_per_hold ON ledger_entries
        (home_id, hold_id) WHERE kind IN ('capture', 'release', 'expire')""",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_check",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_check"
    " CHECK (kind = 'adjustment' OR amount > 0)",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_amount_check",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_amount_check CHECK (amount <> 0)",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_check1",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_check1"
    " CHECK ((kind IN ('hold', 'capture', 'release', 'expire')) = (hold_id IS NOT NULL))",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check",
    "ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN"
    " ('charge', 'hold', 'capture', 'release', 'expire', 'adjustment'))",
    "DROP TABLE grants",
    "ALTER TABLE holds DROP COLUMN within_grant, DROP COLUMN grant_id",
    """ALTER TABLE balances DROP CONSTRAINT balances_delegated, DROP COLUMN grant_hold_id,
        DROP COLUMN grant_expires_at, DROP COLUMN grant_amount, DROP COLUMN grant_id,
        DROP COLUMN depth, DROP COLUMN ancestors, DROP COLUMN parent_id""",
    "DROP INDEX agents_parent_idx",
    """ALTER TABLE agents DROP CONSTRAINT agents_parent_in_team,
        DROP CONSTRAINT agents_parent_depth, DROP CONSTRAINT agents_parent_grant,
        DROP CONSTRAINT agents_ancestors, DROP COLUMN ancestors,
        DROP COLUMN grant_id, DROP COLUMN depth, DROP COLUMN parent_id,
        DROP COLUMN can_delegate""",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
