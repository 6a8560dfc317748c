-- The sweeper: expire entries for the lapsed holds of idle agents.
--
-- A lapsed hold stops counting the moment its time is up, and a busy agent's own decisions
-- close its lapsed holds (ledger.expire_lapsed). What is left is agents that have stopped
-- spending: the background sweeper (agent_ledger/ledger/sweeper.py) walks them in agent id
-- order, a batch per pass, resuming where the last pass stopped, so every one is reached in
-- turn however many there are.

-- Closes one agent's lapsed holds, in expiry order; returns how many. An agent whose row
-- another transaction holds is skipped (SKIP LOCKED): that transaction is a decision of the
-- agent's, which closes its holds itself, or a later pass will. So any number of processes can
-- sweep side by side without waiting on each other or on the agents. All of an agent's holds
-- live in its home (it cannot change team while it has any open), so this runs on one node.
CREATE OR REPLACE FUNCTION ledger.sweep_agent(p_home_id text, p_agent_id text, p_at timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    a        balances;
    t        balances;
    h        holds;
    e        ledger_entries;
    v_at     timestamptz;
    v_swept  integer := 0;
BEGIN
    SELECT * INTO a FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = p_agent_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF a.team_id IS NOT NULL THEN
        SELECT * INTO t FROM balances
        WHERE home_id = p_home_id AND owner_type = 'team' AND owner_id = a.team_id
        FOR UPDATE;
    END IF;
    v_at := coalesce(p_at, clock_timestamp());
    FOR h IN
        SELECT * FROM holds
        WHERE home_id = p_home_id AND agent_id = p_agent_id AND status = 'open'
          AND expires_at <= v_at
          AND grant_id IS NULL  -- a grant's escrow closes with its grant (ledger.sweep_grant)
        ORDER BY expires_at, id
        FOR UPDATE
    LOOP
        h := ledger.close_hold(h, 'expired', NULL, v_at);
        a.held := a.held - h.amount;
        t.held := t.held - ledger.team_share(h);
        e := ledger.next_entry(a, h.team_id, 'expire', h.amount, h.currency, h.model, NULL, NULL,
                               h.id, NULL, NULL, NULL, NULL, v_at, h.priced_by,
                               NULL, NULL, NULL, h.run_id);
        a := ledger.link(a, e);
        PERFORM ledger.announce_hold_expired(h, v_at);
        v_swept := v_swept + 1;
    END LOOP;
    PERFORM ledger.save_balance(a);
    IF t.owner_id IS NOT NULL AND v_swept > 0 THEN
        PERFORM ledger.save_balance(t);
    END IF;
    RETURN v_swept;
END;
$$;
