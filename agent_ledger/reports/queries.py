"""SQL owned by the reports feature.

Every report reads the same five sources (see ranges.py): the daily rollups for whole days
($1, $2), the hourly rollups for the whole hours at either end ($3..$6) and the ledger itself
for the partial hours at the edges ($7..$10), narrowed by one scope parameter ($11). Each
scope (the whole fleet in one currency, one agent, one team) gets its own statement rather
than ``$11 IS NULL OR ...``, so that prepared statements keep index-friendly plans. $12, when
not null, keeps only money priced by 'server' or by 'client' (migration 0013; money recorded
before then was priced by neither as far as anyone can tell, and is kept only without it).
"""

from __future__ import annotations

__all__ = [
    "OWNER_CURRENCY",
    "ROLLUP_MISMATCHES",
    "SPEND",
    "TOP_SPENDERS",
]

# What narrows each source to the scope; the fleet-wide scope is one currency's agents.
_SCOPES = {
    "fleet": "agent_id IN (SELECT owner_id FROM balances"
    " WHERE owner_type = 'agent' AND currency = $11)",
    "agent": "agent_id = $11",
    # rollup=true: the agent and every child agent below it (delegation, issue 17).
    "agent_tree": "(agent_id = $11 OR agent_id IN (SELECT id FROM agents"
    " WHERE $11 = ANY (ancestors)))",
    "team": "team_id = $11",
}


def _sources(scope: str) -> str:
    where = _SCOPES[scope]
    where += " AND ($12::text IS NULL OR priced_by = $12)"
    hourly = (
        "SELECT agent_id, team_id, model, priced_by, hour AS at, spent, charges FROM spend_rollups"
        f" WHERE hour >= {{}} AND hour < {{}} AND {where}"
    )
    # The partial hours are found by time alone, behind OFFSET 0 (a planning fence): left to
    # combine the time range with the agent, team or kind indexes, a generic plan will happily
    # AND in an agent's every entry (650,000 of them for the busiest agent at 10M).
    partial = (
        "SELECT agent_id, coalesce(team_id, '') AS team_id, coalesce(model, '') AS model,"
        " coalesce(priced_by, '') AS priced_by, created_at AS at, amount AS spent,"
        " CASE WHEN kind IN ('charge', 'capture') THEN 1 ELSE 0 END AS charges"
        " FROM (SELECT agent_id, team_id, model, priced_by, created_at, amount, kind"
        " FROM ledger_entries WHERE created_at >= {} AND created_at < {} OFFSET 0) AS e"
        f" WHERE kind IN ('charge', 'capture', 'adjustment') AND {where}"
    )
    return "\n    UNION ALL\n    ".join(
        [
            "SELECT agent_id, team_id, model, priced_by, day AS at, spent, charges"
            f" FROM spend_rollups_daily WHERE day >= $1 AND day < $2 AND {where}",
            hourly.format("$3", "$4"),
            hourly.format("$5", "$6"),
            partial.format("$7", "$8"),
            partial.format("$9", "$10"),
        ]
    )


# $13: 'agent', 'team' or 'model'; $14: how many groups to return. The total is over every
# group, not just the ones returned. Each group's spend is also split by who priced it. $15:
# by agent, count each child agent's spend as its top-level ancestor's (delegation).
_TOP_SPENDERS = """
WITH spend AS (
    {sources}
), grouped AS (
    SELECT CASE $13::text WHEN 'agent' THEN coalesce(up.ancestors[cardinality(up.ancestors)],
                                                     s.agent_id)
                          WHEN 'team' THEN nullif(s.team_id, '')
                          ELSE nullif(s.model, '') END AS id,
           sum(s.spent) AS spent, sum(s.charges) AS charges,
           coalesce(sum(s.spent) FILTER (WHERE s.priced_by = 'server'), 0) AS server_priced,
           coalesce(sum(s.spent) FILTER (WHERE s.priced_by = 'client'), 0) AS client_priced
    FROM spend AS s
    LEFT JOIN agents AS up ON $15::boolean AND up.id = s.agent_id
    GROUP BY 1
), ranked AS (
    SELECT id, spent, charges, server_priced, client_priced, sum(spent) OVER () AS total
    FROM grouped
    ORDER BY spent DESC, id NULLS LAST
    LIMIT $14
)
SELECT r.id, r.spent, r.charges, r.server_priced, r.client_priced, r.total,
       CASE $13::text WHEN 'agent' THEN a.name WHEN 'team' THEN t.name ELSE r.id END AS name
FROM ranked r
LEFT JOIN agents a ON $13::text = 'agent' AND a.id = r.id
LEFT JOIN teams t ON $13::text = 'team' AND t.id = r.id
ORDER BY r.spent DESC, r.id NULLS LAST
"""

