-- Spending: charges, holds and adjustments, each decided by one call in one transaction.
--
-- Lock order, everywhere: the agent's balance row, then its team's. Under READ COMMITTED a
-- waiting decision reads the rows as the one before it left them, so limits are exact under
-- any concurrency without SERIALIZABLE, and one fixed order cannot deadlock.

-- A charge, hold or adjustment for agent p_agent_id. p_amount NULL means: price p_model's
-- tokens. p_at NULL means: the database's clock, read once the locks are held, so time never
-- runs backwards along one agent's chain or one team's counters (tests pass a clock).
CREATE OR REPLACE FUNCTION ledger.spend(
    p_kind             text,
    p_agent_id         text,
    p_amount           bigint,
    p_currency         text,
    p_model            text,
    p_input_tokens     bigint,
    p_output_tokens    bigint,
    p_description      text,
    p_metadata         jsonb,
    p_key_id           text,
    p_idempotency_key  text,
    p_request_hash     bytea,
    p_ttl_seconds      integer,
    p_at               timestamptz
)
RETURNS ledger.outcome
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    a           balances;
    t           balances;
    o           ledger.outcome;
    r           record;
    h           holds;
    e           ledger_entries;
    v_at        timestamptz;
    v_amount    bigint := p_amount;
    v_currency  text;
    v_refusal   jsonb;
    t_held      bigint;
BEGIN
    IF p_kind NOT IN ('charge', 'hold', 'adjustment') THEN
        RAISE EXCEPTION 'ledger.spend: unknown kind %', p_kind;
    END IF;
    SELECT * INTO a FROM balances
    WHERE owner_id = p_agent_id AND owner_type = 'agent'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ledger.refused(ledger.problem(404, 'not-found',
            format('No agent with id %L.', p_agent_id)));
    END IF;
    IF a.team_id IS NOT NULL THEN
        SELECT * INTO t FROM balances WHERE owner_id = a.team_id FOR UPDATE;
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        o := ledger.replay(p_agent_id, p_idempotency_key, p_request_hash);
        IF o.status IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    v_at := coalesce(p_at, clock_timestamp());

    -- Every refusal below is an answer like any other: stored under the key, nothing else
    -- written (so lapsed holds are only closed once the request is known to go through).
    IF p_kind <> 'adjustment' AND a.agent_status = 'suspended' THEN
        RETURN ledger.remember(p_agent_id, p_idempotency_key, p_request_hash, ledger.refused(
            ledger.problem(403, 'agent-suspended',
                format('Agent %L is suspended and may not spend.', p_agent_id))));
    END IF;
    v_currency := coalesce(p_currency, a.currency);
    IF v_currency <> a.currency OR (t.owner_id IS NOT NULL AND v_currency <> t.currency) THEN
        RETURN ledger.remember(p_agent_id, p_idempotency_key, p_request_hash, ledger.refused(
            ledger.problem(422, 'currency-mismatch',
                format('The budget is kept in %s; this request is in %s.',
                       CASE WHEN v_currency <> a.currency THEN a.currency ELSE t.currency END,
                       v_currency))));
    END IF;
    IF v_amount IS NULL THEN
        r := ledger.price_tokens(p_model, v_currency, p_input_tokens, p_output_tokens);
        IF r.problem IS NOT NULL THEN
            RETURN ledger.remember(p_agent_id, p_idempotency_key, p_request_hash,
                                   ledger.refused(r.problem));
        END IF;
        v_amount := r.amount;
    END IF;

    t_held := CASE WHEN t.owner_id IS NOT NULL THEN ledger.live_held(t, v_at) END;
    IF p_kind = 'adjustment' THEN
        IF v_amount < 0 AND a.spent_total < -v_amount THEN
            v_refusal := ledger.problem(422, 'validation-error',
                format('A refund of more than the agent has ever spent (%s nano-units) is '
                       'refused.', a.spent_total), jsonb_build_object('field', 'amount'));
        END IF;
    ELSE
        -- The agent's own lapsed holds are closed below, before anything counts them.
        v_refusal := ledger.budget_refusal(a, ledger.live_held(a, v_at), t, t_held, v_amount,
                                           v_amount, v_at,
                                           CASE p_kind WHEN 'hold' THEN 'This hold'
                                                       ELSE 'This charge' END);
    END IF;
    v_refusal := coalesce(v_refusal,
        ledger.range_refusal(a, CASE WHEN p_kind = 'hold' THEN 0 ELSE v_amount END,
                             CASE WHEN p_kind = 'hold' THEN v_amount ELSE 0 END, v_at),
        ledger.range_refusal(t, CASE WHEN p_kind = 'hold' THEN 0 ELSE v_amount END,
                             CASE WHEN p_kind = 'hold' THEN v_amount ELSE 0 END, v_at));
    IF v_refusal IS NOT NULL THEN
        RETURN ledger.remember(p_agent_id, p_idempotency_key, p_request_hash,
                               ledger.refused(v_refusal));
    END IF;

    r := ledger.expire_lapsed(a, t, v_at);
    a := r.a;
    t := r.t;
    IF p_kind = 'hold' THEN
        INSERT INTO holds (id, agent_id, team_id, amount, currency, model, description,
                           metadata, key_id, created_at, expires_at)
        VALUES (ledger.new_id('hold'), p_agent_id, a.team_id, v_amount, v_currency, p_model,
                p_description, coalesce(p_metadata, '{}'::jsonb), p_key_id, v_at,
                v_at + make_interval(secs => p_ttl_seconds))
        RETURNING * INTO h;
        a.held := a.held + v_amount;
        t.held := t.held + v_amount;
    ELSE
        a := ledger.with_spent(a, v_amount, v_at);
        IF t.owner_id IS NOT NULL THEN
            t := ledger.with_spent(t, v_amount, v_at);
        END IF;
        PERFORM ledger.add_to_rollups(p_agent_id, a.team_id, p_model, p_kind, v_amount, v_at);
    END IF;
    e := ledger.next_entry(a, a.team_id, p_kind, v_amount, v_currency, p_model, p_input_tokens,
                           p_output_tokens, h.id, p_idempotency_key, p_description, p_metadata,
                           p_key_id, v_at);
    a := ledger.link(a, e);
    PERFORM ledger.save_balance(a);
    IF t.owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(t);
    END IF;

    o.status := 201;
    o.replayed := false;
    o.entry := e;
    o.hold := h;
    o.budget := ledger.snapshot(a, a.held, v_at);
    RETURN ledger.remember(p_agent_id, p_idempotency_key, p_request_hash, o);
END;
$$;

-- The hourly report rollup of a spending entry (charge, capture or adjustment); the daily one
-- follows by trigger (migration 0004). Charges and captures also count as charges.
CREATE OR REPLACE FUNCTION ledger.add_to_rollups(p_agent_id text, p_team_id text, p_model text,
                                      p_kind text, p_amount bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO spend_rollups AS r (agent_id, team_id, model, hour, spent, charges)
    VALUES (p_agent_id, coalesce(p_team_id, ''), coalesce(p_model, ''),
            date_trunc('hour', p_at, 'UTC'), p_amount,
            CASE WHEN p_kind IN ('charge', 'capture') THEN 1 ELSE 0 END)
    ON CONFLICT (agent_id, hour, team_id, model) DO UPDATE
    SET spent = r.spent + EXCLUDED.spent, charges = r.charges + EXCLUDED.charges;
END;
$$;
