-- The runaway breaker: velocity rules over rolling windows, checked in the money decision.
--
-- A budget (agent or team) may carry velocity rules (balances.velocity, a JSON array of
-- {"seconds", "amount" in nano-units or null, "charges" or null}): at most that much money, or
-- that many charges, in any rolling period of that many seconds. A charge or a hold that would
-- break one of the agent's rules or of its team's is refused 402 velocity-exceeded, and in the
-- same decision the agent is suspended with reason 'velocity' (ledger.suspend, 47_suspend.sql):
-- its open holds are released and the trip is announced. Captures are not checked (the model
-- was already called under the hold), but what they spend counts in later windows; adjustments
-- neither count nor are checked.
--
-- What a rule measures in the window (p_at - seconds, p_at], read exactly from the ledger:
-- - amount: money spent by charge and capture entries in the window, plus what the agent (for
--   a team rule: the team) holds in open holds right now (a hold's money is counted from the
--   moment it is reserved, as every budget limit counts it, so a loop of holds trips the
--   breaker as surely as a loop of charges), plus this request's amount (for a team rule and a
--   child's request, nothing: the team already holds it in the grant's escrow);
-- - charges: charge and hold entries in the window, plus this request.
-- The sums read ledger_entries through the indexes of migration 0018: (home_id, agent_id,
-- created_at) for an agent's rules, (team_id, created_at) for a team's (home_id, the same for
-- a team's entries, keeps the statement on the home's node on Citus); both carry kind and
-- amount. An agent whose budget and team have no rules costs
-- nothing here: spend_one does not call in.
--
-- Under the decision's locks (the agent's balance row, and its team's) every charge and hold
-- of the agent, and of the team, is decided one after the other, each seeing every entry
-- before it: the window sums are exact under any concurrency, and no two racing requests can
-- both pass a rule only one of them fits.

-- What a rule of b over p_seconds measures in the window ending at p_at: amount spent
-- (charge and capture entries) and charges made (charge and hold entries). An agent's own
-- windows start no earlier than its last reset by an admin (balances.breaker_reset_at); a
-- team's rules keep counting every entry of the team.
CREATE OR REPLACE FUNCTION ledger.velocity_window(b balances, p_seconds integer,
                                                  p_at timestamptz, OUT spent numeric,
                                                  OUT charges bigint)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_from timestamptz := p_at - make_interval(secs => p_seconds);
BEGIN
    IF b.owner_type = 'agent' THEN
        -- An admin's reset (setting the agent active again) forgives what came before it.
        v_from := greatest(v_from, b.breaker_reset_at);
        SELECT coalesce(sum(e.amount) FILTER (WHERE e.kind IN ('charge', 'capture')), 0),
               count(*) FILTER (WHERE e.kind IN ('charge', 'hold'))
        INTO spent, charges
        FROM ledger_entries AS e
        WHERE e.home_id = b.home_id AND e.agent_id = b.owner_id
          AND e.created_at > v_from AND e.created_at <= p_at;
    ELSE
        SELECT coalesce(sum(e.amount) FILTER (WHERE e.kind IN ('charge', 'capture')), 0),
               count(*) FILTER (WHERE e.kind IN ('charge', 'hold'))
        INTO spent, charges
        FROM ledger_entries AS e
        WHERE e.home_id = b.owner_id AND e.team_id = b.owner_id
          AND e.created_at > v_from AND e.created_at <= p_at;
    END IF;
END;
$$;

