-- Alerts: the webhook events a money decision causes, written to the outbox in the decision's
-- own transaction (DESIGN rule 10), so an event exists exactly when what caused it committed.
--
-- An outbox row of topic 'webhook' carries the event body as it will be delivered ({"id",
-- "type", "created_at", "data"}) and, beside it, the agent and team it concerns, which decide
-- which webhooks get it. agent_ledger/audit/outbox.py fans each one out to the deliveries of the
-- webhooks that want it; agent_ledger/webhooks/delivery.py delivers them.
--
-- What each costs a decision: budget.threshold is checked only for a budget that has
-- alert_thresholds, only when the decision raised its spent or held, and reads the crossings
-- table only once a threshold's level is reached; budget.exceeded and hold.expired are written
-- only when a live webhook wants them (one look at the small webhooks table, replicated to
-- every node on Citus, and only on a refusal or an expiry).

-- Whether some live webhook wants events of p_type about agent p_agent_id of team p_team_id
-- (an event about a team's own budget: p_agent_id NULL). A webhook for an agent gets that
-- agent's events; one for a team gets the team's and its agents'; one for neither gets all.
CREATE OR REPLACE FUNCTION ledger.webhook_wants(p_type text, p_agent_id text, p_team_id text)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM webhooks AS w
        WHERE w.deleted_at IS NULL AND p_type = ANY (w.events)
          AND (w.agent_id IS NULL OR w.agent_id = p_agent_id)
          AND (w.team_id IS NULL OR w.team_id = p_team_id))
$$;

