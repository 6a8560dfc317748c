-- Who is asking: the caller's key, checked inside the decision's own statement.
--
-- A key is valid when it exists, is not revoked and has not expired, by the database's clock,
-- at the moment of the decision: no cache stands between a revocation and the next charge in
-- any process (ledger.decide reads the key). Agent keys spend for their own agent; admin keys
-- for the agent they name.

-- The agent request r is for, or the refusal: 401 for a key that is not valid, 403 for a key
-- that may not spend or names another agent, 422 for a staff key that names none, 404 for a
-- hold that does not exist or is another agent's. k is r's key if valid (else NULL). For a
-- capture or release, h is the hold (NULL when absent).
CREATE OR REPLACE FUNCTION ledger.target_agent(r ledger.request, k api_keys, h holds,
                                               OUT agent_id text, OUT problem jsonb)
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF k.id IS NULL THEN
        problem := ledger.problem(401, 'unauthorized',
            'The API key is unknown, revoked or expired.');
    ELSIF k.role NOT IN ('admin', 'agent')
          OR (r.action = 'adjustment' AND k.role <> 'admin') THEN
        problem := ledger.problem(403, 'forbidden',
            format('A key with role %L may not call this endpoint.', k.role));
    ELSIF r.action IN ('capture', 'release') THEN
        IF h.id IS NULL OR (k.role = 'agent' AND h.agent_id <> k.agent_id) THEN
            -- Another agent's hold is reported as missing: its existence is not theirs to know.
            problem := ledger.problem(404, 'not-found', format('No hold with id %L.', r.hold_id));
        ELSE
            agent_id := h.agent_id;
        END IF;
    ELSIF k.role = 'agent' THEN
        IF r.agent_id IS NOT NULL AND r.agent_id <> k.agent_id THEN
            problem := ledger.problem(403, 'forbidden',
                'An agent key may spend only for its own agent.');
        ELSE
            agent_id := k.agent_id;
        END IF;
    ELSIF r.agent_id IS NULL THEN
        problem := ledger.problem(422, 'validation-error',
            'agent_id is required when an admin key spends for an agent.',
            jsonb_build_object('field', 'agent_id'));
    ELSE
        agent_id := r.agent_id;
    END IF;
END;
$$;
