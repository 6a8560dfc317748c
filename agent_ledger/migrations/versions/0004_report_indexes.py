"""Reports: daily spend rollups, kept by a trigger on the hourly ones.

Why: at ten million entries (1,000 agents, 90 days) the hourly rollups of 0002 hold millions of
rows, about one per agent, model and hour, so a month's top spenders would sum ~870,000 rows
(~170 ms on two cores). The daily table holds ~30 rows per agent and model for a month, so the
same report sums ~63,000 (~28 ms per HTTP request; docs/scale-benchmark.md). It is kept by a
row trigger on spend_rollups, that is, inside the very transaction of each spending entry, so
it is always exactly the hourly table summed by UTC day; the charge path pays one more upsert,
on a row of the agent it has locked already (no new lock order, no cross-agent row).

Reports read whole days from here, the whole hours at the ends of a range from spend_rollups,
and the partial hours at the very edges from ledger_entries through 0003's created_at index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = [
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
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
