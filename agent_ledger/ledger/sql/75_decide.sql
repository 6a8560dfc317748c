-- The one entry point of every money decision: a batch of requests decided in order, in one
-- transaction, one call.
--
-- The service coalesces concurrent requests of one team (or one agent) that arrive while a
-- decision of theirs is in flight (agent_ledger/ledger/batching.py); a request on its own is a
-- batch of one. Each request passes or fails on its own, exactly as it would alone: it sees
-- everything the requests before it in the batch did (counters, holds, stored answers), and
-- gets its own entry, hash link and idempotency record. What a batch saves is the round trips,
-- the lock waits and the commits: each balance row is locked once and written once per batch.
--
-- Lock order, everywhere: agents' balance rows, deeper agents first (depth descending, then
-- id: a child agent's decision also locks its ancestors, 68_grants.sql), then their team's,
-- then holds. A single decision (one agent, one team) follows it too, so no two decisions can
-- deadlock. A decision takes a lock on the prices table before all of them (step 0), so one
-- that waits for a price change holds nothing another decision waits for. Under READ
-- COMMITTED a waiting decision reads rows as the one before it left them, so every limit is
-- exact under any concurrency without SERIALIZABLE.

-- Where the row of p_owner_id is in p_rows, or NULL.
CREATE OR REPLACE FUNCTION ledger.position_of(p_rows balances[], p_owner_id text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_rows, 1), 0) LOOP
        IF (p_rows[i]).owner_id = p_owner_id THEN
            RETURN i;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Decides p_requests in order and answers one outcome per request, in the same order. Every
-- request of a batch is for an agent of home p_home_id (its team, or itself when teamless):
-- all the rows a decision touches live there, so on Citus this whole call runs on the one node
-- that holds the home (agent_ledger/citus.py distributes it on this argument). A request whose
-- agent lives elsewhere (it moved team meanwhile) is answered 'wrong-home' with the right home,
-- and the service asks again there. p_at NULL means the database's clock, read for each
-- request once its locks are held, so time never runs backwards along a chain (tests pass a
-- clock).
CREATE OR REPLACE FUNCTION ledger.decide(p_home_id text, p_requests ledger.request[],
                                         p_at timestamptz)
RETURNS SETOF ledger.outcome
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    n            integer := coalesce(array_length(p_requests, 1), 0);
    r            ledger.request;
    k            api_keys;
    h            holds;
    x            record;
    o            ledger.outcome;
    a            balances;
    t            balances;
    ai           integer;
    v_home       text;
    v_key_ids    text[] := '{}';
    v_targets    text[] := '{}';
    v_problems   jsonb[] := '{}';
    v_hold_ids   text[] := '{}';
    v_agents     balances[];
    v_team       balances;
    v_before_a   balances[];
    v_before_t   balances;
    v_at         timestamptz;
    v_changed_a  boolean[] := '{}';
    v_changed_t  boolean := false;
    v_anc        balances[];
    v_anc_at     integer[];