# $13: 'day' or 'hour'. Only buckets with rows come back; the service fills in the rest.
_SPEND = """
WITH spend AS (
    {sources}
)
SELECT date_trunc($13::text, at, 'UTC') AS start, sum(spent) AS spent, sum(charges) AS charges
FROM spend
GROUP BY 1
ORDER BY 1
"""

TOP_SPENDERS = {scope: _TOP_SPENDERS.format(sources=_sources(scope)) for scope in _SCOPES}
SPEND = {scope: _SPEND.format(sources=_sources(scope)) for scope in _SCOPES}

OWNER_CURRENCY = "SELECT currency FROM balances WHERE owner_id = $1 AND owner_type = $2"

# Both rollup tables against the ledger, in one statement and so one snapshot. A missing row
# on either side counts as zero: what must agree is the money, row for row.
_ROLLUP_MISMATCHES = """
WITH ledger AS (
    SELECT agent_id, coalesce(team_id, '') AS team_id, coalesce(model, '') AS model,
           coalesce(priced_by, '') AS priced_by,
           date_trunc('hour', created_at, 'UTC') AS hour, sum(amount) AS spent,
           count(*) FILTER (WHERE kind IN ('charge', 'capture')) AS charges
    FROM ledger_entries
    WHERE kind IN ('charge', 'capture', 'adjustment') {and_agent}
    GROUP BY 1, 2, 3, 4, 5
), ledger_days AS (
    SELECT agent_id, team_id, model, priced_by, date_trunc('day', hour, 'UTC') AS day,
           sum(spent) AS spent, sum(charges) AS charges
    FROM ledger
    GROUP BY 1, 2, 3, 4, 5
), hourly AS (
    SELECT agent_id, team_id, model, priced_by, hour, spent, charges FROM spend_rollups
    WHERE true {and_agent}
), daily AS (
    SELECT agent_id, team_id, model, priced_by, day, spent, charges FROM spend_rollups_daily
    WHERE true {and_agent}
)
SELECT 'hour' AS grain, agent_id, team_id, model, hour AS start,
       coalesce(r.spent, 0) AS rollup_spent, coalesce(l.spent, 0) AS ledger_spent,
       coalesce(r.charges, 0) AS rollup_charges, coalesce(l.charges, 0) AS ledger_charges
FROM ledger l FULL JOIN hourly r USING (agent_id, team_id, model, priced_by, hour)
WHERE coalesce(r.spent, 0) <> coalesce(l.spent, 0)
   OR coalesce(r.charges, 0) <> coalesce(l.charges, 0)
UNION ALL
SELECT 'day', agent_id, team_id, model, day,
       coalesce(r.spent, 0), coalesce(l.spent, 0), coalesce(r.charges, 0), coalesce(l.charges, 0)
FROM ledger_days l FULL JOIN daily r USING (agent_id, team_id, model, priced_by, day)
WHERE coalesce(r.spent, 0) <> coalesce(l.spent, 0)
   OR coalesce(r.charges, 0) <> coalesce(l.charges, 0)
ORDER BY agent_id, start, grain, team_id, model
"""

ROLLUP_MISMATCHES = {
    "fleet": _ROLLUP_MISMATCHES.format(and_agent=""),
    "agent": _ROLLUP_MISMATCHES.format(and_agent="AND agent_id = $1"),
}
