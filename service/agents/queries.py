"""SQL owned by the agents feature."""

AGENT_COLUMNS = "id, name, team_id, status, metadata, created_at"

INSERT_AGENT = f"""
INSERT INTO agents (id, name, team_id, metadata) VALUES ($1, $2, $3, $4)
RETURNING {AGENT_COLUMNS}
"""

GET_AGENT = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"

GET_AGENT_FOR_UPDATE = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 FOR UPDATE"

LIST_AGENTS = f"""
SELECT {AGENT_COLUMNS} FROM agents
WHERE ($1::text IS NULL OR id > $1)
  AND ($2::text IS NULL OR team_id = $2)
  AND ($3::text IS NULL OR status = $3)
ORDER BY id
LIMIT $4
"""

UPDATE_AGENT = f"""
UPDATE agents SET name = $2, team_id = $3, status = $4, metadata = $5, updated_at = now()
WHERE id = $1
RETURNING {AGENT_COLUMNS}
"""

TEAM_EXISTS = "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)"
