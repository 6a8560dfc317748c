-- Idempotency: the answer to a request, stored in the transaction that decided it.
--
-- A key is scoped to the agent. Every decision locks the agent's balance row before it looks
-- for the key, so a duplicate of a request still in flight waits on that lock and then finds
-- the first one's answer: no claim row written up front and updated after, one INSERT per
-- decision. A stored answer is only what it takes to give the answer again: the status, the
-- problem of a refusal, the ids of the entry and hold it wrote, and the budget right after it
-- (entries never change; a hold's state at creation is known).

-- The answer stored for p_key, as a replay; a 422 when the key came with another request;
-- NULL when the key is new. The caller holds the agent's row lock.
CREATE OR REPLACE FUNCTION ledger.replay(p_home_id text, p_agent_id text, p_key text,
                                         p_request_hash bytea)
RETURNS ledger.outcome
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    k  idempotency_keys;
    e  ledger_entries;
    h  holds;
    o  ledger.outcome;
BEGIN
    SELECT * INTO k FROM idempotency_keys
    WHERE home_id = p_home_id AND agent_id = p_agent_id AND key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF k.request_hash <> p_request_hash THEN
        RETURN ledger.refused(ledger.problem(422, 'idempotency-key-reused',
            'This Idempotency-Key was first used with a different request; '
            'use a new key for a new request.'));
    END IF;
    o.status := k.status;
    o.replayed := true;
    o.problem := k.problem;
    o.budget := k.budget;
    IF k.entry_id IS NOT NULL THEN
        -- by id alone: an agent that moved team keeps its answers, not its old entries' home
        SELECT * INTO e FROM ledger_entries WHERE id = k.entry_id;
        o.entry := e;
    END IF;
    IF k.hold_id IS NOT NULL THEN
        SELECT * INTO h FROM holds WHERE id = k.hold_id;
        IF e.kind = 'hold' THEN
            h := ledger.hold_as_created(h);
        END IF;
        o.hold := h;
    END IF;
    RETURN o;
END;
$$;

-- Stores outcome o as the answer to p_key (nothing without a key) and returns it.
CREATE OR REPLACE FUNCTION ledger.remember(p_home_id text, p_agent_id text, p_key text,
                                           p_request_hash bytea, o ledger.outcome)
RETURNS ledger.outcome
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (home_id, agent_id, key, request_hash, status, problem,
                                      entry_id, hold_id, budget)
        VALUES (p_home_id, p_agent_id, p_key, p_request_hash, o.status, o.problem, (o.entry).id,
                (o.hold).id, o.budget);
    END IF;
    RETURN o;
END;
$$;
