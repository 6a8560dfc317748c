-- Suspension inside a money decision: the runaway breaker (66_velocity.sql) suspends an agent
-- that broke a velocity rule, and delegation suspends a child whose grant was closed, in the
-- very decision that found it out.
--
-- The balance row is the truth decisions read: a suspended agent's next request is refused
-- 403 agent-suspended (60_spend.sql). The agents row (a reference table on Citus, which a
-- decision on the home's node must not write) follows through the outbox: an 'agent-status'
-- row, whose publishing (agent_ledger/audit/outbox.py) copies status and reason from the
-- balance row to the agents row, locking the agents row first and the balance row second, in
-- the order PATCH /v1/agents takes them. The service publishes a decision's outbox rows right
-- after it, so the agent reads as suspended by the time the refusal is answered.

-- Suspends agent a for p_reason ('velocity' or 'grant_closed'; staff suspend through PATCH) at
-- p_at, in the caller's decision, on rows the caller has locked (a, and t its team's, or NULL):
-- - a's lapsed holds are closed as expired (ledger.expire_lapsed), then every other open hold
--   of a but the escrows of its grants to children is released: a release entry on a's chain
--   (key_id NULL: the system released it), its amount freed from a's held and t's, as a
--   release by request frees it;
-- - a.agent_status becomes 'suspended' and a.suspended_reason p_reason, unless a was already
--   suspended (its reason then stays, and nothing is announced: it was announced then);
-- - announced through the outbox in this transaction: the staff audit event agent.suspended
--   (actor_role 'system', actor_key_id p_key_id: the key whose request tripped it; after: the
--   status, the reason, the holds released and p_detail, e.g. the velocity rule broken and
--   what was observed), the webhook event agent.suspended (data: agent_id, team_id, reason,
--   and p_detail's members), and the 'agent-status' row.
-- It does not save a or t: the caller (ledger.decide) writes each changed row once.
CREATE OR REPLACE FUNCTION ledger.suspend(INOUT a balances, INOUT t balances, p_reason text,
                                          p_at timestamptz, p_key_id text,
                                          p_detail jsonb DEFAULT NULL)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    x           record;
    h           holds;
    e           ledger_entries;
    v_released  jsonb := '[]';
    v_data      jsonb;
BEGIN
    x := ledger.expire_lapsed(a, t, p_at);
    a := x.a;
    t := x.t;
    IF a.held > 0 THEN
        -- An agent cannot change team while it has open holds, so all of them count against
        -- its current team t (the filter says so rather than trusting it).
        FOR h IN
            SELECT * FROM holds
            WHERE home_id = a.home_id AND agent_id = a.owner_id AND status = 'open'
              AND team_id IS NOT DISTINCT FROM a.team_id
              -- HOOK (delegation): a grant's escrow (a parent's hold for a child) is not
              -- released here: it closes with its grant (68_grants.sql), and the children of
              -- a suspended agent are refused meanwhile (an ancestor is suspended).
              AND grant_id IS NULL
            ORDER BY created_at, id
            FOR UPDATE
        LOOP
            h := ledger.close_hold(h, 'released', NULL, p_at);
            a.held := a.held - h.amount;
            IF t.owner_id IS NOT NULL THEN
                -- as a release by request: a child's hold is carved from its grant's escrow,
                -- which is what the team counts
                t.held := t.held - ledger.team_share(h);
            END IF;
            e := ledger.next_entry(a, h.team_id, 'release', h.amount, h.currency, h.model, NULL,
                                   NULL, h.id, NULL,
                                   format('Released: agent suspended (%s).', p_reason), NULL,
                                   NULL, p_at, h.priced_by, NULL, NULL, NULL, h.run_id);
            a := ledger.link(a, e);
            v_released := v_released || jsonb_build_object(
                'hold_id', h.id, 'amount', ledger.decimal_text(h.amount), 'entry_id', e.id);
        END LOOP;
    END IF;
    IF a.agent_status = 'suspended' THEN
        RETURN;
    END IF;
    a.agent_status := 'suspended';
    a.suspended_reason := p_reason;

    PERFORM ledger.announce(a.home_id, 'audit', jsonb_build_object(
        'actor_key_id', p_key_id, 'actor_role', 'system', 'action', 'agent.suspended',
        'target_type', 'agent', 'target_id', a.owner_id,
        'before', jsonb_build_object('status', 'active', 'suspended_reason', NULL),
        'after', jsonb_build_object('status', 'suspended', 'suspended_reason', p_reason,
                                    'at', ledger.rfc3339(p_at), 'released_holds', v_released)
                 || coalesce(p_detail, '{}')));
    v_data := jsonb_build_object('agent_id', a.owner_id, 'team_id', a.team_id,
                                 'name', (SELECT name FROM agents WHERE id = a.owner_id),
                                 'reason', p_reason, 'released_holds', v_released)
              || coalesce(p_detail, '{}');
    PERFORM ledger.announce_event(a.home_id, ledger.new_id('evt'), 'agent.suspended',
                                  a.owner_id, a.team_id, v_data, p_at);
    PERFORM ledger.announce(a.home_id, 'agent-status',
                            jsonb_build_object('agent_id', a.owner_id));
END;
$$;
