"""SQL owned by the teams feature."""

INSERT_TEAM = """
INSERT INTO teams (id, name) VALUES ($1, $2)
RETURNING id, name, created_at
"""

GET_TEAM = "SELECT id, name, created_at FROM teams WHERE id = $1"

GET_TEAM_FOR_UPDATE = "SELECT id, name, created_at FROM teams WHERE id = $1 FOR UPDATE"

LIST_TEAMS = """
SELECT id, name, created_at FROM teams
WHERE ($1::text IS NULL OR id > $1)
ORDER BY id
LIMIT $2
"""

RENAME_TEAM = """
UPDATE teams SET name = $2, updated_at = now() WHERE id = $1
RETURNING id, name, created_at
"""
