"""SQL owned by the teams feature."""

from agent_ledger.keyset import Listing

INSERT_TEAM = """
INSERT INTO teams (id, name) VALUES ($1, $2)
RETURNING id, name, created_at
"""

GET_TEAM = "SELECT id, name, created_at FROM teams WHERE id = $1"

# NO KEY UPDATE: renaming must not stall the foreign-key checks of the team's charges.
GET_TEAM_FOR_UPDATE = "SELECT id, name, created_at FROM teams WHERE id = $1 FOR NO KEY UPDATE"

# Listed in commit order (agent_ledger/keyset.py), so a team created during a walk is never skipped.
TEAM_LISTING = Listing(
    name="teams",
    table="teams",
    alias="t",
    columns="t.id, t.name, t.created_at, t.xid, t.seq",
    filters={},
    time_filters=(),
)

RENAME_TEAM = """
UPDATE teams SET name = $2, updated_at = now() WHERE id = $1
RETURNING id, name, created_at
"""

# The unique index teams_name_key (0007) compares names ignoring case; so does this.
FIND_TEAM_BY_NAME = "SELECT id FROM teams WHERE lower(name) = lower($1)"

# A team's balance row lives in the team's own home (0009).
INSERT_BALANCE = "INSERT INTO balances (home_id, owner_id, owner_type) VALUES ($1, $1, 'team')"
