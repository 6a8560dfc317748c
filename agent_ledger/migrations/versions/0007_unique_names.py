"""Team names unique; agent names unique within their team (both ignoring case).

Why: two teams called "research" (or "Research") look like one in every report and listing,
and an operator who creates a team twice by mistake (a retried script, say) should hear about
it instead of finding two later. An agent name is unique within its team, and among the agents
without a team; the same agent name may appear in different teams. The unique indexes make the
rule hold under concurrent creates and renames; the service turns a violation into 409
``conflict`` naming the existing id.

A database that already holds duplicates is not changed: the migration stops and lists them,
to be renamed (PATCH) before migrating again; renaming by itself would change names people
know and audit events already recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DUPLICATE_TEAMS = """
SELECT lower(name) AS name, string_agg(id, ', ' ORDER BY id) AS ids
FROM teams GROUP BY lower(name) HAVING count(*) > 1 ORDER BY 1 LIMIT 10
"""

DUPLICATE_AGENTS = """
SELECT coalesce(team_id, '(no team)') AS team, lower(name) AS name,
       string_agg(id, ', ' ORDER BY id) AS ids
FROM agents GROUP BY team_id, lower(name) HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 10
"""

UPGRADE = [
    "CREATE UNIQUE INDEX teams_name_key ON teams (lower(name))",
    # '' stands for "no team" (no team id is empty), so team-less agents are unique too.
    "CREATE UNIQUE INDEX agents_team_name_key ON agents (coalesce(team_id, ''), lower(name))",
]

DOWNGRADE = [
    "DROP INDEX agents_team_name_key",
    "DROP INDEX teams_name_key",
]


def _refuse_duplicates() -> None:
    bind = op.get_bind()
    found = [
        f"team name {row.name!r}: {row.ids}" for row in bind.execute(sa.text(DUPLICATE_TEAMS))
    ] + [
        f"agent name {row.name!r} in {row.team}: {row.ids}"
        for row in bind.execute(sa.text(DUPLICATE_AGENTS))
    ]
    if found:
        raise CommandError(
            "names must be unique from this version on (team names, and agent names within a "
            "team, ignoring case); rename these with PATCH, then migrate again: " + "; ".join(found)
        )


def upgrade() -> None:
    _refuse_duplicates()
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
