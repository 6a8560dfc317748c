-- Holds: money reserved against every window of an agent and its team until it is captured,
-- released or its time is up.
--
-- A hold counts in `held` on the agent's and the team's balance rows from creation until an
-- entry closes it: capture, release or expire. Its status in `holds` moves with that entry,
-- in the same transaction, and never again (the unique index on ledger_entries(hold_id) for
-- closing kinds makes a second closing entry impossible).

-- h as it was when it was made: open, nothing captured. (The answer to a hold request is
-- replayed as it was first given, whatever happened to the hold since.)
CREATE OR REPLACE FUNCTION ledger.hold_as_created(h holds)
RETURNS holds
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    h.status := 'open';
    h.captured_amount := NULL;
    h.resolved_at := NULL;
    RETURN h;
END;
$$;

-- What hold h counts on its team's held: all of it, but for a hold carved from a grant
-- (within_grant: its money is the grant's escrow, which the team already counts).
CREATE OR REPLACE FUNCTION ledger.team_share(h holds)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN h.within_grant THEN 0 ELSE h.amount END
$$;

-- Closes open hold h with status p_status ('captured', 'released' or 'expired') at p_at.
-- The caller holds the agent's and the hold's team's rows, frees h.amount from their held
-- counters and appends the closing entry.
CREATE OR REPLACE FUNCTION ledger.close_hold(h holds, p_status text, p_captured bigint, p_at timestamptz)
RETURNS holds
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE holds SET status = p_status, captured_amount = p_captured, resolved_at = p_at
    WHERE home_id = h.home_id AND id = h.id AND status = 'open'
    RETURNING * INTO h;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % is not open', h.id;
    END IF;
    RETURN h;
END;
$$;

-- Closes as expired every hold of agent a whose time is up at p_at, in expiry order, each
-- with an expire entry on a's chain; returns a and its team's row t with their held freed.
-- Every decision of an agent calls this under the agent's and team's row locks, so a busy
-- agent's lapsed holds are closed by its own traffic and never pile up (the sweeper only has
-- idle agents left to do). Holds taken under another team (the agent moved since) need that
-- team's lock; the sweeper closes those.
CREATE OR REPLACE FUNCTION ledger.expire_lapsed(INOUT a balances, INOUT t balances, p_at timestamptz)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    h  holds;
    e  ledger_entries;
BEGIN
    IF a.held = 0 THEN
        RETURN;
    END IF;
    FOR h IN
        SELECT * FROM holds
        WHERE home_id = a.home_id AND agent_id = a.owner_id AND status = 'open'
          AND expires_at <= p_at
          AND team_id IS NOT DISTINCT FROM a.team_id
          AND grant_id IS NULL  -- a grant's escrow closes with its grant (68_grants.sql)
        ORDER BY expires_at, id
        FOR UPDATE
    LOOP
        h := ledger.close_hold(h, 'expired', NULL, p_at);
        a.held := a.held - h.amount;
        t.held := t.held - ledger.team_share(h);
        e := ledger.next_entry(a, h.team_id, 'expire', h.amount, h.currency, h.model, NULL, NULL,
                               h.id, NULL, NULL, NULL, NULL, p_at, h.priced_by,
                               NULL, NULL, NULL, h.run_id);
        a := ledger.link(a, e);
        PERFORM ledger.announce_hold_expired(h, p_at);
    END LOOP;
END;
$$;
