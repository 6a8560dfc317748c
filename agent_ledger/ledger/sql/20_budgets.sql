-- Budgets: what a balance has spent and holds in each window, and the two refusals a budget
-- can give: 402 budget-exceeded (a limit) and 422 amount-out-of-range (a counter's type).
--
-- A balance row belongs to an agent or a team. Its window counters carry the window they were
-- last moved in (month_start, day_start), so a new day or month starts at zero without any job
-- rewriting rows: a counter whose window has passed reads as zero.

-- What b has spent in p_window ('total', 'month' or 'day') as of p_at.
CREATE OR REPLACE FUNCTION ledger.spent_in(b balances, p_window text, p_at timestamptz)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE p_window
        WHEN 'total' THEN b.spent_total
        WHEN 'month' THEN CASE WHEN b.month_start = ledger.month_of(p_at) THEN b.spent_month
                               ELSE 0 END
        WHEN 'day' THEN CASE WHEN b.day_start = ledger.day_of(p_at) THEN b.spent_day ELSE 0 END
    END
$$;

-- What b holds in open holds that are still running at p_at. An open hold whose time is up
-- stops counting the moment it lapses, before anyone writes its expire entry: a decision
-- checks its limits with this, and closes the agent's lapsed holds (ledger.expire_lapsed) only
-- after, once it is known to go through; a team's may include teammates' holds that their next
-- decision or the sweeper will close.
CREATE OR REPLACE FUNCTION ledger.live_held(b balances, p_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_lapsed bigint;
BEGIN
    IF b.held = 0 THEN
        RETURN 0;
    END IF;
    -- A grant's escrow (grant_id set) counts until its grant is closed, whatever the time;
    -- holds carved from a grant (within_grant) never counted on the team.
    IF b.owner_type = 'agent' THEN
        SELECT coalesce(sum(amount), 0) INTO v_lapsed FROM holds
        WHERE home_id = b.home_id AND agent_id = b.owner_id AND status = 'open'
          AND expires_at <= p_at AND grant_id IS NULL;
    ELSE
        SELECT coalesce(sum(amount), 0) INTO v_lapsed FROM holds
        WHERE home_id = b.home_id AND team_id = b.owner_id AND status = 'open'
          AND expires_at <= p_at AND grant_id IS NULL AND NOT within_grant;
    END IF;
    RETURN b.held - v_lapsed;
END;
$$;

-- The budget as the service reports it (agent_ledger/ledger/render.py turns it into the
-- budget status: limits, spent per window, held and what remains).
CREATE OR REPLACE FUNCTION ledger.snapshot(b balances, p_held bigint, p_at timestamptz)
RETURNS budget_snapshot
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ROW(b.currency, b.limit_total, b.limit_month, b.limit_day, b.limit_per_charge,
               ledger.spent_in(b, 'total', p_at), ledger.spent_in(b, 'month', p_at),
               ledger.spent_in(b, 'day', p_at), p_held, b.require_server_pricing)::budget_snapshot
$$;

-- The 402 members of the first limit of b that p_amount breaks, or NULL when it fits all.
-- p_single is what per_charge bounds: the whole charge, hold or capture (for a capture beyond
-- its hold, p_amount is only the excess, which is all that is new spending).
CREATE OR REPLACE FUNCTION ledger.broken_limit(b balances, p_held bigint, p_amount bigint, p_single bigint,
                                    p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_window text;
    v_limit  bigint;
    v_spent  bigint;
BEGIN
    IF b.limit_per_charge IS NOT NULL AND p_single > b.limit_per_charge THEN
        RETURN jsonb_build_object('scope', b.owner_type, 'window', 'per_charge',
            'limit', b.limit_per_charge, 'spent', NULL, 'held', NULL, 'requested', p_single);
    END IF;
    IF p_amount <= 0 THEN
        -- Adding nothing to a window cannot break its limit (a capture within its hold only
        -- spends money its hold already reserved), even where a limit was lowered meanwhile.
        RETURN NULL;
    END IF;
    -- A child agent (issue 17) spends within its grant: its spent and its own holds never
    -- pass what its parent carved out for it.
    IF b.grant_amount IS NOT NULL AND b.spent_total::numeric + p_held + p_amount > b.grant_amount
    THEN
        RETURN jsonb_build_object('scope', 'grant', 'window', 'total', 'grant_id', b.grant_id,
            'limit', b.grant_amount, 'spent', b.spent_total, 'held', p_held,
            'requested', p_amount);
    END IF;
    FOREACH v_window IN ARRAY ARRAY['total', 'month', 'day'] LOOP
        v_limit := CASE v_window WHEN 'total' THEN b.limit_total
                                 WHEN 'month' THEN b.limit_month
                                 ELSE b.limit_day END;
        CONTINUE WHEN v_limit IS NULL;
        v_spent := ledger.spent_in(b, v_window, p_at);
        -- numeric: the sum of three bigints may not fit one
        IF v_spent::numeric + p_held + p_amount > v_limit THEN
            RETURN jsonb_build_object('scope', b.owner_type, 'window', v_window,
                'limit', v_limit, 'spent', v_spent, 'held', p_held, 'requested', p_amount);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- The one place a 402 budget-exceeded is made: NULL when p_amount fits every limit of the
-- agent a and of its team t (NULL for an agent without one), else the problem, naming the
-- first limit broken, the agent's before the team's. p_what names the request in the detail.
CREATE OR REPLACE FUNCTION ledger.budget_refusal(a balances, a_held bigint, t balances, t_held bigint,
                                      p_amount bigint, p_single bigint, p_at timestamptz,
                                      p_what text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_broken jsonb := ledger.broken_limit(a, a_held, p_amount, p_single, p_at);
BEGIN
    IF v_broken IS NULL AND t.owner_id IS NOT NULL THEN
        -- What a child spends the team already counts, as its grant's escrow: only the team's
        -- per-charge limit still bounds each of its requests.
        v_broken := ledger.broken_limit(t, t_held,
            CASE WHEN a.grant_amount IS NULL THEN p_amount ELSE 0 END, p_single, p_at);
    END IF;
    IF v_broken IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN ledger.problem(402, 'budget-exceeded',
        format('%s would take the %s''s %s past its limit. Nothing was written. A retry with '
               'the same Idempotency-Key gets this answer again; once the budget allows it, '
               'send the request again under a new Idempotency-Key.',
               p_what,
               CASE WHEN v_broken ->> 'scope' = 'grant' THEN 'agent' ELSE v_broken ->> 'scope' END,
               CASE WHEN v_broken ->> 'scope' = 'grant' THEN 'grant'
                    WHEN v_broken ->> 'window' = 'per_charge' THEN 'per-charge limit'
                    ELSE (v_broken ->> 'window') || ' budget' END),
        v_broken);
END;
$$;

-- 422 amount-out-of-range when spending p_spent or holding p_held more would push a counter
-- of b past what a bigint holds; NULL when every counter stays in range. Checked for the agent
-- and its team before anything is written, so such a request changes nothing.
CREATE OR REPLACE FUNCTION ledger.range_refusal(b balances, p_spent bigint, p_held bigint, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_counter text;
BEGIN
    IF b.owner_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF p_spent > 0 AND b.spent_total::numeric + p_spent > ledger.max_nanos() THEN
        v_counter := 'spent';
    ELSIF p_held > 0 AND b.held::numeric + p_held > ledger.max_nanos() THEN
        v_counter := 'held';
    ELSE
        RETURN NULL;
    END IF;
    RETURN ledger.problem(422, 'amount-out-of-range',
        format('This would take the %s''s %s past %s, the most the ledger can record. '
               'Nothing was written.', b.owner_type, v_counter,
               ledger.max_nanos() / 1000000000 || '.' || lpad((ledger.max_nanos()
                   % 1000000000)::text, 9, '0')),
        jsonb_build_object('scope', b.owner_type, 'counter', v_counter));
END;
$$;

-- 422 amount-out-of-range when a spending entry of p_amount (negative: a refund) by agent a
-- would push a counter outside a bigint that the balances do not bound: what run p_run_id has
-- spent (ledger.note_run, 65_runs.sql) or the spend of its report rollups, its hour's and its
-- day's rows (ledger.add_to_rollups, 60_spend.sql, same keys); NULL when all stay in range.
-- ledger.range_refusal does not cover these: a refund lowers the agent's and team's spent but
-- neither a run's nor the rollup of the model that spent it (a refund has rollups of its own),
-- so charging the most there is, refunding it and charging again would pass the top of a run
-- or of a model's rollup, and refunding charges of several models would pass the bottom of
-- the rollup the refunds are counted in.
-- Checked with the other refusals, before anything is written: the rows read here are the
-- ones the entry would then add to (earlier decisions of the same batch included).
CREATE OR REPLACE FUNCTION ledger.tally_range_refusal(a balances, p_team_id text, p_model text,
                                                      p_priced_by text, p_run_id text,
                                                      p_amount bigint, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_hour   bigint;
    v_day    bigint;
    v_run    bigint;
    v_spent  numeric;
BEGIN
    IF p_amount = 0 THEN
        RETURN NULL;
    END IF;
    -- A run's spent only grows (a refund is the agent's, never a run's).
    IF p_run_id IS NOT NULL AND p_amount > 0 THEN
        SELECT spent INTO v_run FROM runs
        WHERE home_id = a.home_id AND agent_id = a.owner_id AND run_id = p_run_id;
        IF v_run::numeric + p_amount > ledger.max_nanos() THEN
            RETURN ledger.problem(422, 'amount-out-of-range',
                format('This would take what run %L has spent past %s, the most the ledger '
                       'can record. Nothing was written.', p_run_id,
                       ledger.decimal_text(ledger.max_nanos())),
                jsonb_build_object('scope', 'run', 'counter', 'spent', 'run_id', p_run_id));
        END IF;
    END IF;
    -- Both rows in one statement; a row not made yet holds 0. The hour's may be further from
    -- zero than the day's (refunds earlier that day), so each is checked.
    SELECT (SELECT spent FROM spend_rollups
            WHERE home_id = a.home_id AND agent_id = a.owner_id
              AND hour = date_trunc('hour', p_at, 'UTC') AND team_id = coalesce(p_team_id, '')
              AND model = coalesce(p_model, '') AND priced_by = coalesce(p_priced_by, '')),
           (SELECT spent FROM spend_rollups_daily
            WHERE home_id = a.home_id AND agent_id = a.owner_id
              AND day = date_trunc('day', p_at, 'UTC') AND team_id = coalesce(p_team_id, '')
              AND model = coalesce(p_model, '') AND priced_by = coalesce(p_priced_by, ''))
    INTO v_hour, v_day;
    -- Symmetric bounds: a refund may take a row down to minus the most, not one nano further.
    v_spent := CASE WHEN p_amount > 0 THEN greatest(v_hour, v_day)
                    ELSE least(v_hour, v_day) END::numeric + p_amount;
    IF v_spent IS NULL OR abs(v_spent) <= ledger.max_nanos() THEN
        RETURN NULL;
    END IF;
    RETURN ledger.problem(422, 'amount-out-of-range',
        format('This would take the spend reported for agent %L%s past %s%s, the %s the '
               'ledger can record. Nothing was written.', a.owner_id,
               CASE WHEN coalesce(p_model, '') <> '' THEN format(' and model %L', p_model)
                    ELSE '' END,
               CASE WHEN p_amount < 0 THEN '-' ELSE '' END,
               ledger.decimal_text(ledger.max_nanos()),
               CASE WHEN p_amount < 0 THEN 'least' ELSE 'most' END),
        jsonb_build_object('scope', 'report', 'counter', 'spent', 'model', p_model));
END;
$$;

-- b after p_amount (negative: a refund) is spent at p_at, in every window. A window counter
-- never goes below zero: a refund gives back at most what each window has spent, so it can
-- never raise a window's remaining above its limit. A counter already in a later window than
-- p_at (a clock set back) keeps that window.
CREATE OR REPLACE FUNCTION ledger.with_spent(b balances, p_amount bigint, p_at timestamptz)
RETURNS balances
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_month date := ledger.month_of(p_at);
    v_day   date := ledger.day_of(p_at);
BEGIN
    b.spent_total := greatest(b.spent_total + p_amount, 0);
    IF b.month_start = v_month THEN
        b.spent_month := greatest(b.spent_month + p_amount, 0);
    ELSIF b.month_start < v_month THEN
        b.month_start := v_month;
        b.spent_month := greatest(p_amount, 0);
    END IF;
    IF b.day_start = v_day THEN
        b.spent_day := greatest(b.spent_day + p_amount, 0);
    ELSIF b.day_start < v_day THEN
        b.day_start := v_day;
        b.spent_day := greatest(p_amount, 0);
    END IF;
    RETURN b;
END;
$$;

-- Writes b's counters, limits untouched: the one UPDATE per balance row per decision. The
-- agent's status and suspension reason go along (a decision may suspend it: 47_suspend.sql).
CREATE OR REPLACE FUNCTION ledger.save_balance(b balances)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE balances SET
        spent_total = b.spent_total, spent_month = b.spent_month, month_start = b.month_start,
        spent_day = b.spent_day, day_start = b.day_start, held = b.held,
        head_hash = b.head_hash, head_seq = b.head_seq, entry_count = b.entry_count,
        agent_status = b.agent_status, suspended_reason = b.suspended_reason
    WHERE home_id = b.home_id AND owner_id = b.owner_id;
END;
$$;
