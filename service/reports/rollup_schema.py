"""Schema the reports need beyond migration 0002: daily rollups and a created_at index.

Why daily rollups: at ten million entries (1,000 agents, 90 days) the hourly rollups hold
millions of rows, about one per agent, model and hour, so a month's top spenders would sum
over a million rows (~170 ms on two cores). The daily table holds ~30 rows per agent and
model for a month, so the same report sums tens of thousands. It is kept by a trigger on
``spend_rollups``, that is, inside the very transaction of each spending entry, and so is
always exactly the hourly table summed by UTC day.

Why the index: the partial hours at the edges of a range are summed from ``ledger_entries``;
without an index on ``created_at`` that would scan the whole ledger.

These statements are the body of migration 0004 (see ``UPGRADE`` / ``DOWNGRADE``); until that
migration is in the tree, ``ensure_rollup_schema`` applies them to a database that lacks them
(tests and the benchmark loader call it; it is a no-op once the migration has run).
"""

from __future__ import annotations

import asyncpg

__all__ = ["DOWNGRADE", "UPGRADE", "ensure_rollup_schema"]

UPGRADE = [
    "CREATE INDEX ledger_entries_created_at_idx ON ledger_entries (created_at)",
    """
    CREATE TABLE spend_rollups_daily (
        agent_id  text NOT NULL,
        team_id   text NOT NULL DEFAULT '',
        model     text NOT NULL DEFAULT '',
        day       timestamptz NOT NULL CHECK (day = date_trunc('day', day, 'UTC')),
        spent     bigint NOT NULL DEFAULT 0,
        charges   bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (agent_id, day, team_id, model)
    )
    """,
    "CREATE INDEX spend_rollups_daily_day_idx ON spend_rollups_daily (day)",
    "CREATE INDEX spend_rollups_daily_team_day_idx ON spend_rollups_daily (team_id, day)",
    """
    CREATE FUNCTION spend_rollups_daily_add(p_agent_id text, p_team_id text, p_model text,
                                            p_hour timestamptz, p_spent bigint, p_charges bigint)
    RETURNS void LANGUAGE sql AS $$
        INSERT INTO spend_rollups_daily AS d (agent_id, team_id, model, day, spent, charges)
        VALUES (p_agent_id, p_team_id, p_model, date_trunc('day', p_hour, 'UTC'), p_spent,
                p_charges)
        ON CONFLICT (agent_id, day, team_id, model) DO UPDATE
        SET spent = d.spent + EXCLUDED.spent, charges = d.charges + EXCLUDED.charges
    $$
    """,
    # Every change to an hourly row moves its day's row by the same amount. The charge path
    # only ever adds to one (agent, team, model, hour), so it costs one upsert; a change of
    # key (never done by the service) moves the amounts from the old day row to the new.
    """
    CREATE FUNCTION spend_rollups_follow_daily() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.agent_id = NEW.agent_id AND OLD.team_id = NEW.team_id
           AND OLD.model = NEW.model
           AND date_trunc('day', OLD.hour, 'UTC') = date_trunc('day', NEW.hour, 'UTC') THEN
            PERFORM spend_rollups_daily_add(NEW.agent_id, NEW.team_id, NEW.model, NEW.hour,
                                            NEW.spent - OLD.spent, NEW.charges - OLD.charges);
            RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            PERFORM spend_rollups_daily_add(OLD.agent_id, OLD.team_id, OLD.model, OLD.hour,
                                            -OLD.spent, -OLD.charges);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            PERFORM spend_rollups_daily_add(NEW.agent_id, NEW.team_id, NEW.model, NEW.hour,
                                            NEW.spent, NEW.charges);
        END IF;
        RETURN NULL;
    END;
    $$
    """,
    """
    CREATE FUNCTION spend_rollups_truncate_daily() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        TRUNCATE spend_rollups_daily;
        RETURN NULL;
    END;
    $$
    """,
    """
    CREATE TRIGGER spend_rollups_follow_daily AFTER INSERT OR UPDATE OR DELETE ON spend_rollups
        FOR EACH ROW EXECUTE FUNCTION spend_rollups_follow_daily()
    """,
    """
    CREATE TRIGGER spend_rollups_truncate_daily AFTER TRUNCATE ON spend_rollups
        FOR EACH STATEMENT EXECUTE FUNCTION spend_rollups_truncate_daily()
    """,
    # CREATE TRIGGER holds a lock that keeps writers out until this transaction commits, so
    # the backfill sees every hourly row the trigger did not.
    """
    INSERT INTO spend_rollups_daily (agent_id, team_id, model, day, spent, charges)
    SELECT agent_id, team_id, model, date_trunc('day', hour, 'UTC'), sum(spent), sum(charges)
    FROM spend_rollups
    GROUP BY agent_id, team_id, model, date_trunc('day', hour, 'UTC')
    """,
]

DOWNGRADE = [
    "DROP TRIGGER spend_rollups_truncate_daily ON spend_rollups",
    "DROP TRIGGER spend_rollups_follow_daily ON spend_rollups",
    "DROP FUNCTION spend_rollups_truncate_daily()",
    "DROP FUNCTION spend_rollups_follow_daily()",
    "DROP FUNCTION spend_rollups_daily_add(text, text, text, timestamptz, bigint, bigint)",
    "DROP TABLE spend_rollups_daily",
    "DROP INDEX ledger_entries_created_at_idx",
]


async def ensure_rollup_schema(conn: asyncpg.Connection) -> bool:
    """Apply ``UPGRADE`` unless the daily rollups exist already; True when it applied it."""
    async with conn.transaction():
        # Serialise concurrent callers (two test sessions, a loader) on one advisory lock.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agent-ledger:reports'))")
        if await conn.fetchval("SELECT to_regclass('public.spend_rollups_daily') IS NOT NULL"):
            return False
        for statement in UPGRADE:
            await conn.execute(statement)
    return True
