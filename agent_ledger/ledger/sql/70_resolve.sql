-- Closing a hold by request: capture (spend what the call really cost, free the rest) or
-- release (free it all). Expiry is the third way, decided by time (50_holds.sql).
--
-- Like ledger.spend_one, this decides on rows ledger.decide has locked: the agent a, the team
-- t the hold counts against, a child agent's ancestors anc, and the hold h itself.

-- Captures or releases hold h (r.action) for its agent a, at p_at, asked with key p_key_id.
-- A capture takes r.amount, or prices r.model's tokens when r.amount is NULL and r.model is
-- set, or else takes the whole hold.
CREATE OR REPLACE FUNCTION ledger.resolve_one(INOUT a balances, INOUT t balances,
                                              INOUT anc balances[], h holds,
                                              r ledger.request, p_key_id text,
                                              p_at timestamptz, OUT o ledger.outcome)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    x          record;
    e          ledger_entries;
    v_amount   bigint := r.amount;
    v_model    text;
    v_refusal  jsonb;
    -- A capture of the whole hold moves money priced by whoever priced the hold.
    v_priced_by text := CASE WHEN r.amount IS NOT NULL THEN 'client'
                             WHEN r.model IS NOT NULL THEN 'server'
                             ELSE h.priced_by END;
BEGIN
    IF r.idempotency_key IS NOT NULL THEN
        o := ledger.replay(a.home_id, a.owner_id, r.idempotency_key, r.request_hash);
        IF o.status IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;

    IF h.grant_id IS NOT NULL THEN
        -- A grant's escrow is not spent or freed by hand: its child spends it, closing the
        -- grant returns the rest.
        o := ledger.remember(a.home_id, a.owner_id, r.idempotency_key, r.request_hash,
            ledger.refused(ledger.problem(409, 'grant-escrow',
                format('Hold %L is the escrow of grant %L; close the grant instead '
                       '(POST /v1/grants/%s/close).', h.id, h.grant_id, h.grant_id),
                jsonb_build_object('grant_id', h.grant_id))));
        RETURN;
    END IF;
    IF h.status = 'open' AND h.expires_at <= p_at THEN
        -- Its time is up: close it as expired right here (with the agent's other lapsed holds
        -- under this team), then refuse.
        IF h.team_id IS NOT DISTINCT FROM a.team_id THEN
            x := ledger.expire_lapsed(a, t, p_at);
            a := x.a;
            t := x.t;
        ELSE
            h := ledger.close_hold(h, 'expired', NULL, p_at);
            a.held := a.held - h.amount;
            t.held := t.held - ledger.team_share(h);
            e := ledger.next_entry(a, h.team_id, 'expire', h.amount, h.currency, h.model, NULL,
                                   NULL, h.id, NULL, NULL, NULL, NULL, p_at, h.priced_by,
                                   NULL, NULL, NULL, h.run_id);
            a := ledger.link(a, e);
            PERFORM ledger.announce_hold_expired(h, p_at);
        END IF;
        h.status := 'expired';
    END IF;
    IF h.status = 'expired' THEN
        v_refusal := ledger.problem(409, 'hold-expired',
            format('Hold %L expired at %s.', h.id,
                   to_char(h.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
    ELSIF h.status <> 'open' THEN
        v_refusal := ledger.problem(409, 'hold-closed',
            format('Hold %L is already %s.', h.id, h.status));
    ELSIF r.run_id IS NOT NULL AND r.run_id IS DISTINCT FROM h.run_id THEN
        -- A capture belongs to its hold's run (65_runs.sql); it may only repeat it.
        v_refusal := ledger.problem(422, 'validation-error',
            format('run_id must be the run of hold %L (%s), or left out.', h.id,
                   coalesce(quote_literal(h.run_id), 'none')),
            jsonb_build_object('field', 'run_id'));
    ELSIF r.action = 'capture' THEN
        -- An explicit amount booked under the hold's model is the client's price for it.
        v_refusal := ledger.pricing_refusal(a, t, r.amount, coalesce(r.model, h.model), p_at);
        IF v_refusal IS NULL AND v_amount IS NULL AND r.model IS NOT NULL THEN
            -- At the prices in force when the hold was made: the model was called under the
            -- hold, which reserved the worst case at those prices, so a price change while it
            -- is open neither raises a capture past its hold nor lowers it.
            x := ledger.price_tokens(r.model, h.currency, h.created_at, r.input_tokens,
                                     r.cached_input_tokens, r.cache_write_tokens,
                                     r.output_tokens, false);
            v_refusal := x.problem;
            v_amount := x.amount;
        END IF;
        v_amount := coalesce(v_amount, h.amount);
        -- Only the part beyond the hold is new spending, and it must pass the rule on its
        -- own; the whole capture must be within per_charge, even below its hold (a limit may
        -- have been lowered since the hold). A suspended agent may still record what it spent
        -- within a hold taken before (the model was already called), not more.
        IF v_refusal IS NOT NULL THEN
            NULL;
        ELSIF v_amount > h.amount AND a.agent_status = 'suspended' THEN
            v_refusal := ledger.problem(403, 'agent-suspended',
                format('Agent %L is suspended; it may capture up to its hold, not beyond.',
                       a.owner_id));
        ELSIF v_amount > h.amount AND a.parent_id IS NOT NULL
              AND ledger.escrow_refusal(a, anc, p_at) IS NOT NULL THEN
            v_refusal := ledger.escrow_refusal(a, anc, p_at);
        ELSE
            v_refusal := ledger.budget_refusal(
                a, ledger.live_held(a, p_at), t,
                CASE WHEN t.owner_id IS NOT NULL THEN ledger.live_held(t, p_at) END,
                greatest(v_amount - h.amount, 0), v_amount, p_at,
                CASE WHEN v_amount > h.amount THEN 'Capturing more than the hold'
                     ELSE 'This capture' END);
        END IF;
        IF v_refusal IS NULL AND h.run_id IS NOT NULL THEN
            -- the run's cap, on the part beyond the hold only (65_runs.sql)
            v_refusal := ledger.run_refusal(a, h.run_id, greatest(v_amount - h.amount, 0), p_at,
                                            'Capturing more than the hold');
        END IF;
        v_refusal := coalesce(v_refusal, ledger.range_refusal(a, v_amount, 0, p_at),
                              ledger.range_refusal(t, v_amount, 0, p_at),
                              ledger.ancestors_range_refusal(anc, v_amount, p_at),
                              ledger.tally_range_refusal(a, h.team_id, coalesce(r.model, h.model),
                                                         v_priced_by, h.run_id, v_amount, p_at));
    END IF;
    IF v_refusal IS NOT NULL THEN
        o := ledger.remember(a.home_id, a.owner_id, r.idempotency_key, r.request_hash,
                             ledger.refused(v_refusal));
        RETURN;
    END IF;

    x := ledger.expire_lapsed(a, t, p_at);
    a := x.a;
    t := x.t;
    h := ledger.close_hold(h, CASE r.action WHEN 'capture' THEN 'captured' ELSE 'released' END,
                           CASE r.action WHEN 'capture' THEN v_amount END, p_at);
    a.held := a.held - h.amount;
    t.held := t.held - ledger.team_share(h);
    IF r.action = 'capture' THEN
        v_model := coalesce(r.model, h.model);
        a := ledger.with_spent(a, v_amount, p_at);
        IF t.owner_id IS NOT NULL THEN
            t := ledger.with_spent(t, v_amount, p_at);
        END IF;
        PERFORM ledger.add_to_rollups(h.home_id, a.owner_id, h.team_id, v_model, 'capture',
                                      v_amount, p_at, v_priced_by);
        e := ledger.next_entry(a, h.team_id, 'capture', v_amount, h.currency, v_model,
                               r.input_tokens, r.output_tokens, h.id, r.idempotency_key,
                               h.description, h.metadata, p_key_id, p_at, v_priced_by,
                               r.cached_input_tokens, r.cache_write_tokens, r.reasoning_tokens,
                               h.run_id);
        IF h.run_id IS NOT NULL THEN
            PERFORM ledger.note_run(a, h.run_id, v_amount, 1, p_at);
        END IF;
    ELSE
        e := ledger.next_entry(a, h.team_id, 'release', h.amount, h.currency, h.model, NULL,
                               NULL, h.id, NULL, NULL, NULL, p_key_id, p_at, h.priced_by,
                               NULL, NULL, NULL, h.run_id);
    END IF;
    a := ledger.link(a, e);
    IF r.action = 'capture' AND a.parent_id IS NOT NULL THEN
        x := ledger.spend_from_grants(anc, t, a, e);
        anc := x.anc;
        t := x.t;
    END IF;

    o.status := CASE r.action WHEN 'capture' THEN 201 ELSE 200 END;
    o.replayed := false;
    o.entry := e;
    o.hold := h;
    o.budget := ledger.snapshot(a, a.held, p_at);
    o := ledger.remember(a.home_id, a.owner_id, r.idempotency_key, r.request_hash, o);
END;
$$;
