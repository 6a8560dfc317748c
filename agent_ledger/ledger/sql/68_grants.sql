-- Delegation in escrow (issue 17): child agents spending a grant carved from their parent.
--
-- A grant is a hold on the parent (its escrow: holds.grant_id): from the moment it opens it
-- counts as held on the parent and, when the parent is not itself a child, on the team. The
-- child spends within it only (ledger.broken_limit's grant check). Each time a child spends
-- (a charge, or a capture), the money moves from held to spent on every ancestor, with a
-- grant_spend entry on each ancestor's chain, and on the team, once: so the parent's and the
-- team's spent plus held never move, and no limit of theirs can be passed by a descendant,
-- however many spend at once. A child's own holds count on the child alone (within_grant).
-- Closing the grant (by request, or by the sweeper once its time is up) releases the child's
-- own holds, returns the unspent rest to the parent (grant_return and grant_closed entries)
-- and suspends the child; the grants the child's subtree gave close first, in the same
-- transaction (ledger.close_grant).
--
-- Lock order, as everywhere: the child, its ancestors deepest first, the team, then holds.

-- 403 agent-suspended when child a may not spend now: its grant's time is up (the sweeper
-- closes it within a pass), or an ancestor is suspended or out of time. NULL when it may.
CREATE OR REPLACE FUNCTION ledger.escrow_refusal(a balances, anc balances[], p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    p balances;
BEGIN
    IF a.grant_expires_at <= p_at THEN
        RETURN ledger.problem(403, 'agent-suspended',
            format('The grant of agent %L (%s) expired at %s; the rest returns to its parent.',
                   a.owner_id, a.grant_id, ledger.rfc3339(a.grant_expires_at)),
            jsonb_build_object('grant_id', a.grant_id));
    END IF;
    FOREACH p IN ARRAY coalesce(anc, '{}') LOOP
        IF p.agent_status = 'suspended' OR p.grant_expires_at <= p_at THEN
            RETURN ledger.problem(403, 'agent-suspended',
                format('Agent %L spends a grant of agent %L, which %s.', a.owner_id,
                       p.owner_id, CASE WHEN p.agent_status = 'suspended' THEN 'is suspended'
                                        ELSE 'is out of time' END),
                jsonb_build_object('grant_id', a.grant_id, 'ancestor_id', p.owner_id));
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- 422 amount-out-of-range when moving p_spent from held to spent would push an ancestor's
-- spent past what a bigint holds; NULL otherwise.
CREATE OR REPLACE FUNCTION ledger.ancestors_range_refusal(anc balances[], p_spent bigint,
                                                          p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    p balances;
    v_refusal jsonb;
BEGIN
    IF anc IS NULL OR p_spent <= 0 THEN
        RETURN NULL;
    END IF;
    FOREACH p IN ARRAY anc LOOP
        v_refusal := ledger.range_refusal(p, p_spent, 0, p_at);
        IF v_refusal IS NOT NULL THEN
            RETURN v_refusal;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- What child a's spending entry e (a charge or a capture) does to the grants it spends: on
-- each ancestor (parent first) the amount moves from held to spent, recorded by a grant_spend
-- entry naming the escrow it came from; on the team it stops counting as held (spend_one has
-- already added it to the team's spent, as for any agent).
CREATE OR REPLACE FUNCTION ledger.spend_from_grants(INOUT anc balances[], INOUT t balances,
                                                    a balances, e ledger_entries)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    p        balances;
    v_escrow text := a.grant_hold_id;
    v_meta   jsonb := jsonb_build_object('agent_id', a.owner_id, 'entry_id', e.id);
    ge       ledger_entries;
BEGIN
    FOR i IN 1 .. cardinality(anc) LOOP
        p := ledger.with_spent(anc[i], e.amount, e.created_at);
        p.held := p.held - e.amount;
        ge := ledger.next_entry(p, p.team_id, 'grant_spend', e.amount, e.currency, e.model,
                                NULL, NULL, v_escrow, NULL, NULL, v_meta, e.key_id,
                                e.created_at, e.priced_by, NULL, NULL, NULL);
        p := ledger.link(p, ge);
        -- The next ancestor's escrow is the one this ancestor's own grant is carved from.
        v_escrow := p.grant_hold_id;
        anc[i] := p;
    END LOOP;
    IF t.owner_id IS NOT NULL THEN
        t.held := t.held - e.amount;
    END IF;
END;
$$;

-- Opens grant p_grant_id: p_amount carved from agent p_parent_id's budget for the new agent
-- p_child_id (its agents row already written by the caller, in the same transaction), in
-- escrow until p_expires_at. Answers {"problem"} when refused (nothing written), else
-- {"grant_id", "hold_id"}. The parent's own rules hold as for a hold of p_amount: it must be
-- active and within every limit of its own, of its team's (or, for a child, of its grant).
CREATE OR REPLACE FUNCTION ledger.open_grant(p_home_id text, p_parent_id text, p_child_id text,
                                             p_grant_id text, p_amount bigint,
                                             p_expires_at timestamptz, p_key_id text,
                                             p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    p         balances;
    t         balances;
    c         balances;
    anc       balances[] := '{}';
    b         balances;
    v_id      text;
    h         holds;
    e         ledger_entries;
    x         record;
    v_at      timestamptz;
    v_refusal jsonb;
BEGIN
    SELECT * INTO p FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = p_parent_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('problem', ledger.problem(404, 'not-found',
            format('No agent with id %L.', p_parent_id)));
    END IF;
    IF p.depth > 0 THEN
        -- Locked in the one order, then read one by one (a whole row set read into one array
        -- is what Citus could not do when this ran on the coordinator; one by one is as cheap).
        PERFORM 1 FROM balances
        WHERE home_id = p_home_id AND owner_id = ANY (p.ancestors)
        ORDER BY depth DESC, owner_id
        FOR UPDATE;
        FOREACH v_id IN ARRAY p.ancestors LOOP
            SELECT * INTO b FROM balances WHERE home_id = p_home_id AND owner_id = v_id;
            anc := anc || b;
        END LOOP;
    END IF;
    SELECT * INTO t FROM balances
    WHERE home_id = p_home_id AND owner_type = 'team' AND owner_id = p_home_id
    FOR UPDATE;
    v_at := coalesce(p_at, clock_timestamp());

    IF p.agent_status = 'suspended' THEN
        v_refusal := ledger.problem(403, 'agent-suspended',
            format('Agent %L is suspended and may not grant.', p.owner_id));
    ELSIF p.depth > 0 THEN
        v_refusal := ledger.escrow_refusal(p, anc, v_at);
    END IF;
    v_refusal := coalesce(v_refusal,
        ledger.budget_refusal(p, ledger.live_held(p, v_at), t, ledger.live_held(t, v_at),
                              p_amount, 0, v_at, 'This grant'),
        ledger.range_refusal(p, 0, p_amount, v_at),
        CASE WHEN p.depth = 0 THEN ledger.range_refusal(t, 0, p_amount, v_at) END);
    IF v_refusal IS NOT NULL THEN
        RETURN jsonb_build_object('problem', v_refusal);
    END IF;

    x := ledger.expire_lapsed(p, t, v_at);
    p := x.a;
    t := x.t;
    INSERT INTO holds (home_id, id, agent_id, team_id, amount, currency, description, key_id,
                       created_at, expires_at, grant_id, within_grant)
    VALUES (p_home_id, ledger.new_id('hold'), p.owner_id, p.team_id, p_amount, p.currency,
            format('escrow of grant %s to agent %s', p_grant_id, p_child_id), p_key_id, v_at,
            p_expires_at, p_grant_id, p.depth > 0)
    RETURNING * INTO h;
    p.held := p.held + p_amount;
    t.held := t.held + ledger.team_share(h);
    e := ledger.next_entry(p, p.team_id, 'grant', p_amount, p.currency, NULL, NULL, NULL, h.id,
                           NULL, NULL,
                           jsonb_build_object('grant_id', p_grant_id, 'child_id', p_child_id),
                           p_key_id, v_at, NULL, NULL, NULL, NULL);
    p := ledger.link(p, e);

    INSERT INTO balances (home_id, owner_id, owner_type, team_id, agent_status, currency,
                          parent_id, ancestors, depth, grant_id, grant_amount, grant_expires_at,
                          grant_hold_id)
    VALUES (p_home_id, p_child_id, 'agent', p.team_id, 'active', p.currency, p.owner_id,
            ARRAY[p.owner_id] || coalesce(p.ancestors, '{}'), p.depth + 1, p_grant_id,
            p_amount, p_expires_at, h.id)
    RETURNING * INTO c;
    e := ledger.next_entry(c, c.team_id, 'grant_received', p_amount, c.currency, NULL, NULL,
                           NULL, h.id, NULL, NULL,
                           jsonb_build_object('grant_id', p_grant_id, 'parent_id', p.owner_id),
                           p_key_id, v_at, NULL, NULL, NULL, NULL);
    c := ledger.link(c, e);

    INSERT INTO grants (home_id, id, parent_id, child_id, hold_id, amount, currency, key_id,
                        created_at, expires_at)
    VALUES (p_home_id, p_grant_id, p.owner_id, p_child_id, h.id, p_amount, p.currency,
            p_key_id, v_at, p_expires_at);

    PERFORM ledger.save_balance(c);
    PERFORM ledger.save_balance(p);
    IF t.owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(t);
    END IF;
    RETURN jsonb_build_object('grant_id', p_grant_id, 'hold_id', h.id);
END;
$$;

-- Closes grant p_grant_id (p_status 'closed' by request, 'expired' by the sweeper once its
-- time is up), and with it every open grant below it, in the same transaction: answers
-- {"problem"} when the grant is missing or already closed (p_only_if_due: the sweeper's call,
-- which answers {} instead when there is nothing to do), else {"grant_id", "child_id",
-- "spent", "returned"} of p_grant_id.
--
-- The grants below go first, deepest first (ledger.close_locked_grant on each): every one of
-- them returns its rest to its own parent before that parent's grant is closed, so the rest
-- this grant returns up is exactly what the child's whole subtree left unspent, and nothing a
-- grandchild still holds can reach an ancestor that already took it back. (Left open until
-- the sweeper's next pass, a grandchild could capture within its hold after its grandparent
-- had been repaid that money: spent twice, held below what is reserved.)
--
-- Locks, in the one order: the agents of the child's subtree deepest first, then the child
-- and the parent (one statement, depth descending), the team, the holds, then the grants.
-- A grant is opened under a lock on its parent and on every ancestor of the parent
-- (ledger.open_grant), the child among them: once the child's row is locked the subtree
-- cannot grow. One opened between the first read of the subtree and that lock is caught by a
-- second read, and the whole close is tried again (serialization_failure: the service
-- retries, agent_ledger/db.py), since locking it now would take a deeper row after shallower
-- ones.
CREATE OR REPLACE FUNCTION ledger.close_grant(p_home_id text, p_grant_id text, p_status text,
                                              p_key_id text, p_at timestamptz,
                                              p_only_if_due boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    g        grants;
    d        record;
    v_below  text[];
    v_now    text[];
    v_at     timestamptz;
BEGIN
    SELECT * INTO g FROM grants WHERE home_id = p_home_id AND id = p_grant_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('problem', ledger.problem(404, 'not-found',
            format('No grant with id %L.', p_grant_id)));
    END IF;
    -- An agent's ancestors never change: read before locking.
    SELECT coalesce(array_agg(owner_id), '{}') INTO v_below FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND g.child_id = ANY (ancestors);
    PERFORM 1 FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent'
      AND owner_id = ANY (v_below || g.child_id || g.parent_id)
    ORDER BY depth DESC, owner_id
    FOR UPDATE;
    SELECT coalesce(array_agg(owner_id), '{}') INTO v_now FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND g.child_id = ANY (ancestors);
    IF NOT v_now <@ v_below THEN
        RAISE EXCEPTION 'grant %: a grant was opened below it while it was being closed', g.id
            USING ERRCODE = 'serialization_failure';
    END IF;
    PERFORM 1 FROM balances
    WHERE home_id = p_home_id AND owner_type = 'team' AND owner_id = p_home_id FOR UPDATE;
    -- The escrow, and every open hold in the subtree: the agents' own holds (released as
    -- each is suspended) and the escrows of the grants below.
    PERFORM 1 FROM holds
    WHERE home_id = p_home_id
      AND (id = g.hold_id
           OR (agent_id = ANY (v_below || g.child_id) AND status = 'open'))
    ORDER BY id FOR UPDATE;
    PERFORM 1 FROM grants
    WHERE home_id = p_home_id
      AND (id = g.id OR (child_id = ANY (v_below) AND status = 'open'))
    ORDER BY id FOR UPDATE;
    SELECT * INTO g FROM grants WHERE home_id = p_home_id AND id = p_grant_id;
    v_at := coalesce(p_at, clock_timestamp());
    IF g.status <> 'open' THEN
        IF p_only_if_due THEN
            RETURN '{}'::jsonb;
        END IF;
        RETURN jsonb_build_object('problem', ledger.problem(409, 'grant-closed',
            format('Grant %L is already %s.', g.id, g.status)));
    END IF;

    FOR d IN
        SELECT u.id,
               CASE WHEN u.expires_at <= v_at THEN 'expired' ELSE 'closed' END AS status
        FROM grants AS u
        JOIN balances AS b ON b.home_id = u.home_id AND b.owner_id = u.child_id
        WHERE u.home_id = p_home_id AND u.status = 'open' AND u.child_id = ANY (v_below)
        ORDER BY b.depth DESC, u.child_id
    LOOP
        PERFORM ledger.close_locked_grant(p_home_id, d.id, d.status, p_key_id, v_at);
    END LOOP;
    RETURN ledger.close_locked_grant(p_home_id, g.id, p_status, p_key_id, v_at);
END;
$$;

-- Closes open grant p_grant_id with p_status at p_at, on rows ledger.close_grant has locked
-- (and every grant below it already closed): releases the child's own open holds and suspends
-- it, returns the unspent rest of the escrow to the parent, and writes the rows. Answers
-- {"grant_id", "child_id", "spent", "returned"}.
CREATE OR REPLACE FUNCTION ledger.close_locked_grant(p_home_id text, p_grant_id text,
                                                     p_status text, p_key_id text,
                                                     p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    g        grants;
    c        balances;
    p        balances;
    t        balances;
    h        holds;
    e        ledger_entries;
    x        record;
    v_spent  bigint;
    v_rest   bigint;
BEGIN
    SELECT * INTO g FROM grants WHERE home_id = p_home_id AND id = p_grant_id;
    SELECT * INTO c FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = g.child_id;
    SELECT * INTO p FROM balances
    WHERE home_id = p_home_id AND owner_type = 'agent' AND owner_id = g.parent_id;
    SELECT * INTO t FROM balances
    WHERE home_id = p_home_id AND owner_type = 'team' AND owner_id = p_home_id;

    -- The child suspended, its own holds released (their money is the grant's, which returns
    -- below), announced as any suspension is (47_suspend.sql). A child already suspended keeps
    -- its reason; its holds are released all the same.
    x := ledger.suspend(c, t, 'grant_closed', p_at, p_key_id,
                        jsonb_build_object('grant_id', g.id, 'parent_id', p.owner_id));
    c := x.a;
    t := x.t;

    -- Everything the child's subtree spent reached the child's spent (and moved out of the
    -- escrow as it went), and the grants below are closed: the rest of the escrow is what
    -- returns.
    v_spent := c.spent_total;
    v_rest := g.amount - v_spent;
    SELECT * INTO h FROM holds WHERE home_id = p_home_id AND id = g.hold_id;
    h := ledger.close_hold(h, CASE WHEN v_spent > 0 THEN 'captured' ELSE 'released' END,
                           nullif(v_spent, 0), p_at);
    p.held := p.held - v_rest;
    IF NOT h.within_grant THEN
        t.held := t.held - v_rest;
    END IF;
    e := ledger.next_entry(p, p.team_id, 'grant_return', v_rest, g.currency, NULL, NULL, NULL,
                           h.id, NULL, NULL,
                           jsonb_build_object('grant_id', g.id, 'child_id', c.owner_id,
                                              'spent', ledger.decimal_text(v_spent)),
                           p_key_id, p_at, NULL, NULL, NULL, NULL);
    p := ledger.link(p, e);
    e := ledger.next_entry(c, c.team_id, 'grant_closed', v_rest, g.currency, NULL, NULL, NULL,
                           h.id, NULL, NULL,
                           jsonb_build_object('grant_id', g.id,
                                              'spent', ledger.decimal_text(v_spent)),
                           p_key_id, p_at, NULL, NULL, NULL, NULL);
    c := ledger.link(c, e);

    UPDATE grants SET status = p_status, spent = v_spent, returned = v_rest, closed_at = p_at,
                      closed_by_key_id = p_key_id
    WHERE home_id = p_home_id AND id = g.id;
    PERFORM ledger.save_balance(c);
    PERFORM ledger.save_balance(p);
    IF t.owner_id IS NOT NULL THEN
        PERFORM ledger.save_balance(t);
    END IF;
    RETURN jsonb_build_object('grant_id', g.id, 'child_id', c.owner_id, 'spent', v_spent,
                              'returned', v_rest);
END;
$$;