-- The members of the first velocity rule of b that a charge or hold of p_amount would break at
-- p_at (b holding p_held now), or NULL when it breaks none. Money members are decimal strings
-- here (the problem is stored and answered as it is): scope, seconds, measure ('amount' or
-- 'charges', amount first when both break), limit {amount, charges} (the rule), observed
-- {amount, charges} (in the window before this request; amount includes what is held) and
-- requested {amount, charges}. p_adds_amount false: the request adds nothing to b's amount
-- measure (a child's, under its team's rules: see ledger.trip_breaker), so only b's charges
-- rules can refuse it.
CREATE OR REPLACE FUNCTION ledger.broken_velocity(b balances, p_held bigint, p_amount bigint,
                                                  p_at timestamptz,
                                                  p_adds_amount boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_rule     record;
    w          record;
    v_amount   numeric;
    v_measure  text;
BEGIN
    IF b.owner_id IS NULL OR b.velocity IS NULL THEN
        RETURN NULL;
    END IF;
    FOR v_rule IN
        SELECT * FROM jsonb_to_recordset(b.velocity) AS r(seconds integer, amount bigint,
                                                          charges bigint)
    LOOP
        w := ledger.velocity_window(b, v_rule.seconds, p_at);
        v_amount := w.spent + coalesce(p_held, 0);
        IF v_rule.amount IS NOT NULL AND p_adds_amount AND v_amount + p_amount > v_rule.amount
        THEN
            v_measure := 'amount';
        ELSIF v_rule.charges IS NOT NULL AND w.charges + 1 > v_rule.charges THEN
            v_measure := 'charges';
        ELSE
            CONTINUE;
        END IF;
        RETURN jsonb_build_object(
            'scope', b.owner_type, 'seconds', v_rule.seconds, 'measure', v_measure,
            'limit', jsonb_build_object(
                'amount', ledger.decimal_text(v_rule.amount), 'charges', v_rule.charges),
            'observed', jsonb_build_object(
                'amount', ledger.decimal_text(least(v_amount, ledger.max_nanos())::bigint),
                'charges', w.charges),
            'requested', jsonb_build_object(
                'amount', ledger.decimal_text(p_amount), 'charges', 1));
    END LOOP;
    RETURN NULL;
END;
$$;

-- The breaker, called by ledger.spend_one for a charge or hold of p_amount by agent a (team t)
-- that passed every other check, when a or t has velocity rules: NULL problem when no rule is
-- broken; else the 402 velocity-exceeded problem, with a suspended and its holds released
-- (ledger.suspend; the caller saves a and t and stores the refusal under the request's
-- Idempotency-Key, so a retry replays it and does not trip again).
CREATE OR REPLACE FUNCTION ledger.trip_breaker(INOUT a balances, INOUT t balances,
                                               p_amount bigint, p_key_id text,
                                               p_at timestamptz, OUT problem jsonb)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    x         record;
    v_broken  jsonb;
BEGIN
    v_broken := ledger.broken_velocity(a, ledger.live_held(a, p_at), p_amount, p_at);
    IF v_broken IS NULL AND t.owner_id IS NOT NULL THEN
        -- A child pays from its grant's escrow, which the team's held already counts (in full,
        -- from the moment the grant opened): its charge or hold moves money from the team's
        -- held to its spent, or not at all, and adds nothing to the team's amount measure, as
        -- ledger.budget_refusal adds nothing to the team's limits for it. Counted again, the
        -- child's first charge of 1.5 under a grant of 4 would measure 5.5 against a team rule
        -- of 5.00 with nothing spent. Its charges still count in the team's charges rules.
        v_broken := ledger.broken_velocity(t, ledger.live_held(t, p_at), p_amount, p_at,
                                           a.grant_amount IS NULL);
    END IF;
    IF v_broken IS NULL THEN
        RETURN;
    END IF;
    x := ledger.suspend(a, t, 'velocity', p_at, p_key_id,
                        jsonb_build_object('velocity', v_broken));
    a := x.a;
    t := x.t;
    problem := ledger.problem(402, 'velocity-exceeded',
        format('This would break the %s''s velocity rule (at most %s in any %s seconds): the '
               'runaway breaker tripped. Nothing was spent; agent %L is now suspended and its '
               'open holds were released. An admin resets it by setting its status back to '
               'active. A retry with the same Idempotency-Key gets this answer again.',
               v_broken ->> 'scope',
               CASE v_broken ->> 'measure'
                   WHEN 'amount' THEN (v_broken #>> '{limit,amount}') || ' ' || a.currency
                   ELSE (v_broken #>> '{limit,charges}') || ' charges' END,
               v_broken ->> 'seconds', a.owner_id),
        v_broken);
END;
$$;

-- Sets the velocity rules of one balance row (p_velocity NULL: none), under its row lock
-- (PUT .../budget calls ledger.set_limits first, in the same transaction). OUT before and
-- after: the rules around the change; both NULL when there is no such row.
CREATE OR REPLACE FUNCTION ledger.set_velocity(p_home_id text, p_owner_type text,
                                               p_owner_id text, p_velocity jsonb,
                                               OUT found boolean, OUT before jsonb,
                                               OUT after jsonb)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    SELECT velocity INTO before FROM balances
    WHERE home_id = p_home_id AND owner_type = p_owner_type AND owner_id = p_owner_id
    FOR UPDATE;
    found := FOUND;
    IF NOT found THEN
        RETURN;
    END IF;
    UPDATE balances SET velocity = p_velocity
    WHERE home_id = p_home_id AND owner_id = p_owner_id
    RETURNING velocity INTO after;
END;
$$;

-- The velocity rules of one balance row (NULL: none, or no such row).
CREATE OR REPLACE FUNCTION ledger.velocity_of(p_home_id text, p_owner_type text,
                                              p_owner_id text)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT velocity FROM balances
    WHERE home_id = p_home_id AND owner_type = p_owner_type AND owner_id = p_owner_id
$$;
