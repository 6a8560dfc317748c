-- Closing a hold by request: capture (spend what the call really cost, free the rest) or
-- release (free it all). Expiry is the third way, decided by time (50_holds.sql).

-- Captures or releases hold p_hold_id (p_action 'capture' or 'release'). p_caller_agent_id
-- is the agent an agent key belongs to (NULL for staff), which may act on its own holds only.
-- A capture takes p_amount, or prices p_model's tokens when p_amount is NULL and p_model is
-- set, or else takes the whole hold.
CREATE OR REPLACE FUNCTION ledger.resolve_hold(
    p_action           text,
    p_hold_id          text,
    p_caller_agent_id  text,
    p_amount           bigint,
    p_model            text,
    p_input_tokens     bigint,
    p_output_tokens    bigint,
    p_key_id           text,
    p_idempotency_key  text,
    p_request_hash     bytea,
    p_at               timestamptz
)
RETURNS ledger.outcome
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    a         balances;
    t         balances;
    o         ledger.outcome;
    r         record;
    h         holds;
    e         ledger_entries;
    v_at      timestamptz;
    v_amount  bigint := p_amount;
    v_model   text;
    v_refusal jsonb;
BEGIN
    IF p_action NOT IN ('capture', 'release') THEN
        RAISE EXCEPTION 'ledger.resolve_hold: unknown action %', p_action;
    END IF;
    SELECT * INTO h FROM holds WHERE id = p_hold_id;
    IF NOT FOUND OR (p_caller_agent_id IS NOT NULL AND h.agent_id <> p_caller_agent_id) THEN
        -- Another agent's hold is reported as missing: its existence is not theirs to know.
        RETURN ledger.refused(ledger.problem(404, 'not-found',
            format('No hold with id %L.', p_hold_id)));
    END IF;
    -- The agent's row, then the team the hold counts against, then the hold itself.
    SELECT * INTO a FROM balances WHERE owner_id = h.agent_id FOR UPDATE;
    IF h.team_id IS NOT NULL THEN
        SELECT * INTO t FROM balances WHERE owner_id = h.team_id FOR UPDATE;
    END IF;
    SELECT * INTO h FROM holds WHERE id = p_hold_id FOR UPDATE;
    IF p_idempotency_key IS NOT NULL THEN
        o := ledger.replay(h.agent_id, p_idempotency_key, p_request_hash);
        IF o.status IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    v_at := coalesce(p_at, clock_timestamp());

    IF h.status = 'open' AND h.expires_at <= v_at THEN
        -- Its time is up: close it as expired right here (with the agent's other lapsed holds
        -- under this team), then refuse.
        IF h.team_id IS NOT DISTINCT FROM a.team_id THEN
            r := ledger.expire_lapsed(a, t, v_at);
            a := r.a;
            t := r.t;
        ELSE
            h := ledger.close_hold(h, 'expired', NULL, v_at);
            a.held := a.held - h.amount;
            t.held := t.held - h.amount;
            e := ledger.next_entry(a, h.team_id, 'expire', h.amount, h.currency, h.model, NULL,
                                   NULL, h.id, NULL, NULL, NULL, NULL, v_at);
            a := ledger.link(a, e);
        END IF;
        PERFORM ledger.save_balance(a);
        IF t.owner_id IS NOT NULL THEN
            PERFORM ledger.save_balance(t);
        END IF;
        h.status := 'expired';
    END IF;
    IF h.status = 'expired' THEN
        RETURN ledger.remember(h.agent_id, p_idempotency_key, p_request_hash, ledger.refused(
            ledger.problem(409, 'hold-expired',
                format('Hold %L expired at %s.', h.id,
                       to_char(h.expires_at AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))));
    ELSIF h.status <> 'open' THEN
        RETURN ledger.remember(h.agent_id, p_idempotency_key, p_request_hash, ledger.refused(
            ledger.problem(409, 'hold-closed',
                format('Hold %L is already %s.', h.id, h.status))));
    END IF;

    IF p_action = 'capture' THEN
        v_model := coalesce(p_model, h.model);
        IF v_amount IS NULL AND p_model IS NOT NULL THEN
            r := ledger.price_tokens(p_model, h.currency, p_input_tokens, p_output_tokens);
            IF r.problem IS NOT NULL THEN
                RETURN ledger.remember(h.agent_id, p_idempotency_key, p_request_hash,
                                       ledger.refused(r.problem));
            END IF;
            v_amount := r.amount;
        END IF;
        v_amount := coalesce(v_amount, h.amount);
        -- Only the part beyond the hold is new spending, and it must pass the rule on its
        -- own; the whole capture must be within per_charge, even below its hold (a limit may
        -- have been lowered since the hold). A suspended agent may still record what it spent
        -- within a hold taken before (the model was already called), not more.
        IF v_amount > h.amount AND a.agent_status = 'suspended' THEN
            v_refusal := ledger.problem(403, 'agent-suspended',
                format('Agent %L is suspended; it may capture up to its hold, not beyond.',
                       h.agent_id));
        ELSE
            v_refusal := ledger.budget_refusal(
                a, ledger.live_held(a, v_at), t,
                CASE WHEN t.owner_id IS NOT NULL THEN ledger.live_held(t, v_at) END,
                greatest(v_amount - h.amount, 0), v_amount, v_at,
                CASE WHEN v_amount > h.amount THEN 'Capturing more than the hold'
                     ELSE 'This capture' END);
        END IF;
        v_refusal := coalesce(v_refusal, ledger.range_refusal(a, v_amount, 0, v_at),
                              ledger.range_refusal(t, v_amount, 0, v_at));
        IF v_refusal IS NOT NULL THEN
            RETURN ledger.remember(h.agent_id, p_idempotency_key, p_request_hash,
                                   ledger.refused(v_refusal));
        END IF;
    END IF;

    r := ledger.expire_lapsed(a, t, v_at);
    a := r.a;
    t := r.t;
    h := ledger.close_hold(h, CASE p_action WHEN 'capture' THEN 'captured' ELSE 'released' END,
                           CASE p_action WHEN 'capture' THEN v_amount END, v_at);
    a.held := a.held - h.amount;
    t.held := t.held - h.amount;
    IF p_action = 'capture' THEN
        a := ledger.with_spent(a, v_amount, v_at);
        IF t.owner_id IS NOT NULL THEN
            t := ledger.with_spent(t, v_amount, v_at);
        END IF;
        PERFORM ledger.add_to_rollups(h.agent_id, h.team_id, v_model, 'capture', v_amount, v_at);
        e := ledger.next_entry(a, h.team_id, 'capture', v_amount, h.currency, v_model,
                               p_input_tokens, p_output_tokens, h.id, p_idempotency_key,
                               h.description, h.metadata, p_key_id, v_at);
    ELSE
        e := ledger.next_entry(a, h.team_id, 'release', h.amount, h.currency, h.model, NULL,
                               NULL, h.id, NULL, NULL, NULL, p_key_id, v_at);
    END IF;
    a := ledger.link(a, e);
    PERFORM ledger.save_balance(a);
    IF t.owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(t);
    END IF;

    o.status := CASE p_action WHEN 'capture' THEN 201 ELSE 200 END;
    o.replayed := false;
    o.entry := e;
    o.hold := h;
    o.budget := ledger.snapshot(a, a.held, v_at);
    RETURN ledger.remember(h.agent_id, p_idempotency_key, p_request_hash, o);
END;
$$;