BEGIN
    -- 0. Prices, before anything is read or locked: ROW SHARE on the table (no row), which a
    --    price change's EXCLUSIVE lock waits for and holds off (agent_ledger/prices/queries.py,
    --    LOCK_PRICES). Every price this call reads, and every clock reading, comes after it: a
    --    change either committed before (and is seen) or takes effect after this commits. The
    --    snapshot of a STABLE function is its caller's, so the lock must come before them all.
    PERFORM FROM prices WHERE false FOR KEY SHARE;

    -- 1. Who asks, and for which agent: the key is checked here, in the decision's own
    --    statement, so a revocation holds from the very next request in every process.
    FOR i IN 1 .. n LOOP
        r := p_requests[i];
        SELECT * INTO k FROM api_keys
        WHERE key_hash = r.key_hash AND revoked_at IS NULL
          AND (expires_at IS NULL OR expires_at > now());
        h := NULL;
        IF r.action IN ('capture', 'release') THEN
            SELECT * INTO h FROM holds WHERE home_id = p_home_id AND id = r.hold_id;
            v_hold_ids := v_hold_ids || r.hold_id;
        END IF;
        x := ledger.target_agent(r, k, h);
        v_key_ids[i] := k.id;
        v_targets[i] := x.agent_id;
        v_problems[i] := x.problem;
    END LOOP;

    -- 2. Lock every row the batch may touch, in the one order: agents, the team, holds. (A
    --    batch of one, the most common, takes the plain single-row lock.)
    IF n = 1 THEN
        SELECT * INTO a FROM balances
        WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = v_targets[1]
        FOR UPDATE;
        IF FOUND THEN
            v_agents := ARRAY[a];
            IF a.depth > 0 THEN
                -- A child's ancestors are all shallower than it: locked after it, deepest first.
                SELECT array_agg(b ORDER BY b.depth DESC, b.owner_id) INTO v_anc FROM (
                    SELECT * FROM balances
                    WHERE home_id = p_home_id AND owner_id = ANY (a.ancestors)
                    ORDER BY depth DESC, owner_id
                    FOR UPDATE) AS b;
                v_agents := v_agents || v_anc;
            END IF;
        END IF;
    ELSE
        -- The requests' agents and their ancestors (immutable, so read before locking), all in
        -- the one order.
        SELECT array_agg(b ORDER BY b.depth DESC, b.owner_id) INTO v_agents FROM (
            SELECT * FROM balances
            WHERE home_id = p_home_id AND owner_type = 'agent'
              AND owner_id IN (SELECT unnest(v_targets)
                               UNION
                               SELECT unnest(c.ancestors) FROM balances AS c
                               WHERE c.home_id = p_home_id AND c.owner_id = ANY (v_targets)
                                 AND c.depth > 0)
            ORDER BY depth DESC, owner_id
            FOR UPDATE) AS b;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(v_agents) AS ag WHERE ag.team_id IS NOT NULL) THEN
        -- A team's agents live in the team's home: its balance row is the home's own.
        SELECT * INTO v_team FROM balances
        WHERE home_id = p_home_id AND owner_type = 'team' AND owner_id = p_home_id
        FOR UPDATE;
    END IF;
    IF cardinality(v_hold_ids) > 0 THEN
        PERFORM 1 FROM holds WHERE home_id = p_home_id AND id = ANY (v_hold_ids)
        ORDER BY id FOR UPDATE;
    END IF;
    -- As locked, before the batch: what budget thresholds are measured against (45_alerts.sql).
    v_before_a := v_agents;
    v_before_t := v_team;

    -- 3. Each request in turn, on the locked rows as the requests before it left them.
    FOR i IN 1 .. n LOOP
        r := p_requests[i];
        ai := ledger.position_of(v_agents, v_targets[i]);
        IF v_problems[i] IS NOT NULL THEN
            o := ledger.refused(v_problems[i]);
        ELSIF ai IS NULL THEN
            SELECT coalesce(team_id, id) INTO v_home FROM agents WHERE id = v_targets[i];
            IF v_home IS NULL THEN
                o := ledger.refused(ledger.problem(404, 'not-found',
                    format('No agent with id %L.', v_targets[i])));
            ELSE
                o := ledger.refused(ledger.problem(409, 'wrong-home',
                    'The agent lives in another home; ask there.',
                    jsonb_build_object('home_id', v_home)));
            END IF;
        ELSE
            a := v_agents[ai];
            t := CASE WHEN a.team_id IS NOT NULL THEN v_team END;
            h := NULL;
            v_at := coalesce(p_at, clock_timestamp());
            v_anc := NULL;
            IF a.depth > 0 THEN
                SELECT array_agg(ledger.position_of(v_agents, id) ORDER BY nth) INTO v_anc_at
                FROM unnest(a.ancestors) WITH ORDINALITY AS u(id, nth);
                SELECT array_agg(v_agents[pos] ORDER BY nth) INTO v_anc
                FROM unnest(v_anc_at) WITH ORDINALITY AS u(pos, nth);
            END IF;
            IF r.action IN ('capture', 'release') THEN
                SELECT * INTO h FROM holds WHERE home_id = p_home_id AND id = r.hold_id;
                x := ledger.resolve_one(a, t, v_anc, h, r, v_key_ids[i], v_at);
            ELSE
                x := ledger.spend_one(a, t, v_anc, r, v_key_ids[i], v_at);
            END IF;
            IF x.a IS DISTINCT FROM a THEN
                v_agents[ai] := x.a;
                v_changed_a[ai] := true;
            END IF;
            IF a.depth > 0 AND x.anc IS DISTINCT FROM v_anc THEN
                FOR j IN 1 .. cardinality(v_anc_at) LOOP
                    v_agents[v_anc_at[j]] := (x.anc)[j];
                    v_changed_a[v_anc_at[j]] := true;
                END LOOP;
            END IF;
            IF t.owner_id IS NOT NULL AND x.t IS DISTINCT FROM t THEN
                v_team := x.t;
                v_changed_t := true;
            END IF;
            o := x.o;
            IF o.status = 402 AND NOT o.replayed AND o.problem ->> 'code' = 'budget-exceeded' THEN
                -- Written with the refusal (its idempotent answer included): a replay of it
                -- returns before this, so one refusal is one event.
                PERFORM ledger.announce_exceeded(a, o.problem, v_at);
            END IF;
            o.agent_id := a.owner_id;
            o.team_id := a.team_id;
        END IF;
        o.key_id := v_key_ids[i];
        RETURN NEXT o;
    END LOOP;

    -- 4. Every balance row the batch changed, written once, and the alert thresholds it
    --    reached (as of the batch's last decision).
    FOR i IN 1 .. coalesce(array_length(v_agents, 1), 0) LOOP
        IF v_changed_a[i] THEN
            PERFORM ledger.save_balance(v_agents[i]);
            IF (v_agents[i]).alert_thresholds IS NOT NULL THEN
                PERFORM ledger.note_rise(v_before_a[i], v_agents[i], v_at);
            END IF;
        END IF;
    END LOOP;
    IF v_changed_t THEN
        PERFORM ledger.save_balance(v_team);
        IF v_team.alert_thresholds IS NOT NULL THEN
            PERFORM ledger.note_rise(v_before_t, v_team, v_at);
        END IF;
    END IF;
END;
$$;

-- Group commit across homes: several homes' batches decided in one transaction, one call,
-- when the service has more batches waiting than connections (agent_ledger/ledger/batching.py,
-- Combiner). p_sizes[i] requests of p_requests, in order, belong to home p_homes[i]; each home's
-- batch is decided by ledger.decide exactly as in a call of its own, and the outcomes come back
-- in the same order. Homes are taken in ascending byte order, so two such calls lock homes in
-- the one order and cannot deadlock; an out-of-order call is refused before it locks anything.
-- A lock wait in a combined call gives up after 100 ms (lock_timeout, for this transaction
-- only): a home whose rows someone else holds for long must not keep the other homes of its
-- call waiting; the service then decides each home on its own, with the usual patience.
-- Only on one Postgres: on Citus a call stays on the node of its one home.
CREATE OR REPLACE FUNCTION ledger.decide_homes(p_homes text[], p_sizes integer[],
                                               p_requests ledger.request[], p_at timestamptz)
RETURNS SETOF ledger.outcome
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_first integer := 1;
BEGIN
    IF cardinality(p_homes) <> cardinality(p_sizes)
       OR (SELECT sum(s) FROM unnest(p_sizes) AS s) <> cardinality(p_requests) THEN
        RAISE EXCEPTION 'decide_homes: % homes, % sizes and % requests do not match',
            cardinality(p_homes), cardinality(p_sizes), cardinality(p_requests);
    END IF;
    FOR i IN 2 .. cardinality(p_homes) LOOP
        IF p_homes[i] COLLATE "C" <= p_homes[i - 1] COLLATE "C" THEN
            RAISE EXCEPTION 'decide_homes: homes must be distinct and ascending (% after %)',
                p_homes[i], p_homes[i - 1];
        END IF;
    END LOOP;
    IF current_setting('lock_timeout')::interval NOT BETWEEN '1 ms' AND '100 ms' THEN
        PERFORM set_config('lock_timeout', '100ms', true);
    END IF;
    FOR i IN 1 .. cardinality(p_homes) LOOP
        RETURN QUERY SELECT * FROM ledger.decide(p_homes[i],
                                                 p_requests[v_first : v_first + p_sizes[i] - 1],
                                                 p_at);
        v_first := v_first + p_sizes[i];
    END LOOP;
END;
$$;
