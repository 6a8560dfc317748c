-- Hash chains: each agent's ledger entries, and the staff audit log.
--
-- A hash covers a canonical text of its record's fields and the hash before it. Each field is
-- written as its byte length, a colon and its text ('-' for NULL), so no choice of values can
-- make two different records encode alike. agent_ledger/ledger/chain.py and
-- agent_ledger/audit/chain.py recompute both encodings independently in Python for verify;
-- tests compare the two sides.
--
-- PL/pgSQL rather than SQL functions: a SQL function taking a row is not inlined into the
-- PL/pgSQL that calls it and is planned again in every transaction; PL/pgSQL caches its plan
-- per connection (about 0.03 ms a call against 0.26 ms). Each field is written out as
-- coalesce(octet_length(v) || ':' || v, '-') rather than through a helper function: a helper
-- that uses its argument three times is not inlined either, and costs a call per field.

-- The hash of a ledger entry, over its fields and e.prev_hash (created_at as microseconds since
-- the epoch: exact and zone-free), in the encoding of its e.hash_version: version 1 (entries
-- before migration 0013) covers the fields every entry had then; version 2 adds priced_by and
-- the cache and reasoning token counts; version 3 (from migration 0016) adds run_id.
-- The version's name opens the hashed text, so an entry cannot be passed off as another
-- version's without its hash changing.
CREATE OR REPLACE FUNCTION ledger.entry_digest(e ledger_entries)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_at    text := (extract(epoch FROM e.created_at) * 1000000)::bigint::text;
    v_prev  text := encode(e.prev_hash, 'hex');
    v_meta  text := e.metadata::text;
    v_tail  text := '';
BEGIN
    IF e.hash_version IN (2, 3) THEN
        v_tail := '|' || concat_ws('|',
            coalesce(octet_length(e.priced_by)::text || ':' || e.priced_by, '-'),
            coalesce(octet_length(e.cached_input_tokens::text)::text || ':'
                     || e.cached_input_tokens::text, '-'),
            coalesce(octet_length(e.cache_write_tokens::text)::text || ':'
                     || e.cache_write_tokens::text, '-'),
            coalesce(octet_length(e.reasoning_tokens::text)::text || ':'
                     || e.reasoning_tokens::text, '-'));
        IF e.hash_version = 3 THEN
            v_tail := v_tail || '|'
                || coalesce(octet_length(e.run_id)::text || ':' || e.run_id, '-');
        END IF;
    ELSIF e.hash_version IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'unknown hash version % of entry %', e.hash_version, e.id;
    END IF;
    RETURN sha256(convert_to(concat_ws('|',
        'ledger-entry-v' || e.hash_version,
        coalesce(octet_length(e.id)::text || ':' || e.id, '-'),
        coalesce(octet_length(e.seq::text)::text || ':' || e.seq::text, '-'),
        coalesce(octet_length(e.agent_id)::text || ':' || e.agent_id, '-'),
        coalesce(octet_length(e.team_id)::text || ':' || e.team_id, '-'),
        coalesce(octet_length(e.kind)::text || ':' || e.kind, '-'),
        coalesce(octet_length(e.amount::text)::text || ':' || e.amount::text, '-'),
        coalesce(octet_length(e.currency)::text || ':' || e.currency, '-'),
        coalesce(octet_length(e.model)::text || ':' || e.model, '-'),
        coalesce(octet_length(e.input_tokens::text)::text || ':' || e.input_tokens::text, '-'),
        coalesce(octet_length(e.output_tokens::text)::text || ':' || e.output_tokens::text, '-'),
        coalesce(octet_length(e.hold_id)::text || ':' || e.hold_id, '-'),
        coalesce(octet_length(e.idempotency_key)::text || ':' || e.idempotency_key, '-'),
        coalesce(octet_length(e.description)::text || ':' || e.description, '-'),
        coalesce(octet_length(v_meta)::text || ':' || v_meta, '-'),
        coalesce(octet_length(e.key_id)::text || ':' || e.key_id, '-'),
        coalesce(octet_length(v_at)::text || ':' || v_at, '-'),
        coalesce(octet_length(v_prev)::text || ':' || v_prev, '-')
    ) || v_tail, 'UTF8'));
END;
$$;

-- The hash of an audit event, over its fields and ev.prev_hash. Called by the audit_events_link
-- trigger (migration 0006), which also moves the chain's head.
CREATE OR REPLACE FUNCTION ledger.audit_event_digest(ev audit_events)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_at    text := (extract(epoch FROM ev.at) * 1000000)::bigint::text;
    v_prev  text := encode(ev.prev_hash, 'hex');
