-- Spending: charges, holds and adjustments.
--
-- ledger.spend_one decides one request on rows ledger.decide (75_decide.sql) has locked: the
-- agent's balance a, its team's t (NULL for an agent without a team) and, for a child agent
-- spending a grant (68_grants.sql), its ancestors' (parent first; NULL for any other agent).
-- It changes them in memory only; decide writes every balance row once, after the whole batch.

-- One charge, hold or adjustment for agent a, at p_at, asked with key p_key_id. Returns a and t
-- as the decision leaves them, and its outcome (already stored under r's Idempotency-Key).
CREATE OR REPLACE FUNCTION ledger.spend_one(INOUT a balances, INOUT t balances,
                                            INOUT anc balances[],
                                            r ledger.request, p_key_id text,
                                            p_at timestamptz, OUT o ledger.outcome)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    x           record;
    h           holds;
    e           ledger_entries;
    v_amount    bigint := r.amount;
    v_currency  text;
    v_refusal   jsonb;
    -- An explicit amount is the client's price; without one the server prices the tokens.
    v_priced_by text := CASE WHEN r.amount IS NULL THEN 'server' ELSE 'client' END;
BEGIN
    IF r.idempotency_key IS NOT NULL THEN
        o := ledger.replay(a.home_id, a.owner_id, r.idempotency_key, r.request_hash);
        IF o.status IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;

    -- Every refusal below is an answer like any other: stored under the key, nothing else
    -- written (so lapsed holds are only closed once the request is known to go through).
    IF r.action <> 'adjustment' AND a.agent_status = 'suspended' THEN
        v_refusal := ledger.problem(403, 'agent-suspended',
            format('Agent %L is suspended and may not spend.', a.owner_id));
    ELSIF a.parent_id IS NOT NULL THEN
        v_refusal := CASE WHEN r.action = 'adjustment' THEN ledger.problem(422,
                              'validation-error',
                              format('Agent %L spends a grant of agent %L: adjust the parent, '
                                     'whose grant pays for it.', a.owner_id, a.parent_id),
                              jsonb_build_object('field', 'agent_id'))
                          ELSE ledger.escrow_refusal(a, anc, p_at) END;
    END IF;
    v_currency := coalesce(r.currency, a.currency);
    IF v_refusal IS NULL
       AND (v_currency <> a.currency OR (t.owner_id IS NOT NULL AND v_currency <> t.currency))
    THEN
        v_refusal := ledger.problem(422, 'currency-mismatch',
            format('The budget is kept in %s; this request is in %s.',
                   CASE WHEN v_currency <> a.currency THEN a.currency ELSE t.currency END,
                   v_currency));
    END IF;
    IF v_refusal IS NULL AND r.action <> 'adjustment' THEN
        v_refusal := ledger.pricing_refusal(a, t, r.amount, r.model, p_at);
    END IF;
    IF v_refusal IS NULL AND v_amount IS NULL THEN
        -- A hold reserves the worst case its counts allow (ledger.price_tokens says which).
        x := ledger.price_tokens(r.model, v_currency, p_at, r.input_tokens,
                                 r.cached_input_tokens, r.cache_write_tokens, r.output_tokens,
                                 r.action = 'hold');
        v_refusal := x.problem;
        v_amount := x.amount;
    END IF;
    IF v_refusal IS NULL THEN
        IF r.action = 'adjustment' THEN
            IF v_amount < 0 AND a.spent_total < -v_amount THEN
                v_refusal := ledger.problem(422, 'validation-error',
                    format('A refund of more than the agent has ever spent (%s nano-units) '
                           'is refused.', a.spent_total), jsonb_build_object('field', 'amount'));
            END IF;
        ELSE
            -- The agent's own lapsed holds are closed below, before anything counts them.
            v_refusal := ledger.budget_refusal(
                a, ledger.live_held(a, p_at), t,
                CASE WHEN t.owner_id IS NOT NULL THEN ledger.live_held(t, p_at) END,
                v_amount, v_amount, p_at,
                CASE r.action WHEN 'hold' THEN 'This hold' ELSE 'This charge' END);
        END IF;
    END IF;
    -- A run's cap (65_runs.sql), after the agent's and team's limits; never read without a run.
    IF v_refusal IS NULL AND r.run_id IS NOT NULL AND r.action <> 'adjustment' THEN
        v_refusal := ledger.run_refusal(a, r.run_id, v_amount, p_at,
            CASE r.action WHEN 'hold' THEN 'This hold' ELSE 'This charge' END);
    END IF;
    v_refusal := coalesce(v_refusal,
        ledger.range_refusal(a, CASE WHEN r.action = 'hold' THEN 0 ELSE v_amount END,
                             CASE WHEN r.action = 'hold' THEN v_amount ELSE 0 END, p_at),
        ledger.range_refusal(t, CASE WHEN r.action = 'hold' THEN 0 ELSE v_amount END,
                             CASE WHEN r.action = 'hold' THEN v_amount ELSE 0 END, p_at),
        ledger.ancestors_range_refusal(anc, CASE WHEN r.action = 'hold' THEN 0 ELSE v_amount END,
                                       p_at),
        -- the run's and the rollups' counters, which a hold does not move
        CASE WHEN r.action <> 'hold' THEN
            ledger.tally_range_refusal(a, a.team_id, r.model, v_priced_by, r.run_id, v_amount,
                                       p_at) END);
    -- HOOK (breaker): a charge or hold that would break a velocity rule of the agent or its
    -- team is refused, and trips the breaker in this decision (66_velocity.sql). The one
    -- refusal that writes (the suspension, its hold releases and announcements). Budgets
    -- without rules cost nothing here.
    IF v_refusal IS NULL AND r.action IN ('charge', 'hold')
       AND (a.velocity IS NOT NULL OR t.velocity IS NOT NULL) THEN
        x := ledger.trip_breaker(a, t, v_amount, p_key_id, p_at);
        a := x.a;
        t := x.t;
        v_refusal := x.problem;
    END IF;
    IF v_refusal IS NOT NULL THEN
        o := ledger.remember(a.home_id, a.owner_id, r.idempotency_key, r.request_hash,
                             ledger.refused(v_refusal));
        RETURN;
    END IF;

    x := ledger.expire_lapsed(a, t, p_at);
    a := x.a;
    t := x.t;
    IF r.action = 'hold' THEN
        INSERT INTO holds (home_id, id, agent_id, team_id, amount, currency, model, description,
                           metadata, key_id, created_at, expires_at, priced_by, run_id,
                           within_grant)
        VALUES (a.home_id, ledger.new_id('hold'), a.owner_id, a.team_id, v_amount, v_currency, r.model,
                r.description, coalesce(r.metadata, '{}'::jsonb), p_key_id, p_at,
                p_at + make_interval(secs => r.ttl_seconds), v_priced_by, r.run_id,
                a.parent_id IS NOT NULL)
        RETURNING * INTO h;
        a.held := a.held + v_amount;
        t.held := t.held + ledger.team_share(h);
    ELSE
        a := ledger.with_spent(a, v_amount, p_at);
        IF t.owner_id IS NOT NULL THEN
            t := ledger.with_spent(t, v_amount, p_at);
        END IF;
        PERFORM ledger.add_to_rollups(a.home_id, a.owner_id, a.team_id, r.model, r.action,
                                      v_amount, p_at, v_priced_by);
    END IF;
    e := ledger.next_entry(a, a.team_id, r.action, v_amount, v_currency, r.model,
                           r.input_tokens, r.output_tokens, h.id, r.idempotency_key,
                           r.description, r.metadata, p_key_id, p_at, v_priced_by,
                           r.cached_input_tokens, r.cache_write_tokens, r.reasoning_tokens,
                           r.run_id);
    a := ledger.link(a, e);
    IF r.run_id IS NOT NULL THEN
        -- the run's counters: a charge spends, a hold only uses the run
        PERFORM ledger.note_run(a, r.run_id, CASE WHEN r.action = 'hold' THEN 0 ELSE v_amount END,
                                CASE WHEN r.action = 'hold' THEN 0 ELSE 1 END, p_at);
    END IF;
    IF r.action = 'charge' AND a.parent_id IS NOT NULL THEN
        x := ledger.spend_from_grants(anc, t, a, e);
        anc := x.anc;
        t := x.t;
    END IF;

    IF r.action = 'adjustment' THEN
        -- A staff action: its audit event goes out with it, through the outbox.
        PERFORM ledger.announce(a.home_id, 'audit', jsonb_build_object(
            'actor_key_id', p_key_id, 'actor_role', 'admin', 'action', 'adjustment.created',
            'target_type', 'agent', 'target_id', a.owner_id,
            'after', jsonb_build_object(
                'id', e.id, 'seq', e.seq, 'agent_id', e.agent_id, 'team_id', e.team_id,
                'kind', e.kind, 'amount', ledger.decimal_text(e.amount),
                'currency', e.currency, 'reason', e.description, 'key_id', e.key_id,
                'created_at', e.created_at, 'hash', encode(e.hash, 'hex')),
            'request_id', r.context ->> 'request_id', 'client_ip', r.context ->> 'client_ip'));
    END IF;

    o.status := 201;
    o.replayed := false;
    o.entry := e;
    o.hold := h;
    o.budget := ledger.snapshot(a, a.held, p_at);
    o := ledger.remember(a.home_id, a.owner_id, r.idempotency_key, r.request_hash, o);
END;
$$;

-- Writes an outbox row in the decision's transaction: published afterwards, at least once
-- (agent_ledger/audit/outbox.py moves 'audit' rows to the staff audit log).
CREATE OR REPLACE FUNCTION ledger.announce(p_home_id text, p_topic text, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO outbox (home_id, id, topic, payload)
    VALUES (p_home_id, ledger.new_id('evt'), p_topic, p_payload);
END;
$$;

-- The report rollups of a spending entry (charge, capture or adjustment): its hour's and its
-- day's rows, in the decision's transaction. Charges and captures also count as charges.
-- Rows are kept apart by who priced the money (p_priced_by), so reports can tell them apart.
CREATE OR REPLACE FUNCTION ledger.add_to_rollups(p_home_id text, p_agent_id text,
                                                 p_team_id text, p_model text, p_kind text,
                                                 p_amount bigint, p_at timestamptz,
                                                 p_priced_by text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_charges  bigint := CASE WHEN p_kind IN ('charge', 'capture') THEN 1 ELSE 0 END;
BEGIN
    -- One statement for both rows: half the executor start-ups of two.
    WITH hourly AS (
        INSERT INTO spend_rollups AS r (home_id, agent_id, team_id, model, hour, spent, charges,
                                        priced_by)
        VALUES (p_home_id, p_agent_id, coalesce(p_team_id, ''), coalesce(p_model, ''),
                date_trunc('hour', p_at, 'UTC'), p_amount, v_charges, coalesce(p_priced_by, ''))
        ON CONFLICT (home_id, agent_id, hour, team_id, model, priced_by) DO UPDATE
        SET spent = r.spent + EXCLUDED.spent, charges = r.charges + EXCLUDED.charges
    )
    INSERT INTO spend_rollups_daily AS d (home_id, agent_id, team_id, model, day, spent, charges,
                                          priced_by)
    VALUES (p_home_id, p_agent_id, coalesce(p_team_id, ''), coalesce(p_model, ''),
            date_trunc('day', p_at, 'UTC'), p_amount, v_charges, coalesce(p_priced_by, ''))
    ON CONFLICT (home_id, agent_id, day, team_id, model, priced_by) DO UPDATE
    SET spent = d.spent + EXCLUDED.spent, charges = d.charges + EXCLUDED.charges;
END;
$$;
