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
-- per connection (about 0.03 ms a call against 0.26 ms).

CREATE OR REPLACE FUNCTION ledger.field(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_value IS NULL THEN '-' ELSE octet_length(p_value)::text || ':' || p_value END
$$;

-- Microseconds since the epoch: the exact, zone-free text of a timestamptz.
CREATE OR REPLACE FUNCTION ledger.micros(p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (extract(epoch FROM p_at) * 1000000)::bigint::text
$$;

-- The hash of a ledger entry, over its fields and e.prev_hash.
CREATE OR REPLACE FUNCTION ledger.entry_digest(e ledger_entries)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN sha256(convert_to(concat_ws('|',
        'ledger-entry-v1',
        ledger.field(e.id),
        ledger.field(e.seq::text),
        ledger.field(e.agent_id),
        ledger.field(e.team_id),
        ledger.field(e.kind),
        ledger.field(e.amount::text),
        ledger.field(e.currency),
        ledger.field(e.model),
        ledger.field(e.input_tokens::text),
        ledger.field(e.output_tokens::text),
        ledger.field(e.hold_id),
        ledger.field(e.idempotency_key),
        ledger.field(e.description),
        ledger.field(e.metadata::text),
        ledger.field(e.key_id),
        ledger.field(ledger.micros(e.created_at)),
        ledger.field(encode(e.prev_hash, 'hex'))
    ), 'UTF8'));
END;
$$;

-- The hash of an audit event, over its fields and ev.prev_hash. Called by the audit_events_link
-- trigger (migration 0006), which also moves the chain's head.
CREATE OR REPLACE FUNCTION ledger.audit_event_digest(ev audit_events)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN sha256(convert_to(concat_ws('|',
        'audit-event-v1',
        ledger.field(ev.id),
        ledger.field(ev.seq::text),
        ledger.field(ev.chain_seq::text),
        ledger.field(ledger.micros(ev.at)),
        ledger.field(ev.actor_key_id),
        ledger.field(ev.actor_role),
        ledger.field(ev.action),
        ledger.field(ev.target_type),
        ledger.field(ev.target_id),
        ledger.field(ev.before::text),
        ledger.field(ev.after::text),
        ledger.field(ev.request_id),
        ledger.field(ev.client_ip),
        ledger.field(encode(ev.prev_hash, 'hex'))
    ), 'UTF8'));
END;
$$;

-- The next link of agent a's chain, ready to insert: numbered, timed and hashed. p_team_id is
-- the team the entry's money counts against (the agent's, or for a hold's entries the hold's).
-- The caller
-- holds a's balance row lock (which is what orders the chain) and writes the entry and a's
-- new head; the sequence only numbers entries across the whole ledger, and is drawn under the
-- team's lock too where there is one, so seq order is also the order each team's counters
-- moved in (verify replays them in that order).
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
    p_at               timestamptz
)
RETURNS ledger_entries
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    e ledger_entries;
BEGIN
    e.id := ledger.new_id('ent');
    e.seq := nextval('ledger_entries_seq');
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
    e.hash := ledger.entry_digest(e);
    e.xid := pg_current_xact_id();
    RETURN e;
END;
$$;

-- Appends e (made by ledger.next_entry from a) and returns a with its head moved to e. The
-- caller saves a (ledger.save_balance) once, after its last entry.
CREATE OR REPLACE FUNCTION ledger.link(a balances, e ledger_entries)
RETURNS balances
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO ledger_entries VALUES (e.*);
    a.head_hash := e.hash;
    a.head_seq := e.seq;
    a.entry_count := a.entry_count + 1;
    RETURN a;
END;
$$;
