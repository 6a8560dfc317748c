"""SQL owned by the agents feature."""

from agent_ledger.keyset import Listing

AGENT_COLUMNS = (
    "id, name, team_id, status, suspended_reason, metadata, created_at, can_delegate,"
    " parent_id, grant_id"
)

INSERT_AGENT = f"""
INSERT INTO agents (id, name, team_id, metadata) VALUES ($1, $2, $3, $4)
RETURNING {AGENT_COLUMNS}
"""

GET_AGENT = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"

# NO KEY UPDATE: a concurrent charge's foreign-key check on this agent must not wait on us, or
# the charge (holding the balance row this change needs) and this change would deadlock.
GET_AGENT_FOR_UPDATE = f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 FOR NO KEY UPDATE"

# Listed in commit order (agent_ledger/keyset.py): an agent created during a walk is never skipped.
AGENT_LISTING = Listing(
    name="agents",
    table="agents",
    alias="a",
    columns="a.id, a.name, a.team_id, a.status, a.suspended_reason, a.metadata, a.created_at,"
    " a.can_delegate, a.parent_id, a.grant_id, a.xid, a.seq",
    filters={"team_id": "a.team_id = ${}", "status": "a.status = ${}"},
    time_filters=(),
)

UPDATE_AGENT = f"""
UPDATE agents SET name = $2, team_id = $3, status = $4, metadata = $5, can_delegate = $6,
                  suspended_reason = $7,
                  updated_at = now()
WHERE id = $1
RETURNING {AGENT_COLUMNS}
"""

TEAM_EXISTS = "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)"

# The unique index agents_team_name_key (0007): per team ('' for none), names ignoring case.
FIND_AGENT_BY_NAME = """
SELECT id FROM agents WHERE coalesce(team_id, '') = coalesce($1, '') AND lower(name) = lower($2)
"""

# An agent's balance row lives in its home: its team, or the agent itself without one (0009).
INSERT_BALANCE = """
INSERT INTO balances (home_id, owner_id, owner_type, team_id, agent_status)
VALUES (coalesce($2, $1), $1, 'agent', $2, 'active')
"""

LOCK_BALANCE = """
SELECT * FROM balances WHERE home_id = coalesce($2, $1) AND owner_id = $1 FOR UPDATE
"""

HAS_OPEN_HOLDS = """
SELECT EXISTS (
    SELECT 1 FROM holds WHERE home_id = coalesce($2, $1) AND agent_id = $1 AND status = 'open'
)
"""

# The clock money decisions use when the app has none of its own.
DATABASE_CLOCK = "SELECT clock_timestamp()"

# Setting an agent active again (the reset of a tripped breaker) restarts its own velocity
# windows from $5 (the decisions' clock, read by the service: Citus allows no non-immutable
# function in an UPDATE of a distributed table).
SET_BALANCE_STATUS = """
UPDATE balances SET agent_status = $3, suspended_reason = $4,
    breaker_reset_at = CASE WHEN $3 = 'active' THEN $5 ELSE breaker_reset_at END
WHERE home_id = coalesce($2, $1) AND owner_id = $1
"""

# Moving an agent to another team moves its balance row and its stored idempotent answers to
# the new home, as plain statements: on Citus the two homes may be on different nodes, and the
# transaction spans them. Its entries stay where they were written (each records its team).
# The agent's balance row, whole, in its new home ($2: the new team, $4: the old one): every
# column goes along as it is (limits, counters, chain head, settings added by later
# migrations), but for where it lives and the agent's status and its reason. Inserted first,
# then the old row deleted: the two homes differ, so the rows never clash.
COPY_BALANCE = """
INSERT INTO balances
SELECT (jsonb_populate_record(b, jsonb_build_object(
    'home_id', coalesce($2, $1), 'team_id', $2, 'agent_status', $3::text,
    'suspended_reason', $5::text))).*
FROM balances AS b
WHERE b.home_id = coalesce($4, $1) AND b.owner_id = $1
"""

DELETE_BALANCE = "DELETE FROM balances WHERE home_id = coalesce($2, $1) AND owner_id = $1"

COPY_ANSWERS = """
INSERT INTO idempotency_keys (home_id, agent_id, key, request_hash, status, created_at, problem,
                              entry_id, hold_id, budget)
SELECT coalesce($3, $1), agent_id, key, request_hash, status, created_at, problem, entry_id,
       hold_id, budget
FROM idempotency_keys WHERE home_id = coalesce($2, $1) AND agent_id = $1
"""

DELETE_ANSWERS = "DELETE FROM idempotency_keys WHERE home_id = coalesce($2, $1) AND agent_id = $1"

# The budget's alert crossings go along, so a threshold already announced is not announced again.
COPY_CROSSINGS = """
INSERT INTO alert_crossings (home_id, owner_id, "window", period, threshold, event_id, crossed_at)
SELECT coalesce($3, $1), owner_id, "window", period, threshold, event_id, crossed_at
FROM alert_crossings WHERE home_id = coalesce($2, $1) AND owner_id = $1
"""

DELETE_CROSSINGS = "DELETE FROM alert_crossings WHERE home_id = coalesce($2, $1) AND owner_id = $1"

# The agent's runs go along, counters and caps as they are (65_runs.sql): a cap set before the
# move still holds after it.
COPY_RUNS = """
INSERT INTO runs (home_id, agent_id, run_id, limit_total, limit_set_by, admin_limit, spent,
                  charges, created_at, updated_at)
SELECT coalesce($3, $1), agent_id, run_id, limit_total, limit_set_by, admin_limit, spent,
       charges, created_at, updated_at
FROM runs WHERE home_id = coalesce($2, $1) AND agent_id = $1
"""

DELETE_RUNS = "DELETE FROM runs WHERE home_id = coalesce($2, $1) AND agent_id = $1"

# Delegation (issue 17). A child is an agent of its parent's team with a parent and a depth.
INSERT_CHILD = f"""
INSERT INTO agents (id, name, team_id, metadata, parent_id, depth, can_delegate, grant_id,
                    ancestors)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {AGENT_COLUMNS}
"""

HAS_CHILDREN = "SELECT EXISTS (SELECT 1 FROM agents WHERE parent_id = $1)"

# A child's grant, when it is no longer open: such a child stays suspended.
CLOSED_GRANT_OF = """
SELECT id, status FROM grants WHERE home_id = $2 AND child_id = $1 AND status <> 'open'
"""