-- A moment as the API writes it: RFC 3339, UTC.
CREATE OR REPLACE FUNCTION ledger.rfc3339(p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Writes webhook event p_id of type p_type to the outbox of home p_home_id.
CREATE OR REPLACE FUNCTION ledger.announce_event(p_home_id text, p_id text, p_type text,
                                                 p_agent_id text, p_team_id text, p_data jsonb,
                                                 p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO outbox (home_id, id, topic, payload)
    VALUES (p_home_id, p_id, 'webhook', jsonb_build_object(
        'agent_id', p_agent_id, 'team_id', p_team_id,
        'event', jsonb_build_object('id', p_id, 'type', p_type,
                                    'created_at', ledger.rfc3339(p_at), 'data', p_data)));
END;
$$;

-- The period of window p_window that p_at falls in: the key of a crossing.
CREATE OR REPLACE FUNCTION ledger.window_period(p_window text, p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE p_window
        WHEN 'total' THEN 'total'
        WHEN 'month' THEN to_char(ledger.month_of(p_at), 'YYYY-MM')
        ELSE to_char(ledger.day_of(p_at), 'YYYY-MM-DD')
    END
$$;

-- budget.threshold for every threshold of b that spent + held has reached at p_at in a window
-- period where it had not yet been reached: recorded in alert_crossings (whose key makes it
-- once per threshold, window period and budget, whatever races) and announced. The caller
-- holds b's row lock. The cheap test (b's held, which may still count a teammate's lapsed
-- hold) comes first; only a threshold that passes it costs a look at the crossings, and only a
-- new one the exact live held.
CREATE OR REPLACE FUNCTION ledger.note_crossings(b balances, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_window     text;
    v_limit      bigint;
    v_spent      bigint;
    v_period     text;
    v_threshold  numeric;
    v_live_held  bigint;
    v_event      text;
BEGIN
    IF b.alert_thresholds IS NULL THEN
        RETURN;
    END IF;
    FOREACH v_window IN ARRAY ARRAY['total', 'month', 'day'] LOOP
        v_limit := CASE v_window WHEN 'total' THEN b.limit_total
                                 WHEN 'month' THEN b.limit_month
                                 ELSE b.limit_day END;
        CONTINUE WHEN v_limit IS NULL OR v_limit = 0;
        v_spent := ledger.spent_in(b, v_window, p_at);
        v_period := ledger.window_period(v_window, p_at);
        FOREACH v_threshold IN ARRAY b.alert_thresholds LOOP
            -- numeric: exact, and the sum of two bigints may not fit one
            CONTINUE WHEN v_spent::numeric + b.held < ceil(v_threshold * v_limit);
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM alert_crossings
                WHERE home_id = b.home_id AND owner_id = b.owner_id AND "window" = v_window
                  AND period = v_period AND threshold = v_threshold);
            v_live_held := coalesce(v_live_held, ledger.live_held(b, p_at));
            CONTINUE WHEN v_spent::numeric + v_live_held < ceil(v_threshold * v_limit);
            v_event := ledger.new_id('evt');
            INSERT INTO alert_crossings (home_id, owner_id, "window", period, threshold,
                                         event_id, crossed_at)
            VALUES (b.home_id, b.owner_id, v_window, v_period, v_threshold, v_event, p_at)
            ON CONFLICT DO NOTHING;
            CONTINUE WHEN NOT FOUND;
            PERFORM ledger.announce_event(b.home_id, v_event, 'budget.threshold',
                CASE WHEN b.owner_type = 'agent' THEN b.owner_id END,
                coalesce(b.team_id, CASE WHEN b.owner_type = 'team' THEN b.owner_id END),
                jsonb_build_object(
                    'scope', b.owner_type, 'owner_id', b.owner_id, 'window', v_window,
                    'threshold', v_threshold::text, 'limit', ledger.decimal_text(v_limit),
                    'spent', ledger.decimal_text(v_spent),
                    'held', ledger.decimal_text(v_live_held), 'currency', b.currency,
                    'period', v_period),
                p_at);
        END LOOP;
    END LOOP;
END;
$$;

-- After a decision moved balance row p_before to p_after: the thresholds it may have reached.
-- Nothing to do (and nothing read) unless the budget has thresholds and money went up.
CREATE OR REPLACE FUNCTION ledger.note_rise(p_before balances, p_after balances,
                                            p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF p_after.alert_thresholds IS NOT NULL
       AND (p_after.spent_total > p_before.spent_total OR p_after.held > p_before.held) THEN
        PERFORM ledger.note_crossings(p_after, p_at);
    END IF;
END;
$$;

-- budget.exceeded for a 402 budget-exceeded refusal (p_problem, members in nano-units) of a
-- request by agent a, when some webhook wants it. A replayed refusal is not a new one: the
-- caller announces only first answers.
CREATE OR REPLACE FUNCTION ledger.announce_exceeded(a balances, p_problem jsonb,
                                                    p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF NOT ledger.webhook_wants('budget.exceeded', a.owner_id, a.team_id) THEN
        RETURN;
    END IF;
    PERFORM ledger.announce_event(a.home_id, ledger.new_id('evt'), 'budget.exceeded',
        a.owner_id, a.team_id,
        jsonb_build_object(
            'scope', p_problem ->> 'scope',
            'owner_id', CASE p_problem ->> 'scope' WHEN 'team' THEN a.team_id
                                                   ELSE a.owner_id END,
            'window', p_problem ->> 'window',
            'limit', ledger.decimal_text((p_problem ->> 'limit')::bigint),
            'spent', ledger.decimal_text((p_problem ->> 'spent')::bigint),
            'held', ledger.decimal_text((p_problem ->> 'held')::bigint),
            'requested', ledger.decimal_text((p_problem ->> 'requested')::bigint),
            'agent_id', a.owner_id, 'currency', a.currency)
            -- a run's cap (scope run) names the run
            || CASE WHEN p_problem ? 'run_id'
                    THEN jsonb_build_object('run_id', p_problem ->> 'run_id') ELSE '{}' END,
        p_at);
END;
$$;

-- hold.expired for hold h, just closed as expired at p_at, when some webhook wants it.
CREATE OR REPLACE FUNCTION ledger.announce_hold_expired(h holds, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF NOT ledger.webhook_wants('hold.expired', h.agent_id, h.team_id) THEN
        RETURN;
    END IF;
    PERFORM ledger.announce_event(h.home_id, ledger.new_id('evt'), 'hold.expired',
        h.agent_id, h.team_id,
        jsonb_build_object(
            'hold_id', h.id, 'agent_id', h.agent_id, 'team_id', h.team_id,
            'amount', ledger.decimal_text(h.amount), 'currency', h.currency,
            'model', h.model, 'created_at', ledger.rfc3339(h.created_at),
            'expires_at', ledger.rfc3339(h.expires_at)),
        p_at);
END;
$$;