BEGIN
    RETURN sha256(convert_to(concat_ws('|',
        'audit-event-v1',
        coalesce(octet_length(ev.id)::text || ':' || ev.id, '-'),
        coalesce(octet_length(ev.seq::text)::text || ':' || ev.seq::text, '-'),
        coalesce(octet_length(ev.chain_seq::text)::text || ':' || ev.chain_seq::text, '-'),
        coalesce(octet_length(v_at)::text || ':' || v_at, '-'),
        coalesce(octet_length(ev.actor_key_id)::text || ':' || ev.actor_key_id, '-'),
        coalesce(octet_length(ev.actor_role)::text || ':' || ev.actor_role, '-'),
        coalesce(octet_length(ev.action)::text || ':' || ev.action, '-'),
        coalesce(octet_length(ev.target_type)::text || ':' || ev.target_type, '-'),
        coalesce(octet_length(ev.target_id)::text || ':' || ev.target_id, '-'),
        coalesce(octet_length(ev.before::text)::text || ':' || ev.before::text, '-'),
        coalesce(octet_length(ev.after::text)::text || ':' || ev.after::text, '-'),
        coalesce(octet_length(ev.request_id)::text || ':' || ev.request_id, '-'),
        coalesce(octet_length(ev.client_ip)::text || ':' || ev.client_ip, '-'),
        coalesce(octet_length(v_prev)::text || ':' || v_prev, '-')
    ), 'UTF8'));
END;
$$;

-- The next link of agent a's chain, ready to insert: numbered, timed and hashed. p_team_id is
-- the team the entry's money counts against (the agent's, or for a hold's entries the hold's).
-- The caller
-- holds a's balance row lock (which is what orders the chain) and writes the entry and a's
-- new head; the sequence only numbers entries across the whole ledger, and is drawn under the
-- team's lock too where there is one, so seq order is also the order each team's counters
-- moved in (verify replays them in that order). p_priced_by: 'server' or 'client', who priced
-- the amount (for a hold's later entries, whoever priced the hold). The cache and reasoning
-- counts: what the amount was priced from, beside p_input_tokens and p_output_tokens. p_run_id:
-- the run the entry belongs to (65_runs.sql), for a hold's later entries the hold's.
CREATE OR REPLACE FUNCTION ledger.next_entry(
    a                  balances,
    p_team_id          text,
    p_kind             text,
    p_amount           bigint,
    p_currency         text,
    p_model            text,
    p_input_tokens     bigint,
    p_output_tokens    bigint,
    p_hold_id          text,
    p_idempotency_key  text,
    p_description      text,
    p_metadata         jsonb,
    p_key_id           text,
    p_at               timestamptz,
    p_priced_by        text,
    p_cached_input_tokens  bigint,
    p_cache_write_tokens   bigint,
    p_reasoning_tokens     bigint,
    p_run_id           text DEFAULT NULL
)
RETURNS ledger_entries
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    e ledger_entries;
BEGIN
    e.id := ledger.new_id('ent');
    e.home_id := coalesce(p_team_id, a.owner_id);
    e.seq := nextval('ledger_entries_seq');
    e.chain_seq := a.entry_count + 1;
    e.agent_id := a.owner_id;
    e.team_id := p_team_id;
    e.kind := p_kind;
    e.amount := p_amount;
    e.currency := p_currency;
    e.model := p_model;
    e.input_tokens := p_input_tokens;
    e.output_tokens := p_output_tokens;
    e.hold_id := p_hold_id;
    e.idempotency_key := p_idempotency_key;
    e.description := p_description;
    e.metadata := coalesce(p_metadata, '{}'::jsonb);
    e.key_id := p_key_id;
    e.created_at := p_at;
    e.prev_hash := a.head_hash;
    e.priced_by := p_priced_by;
    e.cached_input_tokens := p_cached_input_tokens;
    e.cache_write_tokens := p_cache_write_tokens;
    e.reasoning_tokens := p_reasoning_tokens;
    e.run_id := p_run_id;
    e.hash_version := 3;
    e.hash := ledger.entry_digest(e);
    e.xid := pg_current_xact_id();
    RETURN e;
END;
$$;

-- Appends e (made by ledger.next_entry from a) and returns a with its head moved to e. The
-- caller saves a (ledger.save_balance) once, after its last entry.
-- Column by column, not VALUES (e.*): on Citus a function delegated inside a transaction
-- (force_delegation, agent_ledger/citus.py) may write only rows whose home it can see is its
-- own, and Citus reads no home out of a whole-row value. Every column of ledger_entries must
-- be named here (tests/test_ledger_integrity.py checks).
CREATE OR REPLACE FUNCTION ledger.link(a balances, e ledger_entries)
RETURNS balances
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO ledger_entries (
        id, seq, agent_id, team_id, kind, amount, currency, model, input_tokens, output_tokens,
        hold_id, idempotency_key, description, metadata, key_id, created_at, prev_hash, hash,
        xid, home_id, chain_seq, priced_by, hash_version, cached_input_tokens,
        cache_write_tokens, reasoning_tokens, run_id)
    VALUES (
        e.id, e.seq, e.agent_id, e.team_id, e.kind, e.amount, e.currency, e.model,
        e.input_tokens, e.output_tokens, e.hold_id, e.idempotency_key, e.description,
        e.metadata, e.key_id, e.created_at, e.prev_hash, e.hash, e.xid, e.home_id, e.chain_seq,
        e.priced_by, e.hash_version, e.cached_input_tokens, e.cache_write_tokens,
        e.reasoning_tokens, e.run_id);
    a.head_hash := e.hash;
    a.head_seq := e.seq;
    a.entry_count := a.entry_count + 1;
    RETURN a;
END;
$$;
