"""SQL owned by the dashboard: its sessions, and the few reads no API service already makes.

Everything else a page shows comes from the feature services (reports, budgets, entries, audit,
keys, agents, teams). Budgets are read through ``ledger.budget_of``, the function behind
``GET .../budget``, so a bar on a page and the API never disagree.
"""

from __future__ import annotations

from agent_ledger.entries.queries import ENTRIES

__all__ = [
    "AGENT_COUNTS",
    "AGENT_REFUSALS",
    "BUDGETS_OF",
    "DELETE_EXPIRED_SESSIONS",
    "DELETE_SESSION",
    "FIND_SESSION",
    "INSERT_SESSION",
    "NAMES_OF_TEAMS",
    "NEAREST_LIMITS",
    "OPEN_HOLDS_TOTAL",
    "RECENT_ENTRIES",
]

# --- sessions ------------------------------------------------------------------------------------

INSERT_SESSION = """
INSERT INTO dashboard_sessions (token_hash, key_id, expires_at, client_ip)
VALUES ($1, $2, now() + make_interval(secs => $3), $4)
RETURNING expires_at
"""

DELETE_EXPIRED_SESSIONS = "DELETE FROM dashboard_sessions WHERE expires_at <= now()"

DELETE_SESSION = """
WITH gone AS (DELETE FROM dashboard_sessions WHERE token_hash = $1 RETURNING 1)
SELECT count(*) FROM gone
"""

# A session lives only as long as its key does: revoked or expired, the key ends it.
FIND_SESSION = """
SELECT s.key_id, k.role, s.expires_at
FROM dashboard_sessions AS s
JOIN api_keys AS k ON k.id = s.key_id
WHERE s.token_hash = $1
  AND s.expires_at > now()
  AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now())
  AND k.role IN ('admin', 'auditor')
"""

# --- budgets -------------------------------------------------------------------------------------

# The budgets of some agents or teams ($1: 'agent' or 'team'; $2: their ids; $3: their homes),
# each read by ledger.budget_of as GET .../budget reads it. The rows come from the arrays, not
# from balances: on Citus each call is then its own single-home lookup, where a call per row of
# the distributed table would be a distributed query nested in one.
BUDGETS_OF = """
SELECT o.owner_id, b.budget
FROM unnest($2::text[], $3::text[]) AS o (owner_id, home_id),
     LATERAL ledger.budget_of(o.home_id, $1, o.owner_id, now()) AS b
"""

# The budgets whose fullest limited window is fullest ($1 of them), with its numbers, in one
# set-based read of the balance rows rather than ledger.budget_of per row: spent per window as
# ledger.spent_in counts it (a window that is not the current UTC day or month holds nothing),
# and held as ledger.live_held has it (open holds whose time is up stop counting), summed once
# for every owner. No function takes a balance row, so Citus can run it across nodes. Fullness
# is (spent + held) / limit in exact numeric; a zero limit with anything used is fullest of all.
NEAREST_LIMITS = """
WITH at AS (
    SELECT ledger.month_of(now()) AS month, ledger.day_of(now()) AS day
), lapsed AS (
    SELECT owner_id, sum(amount) AS amount
    FROM (SELECT agent_id AS owner_id, amount FROM holds
          WHERE status = 'open' AND expires_at <= now()
          UNION ALL
          SELECT team_id, amount FROM holds
          WHERE status = 'open' AND expires_at <= now() AND team_id IS NOT NULL) AS h
    GROUP BY owner_id
), budgets AS (
    SELECT b.owner_type, b.owner_id, b.currency, (b.held - coalesce(l.amount, 0))::bigint AS held,
           b.limit_day, b.limit_month, b.limit_total,
           CASE WHEN b.day_start = at.day THEN b.spent_day ELSE 0 END AS spent_day,
           CASE WHEN b.month_start = at.month THEN b.spent_month ELSE 0 END AS spent_month,
           b.spent_total
    FROM balances AS b
    CROSS JOIN at
    LEFT JOIN lapsed AS l ON l.owner_id = b.owner_id
    WHERE b.limit_total IS NOT NULL OR b.limit_month IS NOT NULL OR b.limit_day IS NOT NULL
), windows AS (
    SELECT g.owner_type, g.owner_id, g.currency, g.held, w.name, w.lim, w.spent,
           CASE WHEN w.lim > 0 THEN (w.spent + g.held)::numeric / w.lim
                WHEN w.spent + g.held > 0 THEN 'Infinity'::numeric
                ELSE 0 END AS fullness
    FROM budgets AS g
    CROSS JOIN LATERAL (VALUES ('day', g.limit_day, g.spent_day),
                               ('month', g.limit_month, g.spent_month),
                               ('total', g.limit_total, g.spent_total)) AS w (name, lim, spent)
    WHERE w.lim IS NOT NULL
), fullest AS (
    SELECT DISTINCT ON (owner_id) *
    FROM windows
    ORDER BY owner_id, fullness DESC, name
)
SELECT f.owner_type, f.owner_id, coalesce(a.name, t.name) AS name, f.currency, f.held,
       f.name AS window, f.lim AS limit, f.spent
FROM fullest AS f
LEFT JOIN agents AS a ON f.owner_type = 'agent' AND a.id = f.owner_id
LEFT JOIN teams AS t ON f.owner_type = 'team' AND t.id = f.owner_id
ORDER BY f.fullness DESC, f.owner_id
LIMIT $1
"""

# --- the rest ------------------------------------------------------------------------------------

NAMES_OF_TEAMS = "SELECT id, name FROM teams WHERE id = ANY ($1::text[])"

AGENT_COUNTS = """
SELECT team_id, count(*) AS agents, count(*) FILTER (WHERE status = 'suspended') AS suspended
FROM agents
WHERE team_id = ANY ($1::text[])
GROUP BY team_id
"""

OPEN_HOLDS_TOTAL = """
SELECT currency, count(*) AS holds, sum(amount) AS amount
FROM holds
WHERE status = 'open' AND expires_at > now()
GROUP BY currency
ORDER BY currency
"""

# An agent's newest entries, newest first, read backwards along its chain (the (agent_id,
# chain_seq) index; the listing API pages oldest first).
RECENT_ENTRIES = f"""
SELECT {ENTRIES.columns}
FROM ledger_entries AS e
WHERE e.agent_id = $1
ORDER BY e.chain_seq DESC
LIMIT $2
"""

# Refused requests the ledger kept: those sent with an Idempotency-Key, whose answer is stored
# so that a retry gets the same refusal. A refusal without a key changes nothing and is kept
# nowhere (the API's contract), so it cannot be shown.
AGENT_REFUSALS = """
SELECT k.key, k.status, k.problem, k.created_at
FROM idempotency_keys AS k
WHERE k.home_id = $1 AND k.agent_id = $2 AND k.problem IS NOT NULL
ORDER BY k.created_at DESC
LIMIT $3
"""
