-- Runs: an agent's task or session, named by the client (run_id), with its own counters and an
-- optional cap (issue 17, item 2; migration 0016).
--
-- A run's row (runs) lives in its agent's home and is moved only under the agent's balance row
-- lock: every decision of the agent holds that lock before it reads or writes the run, so a
-- run's counters are as exact as the agent's, under any concurrency, without a lock of their
-- own. A request without a run_id never reaches any of this: the hooks in ledger.spend_one and
-- ledger.resolve_one test r.run_id (or the hold's) first, so it costs such a request nothing.
--
-- What a run has spent counts charge and capture entries with its run_id; what it holds is
-- the agent's open, unexpired holds with its run_id, summed only when the run has a cap (or
-- when its status is read).

-- What agent a's open holds of run p_run_id reserve at p_at (lapsed ones no longer count).
CREATE OR REPLACE FUNCTION ledger.run_held(a balances, p_run_id text, p_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_held numeric;
BEGIN
    IF a.held = 0 THEN
        RETURN 0;
    END IF;
    SELECT coalesce(sum(amount), 0) INTO v_held FROM holds
    WHERE home_id = a.home_id AND agent_id = a.owner_id AND run_id = p_run_id
      AND status = 'open' AND expires_at > p_at;
    RETURN v_held;
END;
$$;

-- 402 budget-exceeded (scope run, window total) when adding p_amount to run p_run_id of agent
-- a would take its spent + live held past its cap; NULL when it fits, when the run has no cap,
-- or when nothing is added (a capture within its hold: p_amount is only what goes beyond it).
-- The caller holds a's row lock.
CREATE OR REPLACE FUNCTION ledger.run_refusal(a balances, p_run_id text, p_amount bigint,
                                              p_at timestamptz, p_what text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    u       runs;
    v_held  bigint;
BEGIN
    IF p_run_id IS NULL OR p_amount <= 0 THEN
        RETURN NULL;
    END IF;
    SELECT * INTO u FROM runs
    WHERE home_id = a.home_id AND agent_id = a.owner_id AND run_id = p_run_id;
    IF NOT FOUND OR u.limit_total IS NULL THEN
        RETURN NULL;
    END IF;
    v_held := ledger.run_held(a, p_run_id, p_at);
    -- numeric: the sum of three bigints may not fit one
    IF u.spent::numeric + v_held + p_amount <= u.limit_total THEN
        RETURN NULL;
    END IF;
    RETURN ledger.problem(402, 'budget-exceeded',
        format('%s would take run %L past its cap. Nothing was written. A retry with the same '
               'Idempotency-Key gets this answer again; once the cap allows it, send the '
               'request again under a new Idempotency-Key.', p_what, p_run_id),
        jsonb_build_object('scope', 'run', 'window', 'total', 'limit', u.limit_total,
                           'spent', u.spent, 'held', v_held, 'requested', p_amount,
                           'run_id', p_run_id));
END;
$$;

-- Records that run p_run_id of agent a was used at p_at: p_amount more spent and p_charges
-- more charges (a hold uses a run without spending: 0 and 0). The run's row is made on first
-- use. The caller holds a's row lock.
CREATE OR REPLACE FUNCTION ledger.note_run(a balances, p_run_id text, p_amount bigint,
                                           p_charges integer, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO runs AS u (home_id, agent_id, run_id, spent, charges, created_at, updated_at)
    VALUES (a.home_id, a.owner_id, p_run_id, p_amount, p_charges, p_at, p_at)
    ON CONFLICT (home_id, agent_id, run_id) DO UPDATE
    SET spent = u.spent + EXCLUDED.spent, charges = u.charges + EXCLUDED.charges,
        updated_at = greatest(u.updated_at, EXCLUDED.updated_at);
END;
$$;

-- A run as its routes report it: its row (NULL columns for a run never used nor capped) and
-- its live held at p_at. agent_found: whether the agent has a balance row in home p_home_id
-- (else the agent is unknown, or moved meanwhile).
CREATE OR REPLACE FUNCTION ledger.run_status(p_home_id text, p_agent_id text, p_run_id text,
                                             p_at timestamptz, OUT agent_found boolean,
                                             OUT run runs, OUT held bigint,
                                             OUT currency text)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    a balances;
BEGIN
    SELECT * INTO a FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = p_agent_id;
    agent_found := FOUND;
    IF NOT agent_found THEN
        RETURN;
    END IF;
    SELECT * INTO run FROM runs
    WHERE home_id = p_home_id AND agent_id = p_agent_id AND run_id = p_run_id;
    held := ledger.run_held(a, p_run_id, p_at);
    currency := a.currency;
END;
$$;

-- Sets (p_limit) or removes (NULL) the cap of run p_run_id of agent p_agent_id, as a key of
-- role p_role ('admin' or 'agent', the agent's own), under the agent's balance row lock.
-- An admin's cap is also the ceiling of the agent's: an agent key may set a cap only within
-- every total, month and day limit of its own budget, within its grant for a child agent (the
-- most it can ever spend, whatever limits its own budget row carries), and below a cap an
-- admin set (it may lower an admin's cap and raise it back up to it, never above it, nor
-- remove it); else problem is 403 forbidden and nothing changes. OUT agent_found false: no
-- balance row of the agent in p_home_id. before and after: the run's row around the change
-- (before all NULL for a new run).
CREATE OR REPLACE FUNCTION ledger.set_run_limit(p_home_id text, p_agent_id text,
                                                p_run_id text, p_limit bigint, p_role text,
                                                p_at timestamptz, OUT agent_found boolean,
                                                OUT before runs, OUT after runs,
                                                OUT held bigint, OUT currency text,
                                                OUT problem jsonb)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    a        balances;
    v_own    bigint;
    v_which  text;
BEGIN
    SELECT * INTO a FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = p_agent_id
    FOR UPDATE;
    agent_found := FOUND;
    IF NOT agent_found THEN
        RETURN;
    END IF;
    currency := a.currency;
    SELECT * INTO before FROM runs
    WHERE home_id = p_home_id AND agent_id = p_agent_id AND run_id = p_run_id;
    IF p_role = 'agent' THEN
        IF before.admin_limit IS NOT NULL
           AND (p_limit IS NULL OR p_limit > before.admin_limit) THEN
            problem := ledger.problem(403, 'forbidden',
                format('An admin capped run %L at %s; an agent key may lower that cap, not '
                       'raise it above it or remove it.', p_run_id,
                       ledger.decimal_text(before.admin_limit)),
                jsonb_build_object('admin_limit', before.admin_limit));
            RETURN;
        END IF;
        IF p_limit IS NOT NULL THEN
            SELECT w, l INTO v_which, v_own FROM (VALUES
                ('total', a.limit_total), ('month', a.limit_month), ('day', a.limit_day),
                ('grant', a.grant_amount)) AS x(w, l)
            WHERE l IS NOT NULL AND p_limit > l
            ORDER BY l, w = 'grant' LIMIT 1;
            IF v_which IS NOT NULL THEN
                problem := ledger.problem(403, 'forbidden',
                    format('An agent key may cap a run only within its own limits; this cap is '
                           'above the agent''s %s of %s.',
                           CASE WHEN v_which = 'grant' THEN format('grant %s', a.grant_id)
                                ELSE v_which || ' limit' END,
                           ledger.decimal_text(v_own)),
                    jsonb_build_object('window', v_which));
                RETURN;
            END IF;
        END IF;
    END IF;
    INSERT INTO runs AS u (home_id, agent_id, run_id, limit_total, limit_set_by, admin_limit,
                           created_at, updated_at)
    VALUES (p_home_id, p_agent_id, p_run_id, p_limit,
            CASE WHEN p_limit IS NOT NULL THEN p_role END,
            CASE WHEN p_role = 'admin' THEN p_limit END, p_at, p_at)
    ON CONFLICT (home_id, agent_id, run_id) DO UPDATE
    SET limit_total = EXCLUDED.limit_total, limit_set_by = EXCLUDED.limit_set_by,
        admin_limit = CASE WHEN p_role = 'admin' THEN EXCLUDED.admin_limit
                           ELSE u.admin_limit END,
        updated_at = greatest(u.updated_at, EXCLUDED.updated_at)
    RETURNING * INTO after;
    held := ledger.run_held(a, p_run_id, p_at);
END;
$$;
