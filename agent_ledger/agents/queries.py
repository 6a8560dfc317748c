"""SQL owned by the agents feature."""

from agent_ledger.keyset import Listing

AGENT_COLUMNS = "id, name, team_id, status, metadata, created_at"

INSERT_AGENT = f"""
INSERT INTO agents (id, name, team_id, metadata) VALUES ($1, $2, $3, $4)
RETURNING {AGENT_COLUMNS}
"""

GET_AGENT = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"

# NO KEY UPDATE: a concurrent charge's foreign-key check on this agent must not wait on us, or
# the charge (holding the balance row our trigger needs) and this change would deadlock.
GET_AGENT_FOR_UPDATE = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 FOR NO KEY UPDATE"

# Listed in commit order (agent_ledger/keyset.py): an agent created during a walk is never skipped.
AGENT_LISTING = Listing(
    name="agents",
    table="agents",
    alias="a",
    columns="a.id, a.name, a.team_id, a.status, a.metadata, a.created_at, a.xid, a.seq",
    filters={"team_id": "a.team_id = ${}", "status": "a.status = ${}"},
    time_filters=(),
)

UPDATE_AGENT = f"""
UPDATE agents SET name = $2, team_id = $3, status = $4, metadata = $5, updated_at = now()
WHERE id = $1
RETURNING {AGENT_COLUMNS}
"""

TEAM_EXISTS = "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)"

# The unique index agents_team_name_key (0007): per team ('' for none), names ignoring case.
FIND_AGENT_BY_NAME = """
SELECT id FROM agents WHERE coalesce(team_id, '') = coalesce($1, '') AND lower(name) = lower($2)
"""
