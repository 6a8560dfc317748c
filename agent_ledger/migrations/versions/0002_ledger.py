"""Ledger: prices, balances with budgets, holds, idempotency and the append-only entries.

Every money decision is one call of a plpgsql function (DESIGN.md rule 2): it locks the agent's
balance row, then its team's (always in that order, so concurrent calls cannot deadlock), checks
every limit, appends the hash-chained entry, moves the counters and stores the idempotent answer,
all in the one transaction of that statement.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NANOS = 1_000_000_000

# Seeded from seeds/true-cost-of-ai-agent-infrastructure.txt, USD per million tokens.
SEED_PRICES = [
    ("gpt-4o", "2.50", "10.00"),
    ("gpt-4o-mini", "0.15", "0.60"),
    ("claude-sonnet-4.6", "3.00", "15.00"),
    ("claude-haiku-4.5", "0.25", "1.25"),
    ("gemini-1.5-pro", "1.25", "5.00"),
]

TABLES = [
    # Prices in nano-units per million tokens. More dimensions (cached input, per-call fees)
    # are new columns with a default of 0 and one more term in ledger_price().
    """
    CREATE TABLE prices (
        model            text PRIMARY KEY CHECK (char_length(model) BETWEEN 1 AND 100),
        currency         text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
        input_per_mtok   bigint NOT NULL CHECK (input_per_mtok >= 0),
        output_per_mtok  bigint NOT NULL CHECK (output_per_mtok >= 0),
        updated_at       timestamptz NOT NULL DEFAULT now()
    )
    """,
    # One row per agent and per team: limits, window counters, held amount and, for agents,
    # the head of the hash chain. Window counters carry the window they belong to, so a new
    # day or month starts at zero without any job rewriting rows.
    """
    CREATE TABLE balances (
        owner_id          text PRIMARY KEY,
        owner_type        text NOT NULL CHECK (owner_type IN ('agent', 'team')),
        team_id           text REFERENCES teams (id),
        agent_status      text CHECK (agent_status IN ('active', 'suspended')),
        currency          text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
        limit_total       bigint CHECK (limit_total >= 0),
        limit_month       bigint CHECK (limit_month >= 0),
        limit_day         bigint CHECK (limit_day >= 0),
        limit_per_charge  bigint CHECK (limit_per_charge >= 0),
        spent_total       bigint NOT NULL DEFAULT 0,
        spent_month       bigint NOT NULL DEFAULT 0,
        month_start       date NOT NULL DEFAULT '1970-01-01',
        spent_day         bigint NOT NULL DEFAULT 0,
        day_start         date NOT NULL DEFAULT '1970-01-01',
        held              bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
        head_hash         bytea,
        head_seq          bigint,
        entry_count       bigint NOT NULL DEFAULT 0 CHECK (entry_count >= 0),
        CHECK (owner_type = 'agent' OR (head_hash IS NULL AND agent_status IS NULL)),
        CHECK (owner_type = 'team' OR agent_status IS NOT NULL),
        CHECK (extract(day FROM month_start) = 1)
    )
    """,
    "CREATE SEQUENCE ledger_entries_seq AS bigint",
    """
    CREATE TABLE ledger_entries (
        id               text PRIMARY KEY,
        seq              bigint NOT NULL UNIQUE,
        agent_id         text NOT NULL REFERENCES agents (id),
        team_id          text REFERENCES teams (id),
        kind             text NOT NULL
                         CHECK (kind IN ('charge', 'hold', 'capture', 'release', 'expire',
                                         'adjustment')),
        amount           bigint NOT NULL,
        currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
        model            text,
        input_tokens     bigint CHECK (input_tokens >= 0),
        output_tokens    bigint CHECK (output_tokens >= 0),
        hold_id          text,
        idempotency_key  text,
        description      text CHECK (char_length(description) <= 1000),
        metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
        key_id           text,
        created_at       timestamptz NOT NULL,
        prev_hash        bytea,
        hash             bytea NOT NULL CHECK (octet_length(hash) = 32),
        xid              xid8 NOT NULL DEFAULT pg_current_xact_id(),
        CHECK (kind = 'adjustment' OR amount > 0),
        CHECK (amount <> 0),
        CHECK ((kind IN ('hold', 'capture', 'release', 'expire')) = (hold_id IS NOT NULL))
    )
    """,
    "CREATE INDEX ledger_entries_agent_idx ON ledger_entries (agent_id, seq)",
    "CREATE INDEX ledger_entries_order_idx ON ledger_entries (xid, seq)",
    # A hold resolves at most once: one capture, release or expire entry per hold, ever.
    """
    CREATE UNIQUE INDEX ledger_entries_one_resolution_per_hold ON ledger_entries (hold_id)
        WHERE kind IN ('capture', 'release', 'expire')
    """,
    """
    CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION refuse_change()
    """,
    """
    CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
        FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()
    """,
    """
    CREATE TABLE holds (
        id               text PRIMARY KEY,
        agent_id         text NOT NULL REFERENCES agents (id),
        team_id          text REFERENCES teams (id),
        amount           bigint NOT NULL CHECK (amount > 0),
        currency         text NOT NULL,
        status           text NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'captured', 'released', 'expired')),
        captured_amount  bigint CHECK (captured_amount > 0),
        model            text,
        description      text,
        metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
        key_id           text,
        created_at       timestamptz NOT NULL,
        expires_at       timestamptz NOT NULL,
        resolved_at      timestamptz,
        CHECK ((status = 'open') = (resolved_at IS NULL)),
        CHECK ((status = 'captured') = (captured_amount IS NOT NULL)),
        CHECK (expires_at > created_at)
    )
    """,
    "CREATE INDEX holds_open_by_agent_idx ON holds (agent_id, expires_at) WHERE status = 'open'",
    "CREATE INDEX holds_open_by_team_idx ON holds (team_id, expires_at) WHERE status = 'open'",
    "CREATE INDEX holds_open_by_expiry_idx ON holds (expires_at) WHERE status = 'open'",
    # Spend per agent, team, model and UTC hour, kept in the transaction of each spending entry,
    # so reports read thousands of rollup rows instead of millions of entries. An empty string
    # stands for "no team" and "no model" (primary key columns cannot be NULL).
    """
    CREATE TABLE spend_rollups (
        agent_id  text NOT NULL,
        team_id   text NOT NULL DEFAULT '',
        model     text NOT NULL DEFAULT '',
        hour      timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
        spent     bigint NOT NULL DEFAULT 0,
        charges   bigint NOT NULL DEFAULT 0 CHECK (charges >= 0),
        PRIMARY KEY (agent_id, hour, team_id, model)
    )
    """,
    "CREATE INDEX spend_rollups_hour_idx ON spend_rollups (hour)",
    "CREATE INDEX spend_rollups_team_hour_idx ON spend_rollups (team_id, hour)",
    # The answer to every idempotent request, stored in the transaction that decided it.
    """
    CREATE TABLE idempotency_keys (
        agent_id      text NOT NULL,
        key           text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
        request_hash  bytea NOT NULL,
        status        integer NOT NULL,
        response      jsonb NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (agent_id, key)
    )
    """,
]

# Every agent and team has a balance row from birth; the agent row mirrors its team and status
# so that the charge path reads them under the balance row lock it takes anyway.
BALANCE_TRIGGERS = [
    """
    CREATE FUNCTION balances_follow_owner() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'teams' THEN
            INSERT INTO balances (owner_id, owner_type) VALUES (NEW.id, 'team');
        ELSIF TG_OP = 'INSERT' THEN
            INSERT INTO balances (owner_id, owner_type, team_id, agent_status)
            VALUES (NEW.id, 'agent', NEW.team_id, NEW.status);
        ELSE
            UPDATE balances SET team_id = NEW.team_id, agent_status = NEW.status
            WHERE owner_id = NEW.id;
            -- Open holds are reserved against the old team; moving now would leave them there.
            -- Checked after the balance row lock above, so no hold can slip in meanwhile.
            IF OLD.team_id IS DISTINCT FROM NEW.team_id AND EXISTS (
                SELECT 1 FROM holds WHERE agent_id = NEW.id AND status = 'open'
                  AND expires_at > clock_timestamp())
            THEN
                RAISE EXCEPTION 'agent % has open holds; capture or release them first', NEW.id
                    USING ERRCODE = 'object_in_use';
            END IF;
        END IF;
        RETURN NEW;
    END;
    $$
    """,
    """
    CREATE TRIGGER teams_have_balances AFTER INSERT ON teams
        FOR EACH ROW EXECUTE FUNCTION balances_follow_owner()
    """,
    """
    CREATE TRIGGER agents_have_balances AFTER INSERT OR UPDATE OF team_id, status ON agents
        FOR EACH ROW EXECUTE FUNCTION balances_follow_owner()
    """,
    """
    INSERT INTO balances (owner_id, owner_type) SELECT id, 'team' FROM teams
    """,
    """
    INSERT INTO balances (owner_id, owner_type, team_id, agent_status)
    SELECT id, 'agent', team_id, status FROM agents
    """,
]

# The canonical encoding each entry's hash covers. agent_ledger/ledger/chain.py re-implements it
# independently for verification; keep the two in step (the tests compare them).
HASHING = [
    """
    CREATE FUNCTION ledger_canonical_field(v text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN v IS NULL THEN '-' ELSE octet_length(v)::text || ':' || v END
    $$
    """,
    """
    CREATE FUNCTION ledger_entry_digest(
        p_id text, p_seq bigint, p_agent_id text, p_team_id text, p_kind text, p_amount bigint,
        p_currency text, p_model text, p_input_tokens bigint, p_output_tokens bigint,
        p_hold_id text, p_idempotency_key text, p_description text, p_metadata jsonb,
        p_key_id text, p_created_at timestamptz, p_prev_hash bytea
    ) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT sha256(convert_to(concat_ws('|',
            'ledger-entry-v1',
            ledger_canonical_field(p_id),
            ledger_canonical_field(p_seq::text),
            ledger_canonical_field(p_agent_id),
            ledger_canonical_field(p_team_id),
            ledger_canonical_field(p_kind),
            ledger_canonical_field(p_amount::text),
            ledger_canonical_field(p_currency),
            ledger_canonical_field(p_model),
            ledger_canonical_field(p_input_tokens::text),
            ledger_canonical_field(p_output_tokens::text),
            ledger_canonical_field(p_hold_id),
            ledger_canonical_field(p_idempotency_key),
            ledger_canonical_field(p_description),
            ledger_canonical_field(p_metadata::text),
            ledger_canonical_field(p_key_id),
            ledger_canonical_field(
                (extract(epoch FROM p_created_at) * 1000000)::bigint::text),
            ledger_canonical_field(encode(p_prev_hash, 'hex'))
        ), 'UTF8'))
    $$
    """,
]

# Small pure helpers: JSON shapes and window arithmetic, shared by every money function.
HELPERS = [
    """
    CREATE FUNCTION ledger_ts(p timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    $$
    """,
    """
    CREATE FUNCTION ledger_entry_json(e ledger_entries) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT jsonb_build_object(
            'id', e.id, 'seq', e.seq, 'agent_id', e.agent_id, 'team_id', e.team_id,
            'kind', e.kind, 'amount', e.amount, 'currency', e.currency, 'model', e.model,
            'input_tokens', e.input_tokens, 'output_tokens', e.output_tokens,
            'hold_id', e.hold_id, 'idempotency_key', e.idempotency_key,
            'description', e.description, 'metadata', e.metadata, 'key_id', e.key_id,
            'created_at', ledger_ts(e.created_at), 'prev_hash', encode(e.prev_hash, 'hex'),
            'hash', encode(e.hash, 'hex'))
    $$
    """,
    """
    CREATE FUNCTION ledger_hold_json(h holds, p_now timestamptz) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT jsonb_build_object(
            'id', h.id, 'agent_id', h.agent_id, 'team_id', h.team_id, 'amount', h.amount,
            'currency', h.currency,
            -- a lapsed hold is expired the moment its time is up, swept or not
            'status', CASE WHEN h.status = 'open' AND h.expires_at <= p_now
                           THEN 'expired' ELSE h.status END,
            'captured_amount', h.captured_amount, 'model', h.model,
            'description', h.description, 'metadata', h.metadata,
            'created_at', ledger_ts(h.created_at), 'expires_at', ledger_ts(h.expires_at),
            'resolved_at', ledger_ts(h.resolved_at))
    $$
    """,
    """
    CREATE FUNCTION ledger_problem(p_status integer, p_code text, p_detail text,
                                   p_extra jsonb DEFAULT '{}'::jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT jsonb_build_object('status', p_status,
            'problem', jsonb_build_object('code', p_code, 'detail', p_detail) || p_extra)
    $$
    """,
    """
    CREATE FUNCTION ledger_spent_in(b balances, p_window text, p_now timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE p_window
            WHEN 'total' THEN b.spent_total
            WHEN 'month' THEN CASE WHEN b.month_start
                = date_trunc('month', p_now AT TIME ZONE 'UTC')::date THEN b.spent_month ELSE 0 END
            WHEN 'day' THEN CASE WHEN b.day_start
                = (p_now AT TIME ZONE 'UTC')::date THEN b.spent_day ELSE 0 END
        END
    $$
    """,
    # Open holds whose time is up count as held no longer, even before the sweeper closes them.
    """
    CREATE FUNCTION ledger_lapsed_held(b balances, p_now timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        v_lapsed bigint;
    BEGIN
        IF b.owner_type = 'agent' THEN
            SELECT coalesce(sum(amount), 0) INTO v_lapsed FROM holds
            WHERE agent_id = b.owner_id AND status = 'open' AND expires_at <= p_now;
        ELSE
            SELECT coalesce(sum(amount), 0) INTO v_lapsed FROM holds
            WHERE team_id = b.owner_id AND status = 'open' AND expires_at <= p_now;
        END IF;
        RETURN v_lapsed;
    END;
    $$
    """,
    """
    CREATE FUNCTION ledger_status(b balances, p_now timestamptz) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        v_held  bigint := b.held - ledger_lapsed_held(b, p_now);
        v_total bigint := ledger_spent_in(b, 'total', p_now);
        v_month bigint := ledger_spent_in(b, 'month', p_now);
        v_day   bigint := ledger_spent_in(b, 'day', p_now);
    BEGIN
        RETURN jsonb_build_object(
            'currency', b.currency,
            'limits', jsonb_build_object('total', b.limit_total, 'month', b.limit_month,
                                         'day', b.limit_day, 'per_charge', b.limit_per_charge),
            'spent', jsonb_build_object('total', v_total, 'month', v_month, 'day', v_day),
            'held', v_held,
            'remaining', jsonb_build_object(
                'total', CASE WHEN b.limit_total IS NOT NULL
                              THEN greatest(b.limit_total - v_total - v_held, 0) END,
                'month', CASE WHEN b.limit_month IS NOT NULL
                              THEN greatest(b.limit_month - v_month - v_held, 0) END,
                'day', CASE WHEN b.limit_day IS NOT NULL
                            THEN greatest(b.limit_day - v_day - v_held, 0) END));
    END;
    $$
    """,
    # NULL when p_amount fits every limit of b; else the 402 members of the first limit broken.
    # p_single is what per_charge bounds (for a capture: the whole capture, not just its excess).
    """
    CREATE FUNCTION ledger_refusal(b balances, p_amount bigint, p_single bigint,
                                   p_now timestamptz) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        v_held   bigint := b.held - ledger_lapsed_held(b, p_now);
        v_window text;
        v_limit  bigint;
        v_spent  bigint;
    BEGIN
        IF b.limit_per_charge IS NOT NULL AND p_single > b.limit_per_charge THEN
            RETURN jsonb_build_object('scope', b.owner_type, 'window', 'per_charge',
                'limit', b.limit_per_charge, 'spent', NULL, 'held', NULL,
                'requested', p_single);
        END IF;
        FOREACH v_window IN ARRAY ARRAY['total', 'month', 'day'] LOOP
            v_limit := CASE v_window WHEN 'total' THEN b.limit_total
                                     WHEN 'month' THEN b.limit_month ELSE b.limit_day END;
            CONTINUE WHEN v_limit IS NULL;
            v_spent := ledger_spent_in(b, v_window, p_now);
            IF v_spent + v_held + p_amount > v_limit THEN
                RETURN jsonb_build_object('scope', b.owner_type, 'window', v_window,
                    'limit', v_limit, 'spent', v_spent, 'held', v_held, 'requested', p_amount);
            END IF;
        END LOOP;
        RETURN NULL;
    END;
    $$
    """,
    """
    CREATE FUNCTION ledger_add_spent(p_owner_id text, p_amount bigint, p_now timestamptz)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        v_month date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
        v_day   date := (p_now AT TIME ZONE 'UTC')::date;
    BEGIN
        UPDATE balances SET
            spent_total = spent_total + p_amount,
            spent_month = CASE WHEN month_start = v_month THEN spent_month + p_amount
                               WHEN month_start > v_month THEN spent_month
                               ELSE p_amount END,
            month_start = greatest(month_start, v_month),
            spent_day = CASE WHEN day_start = v_day THEN spent_day + p_amount
                             WHEN day_start > v_day THEN spent_day
                             ELSE p_amount END,
            day_start = greatest(day_start, v_day)
        WHERE owner_id = p_owner_id;
    END;
    $$
    """,
    # Spending kinds (charge, capture, adjustment) move the counters of the agent, its team and
    # the hourly rollup together; charges and captures also count as charges in reports.
    """
    CREATE FUNCTION ledger_record_spend(p_agent_id text, p_team_id text, p_model text,
                                        p_kind text, p_amount bigint, p_now timestamptz)
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM ledger_add_spent(p_agent_id, p_amount, p_now);
        IF p_team_id IS NOT NULL THEN
            PERFORM ledger_add_spent(p_team_id, p_amount, p_now);
        END IF;
        INSERT INTO spend_rollups AS r (agent_id, team_id, model, hour, spent, charges)
        VALUES (p_agent_id, coalesce(p_team_id, ''), coalesce(p_model, ''),
                date_trunc('hour', p_now, 'UTC'), p_amount,
                CASE WHEN p_kind IN ('charge', 'capture') THEN 1 ELSE 0 END)
        ON CONFLICT (agent_id, hour, team_id, model) DO UPDATE
        SET spent = r.spent + EXCLUDED.spent, charges = r.charges + EXCLUDED.charges;
    END;
    $$
    """,
    """
    CREATE FUNCTION ledger_add_held(p_agent_id text, p_team_id text, p_amount bigint)
    RETURNS void LANGUAGE sql AS $$
        UPDATE balances SET held = held + p_amount WHERE owner_id IN (p_agent_id, p_team_id)
    $$
    """,
    # The most one charge, hold or capture may be, as agent_ledger/money.py MAX_AMOUNT: a million
    # units. Amounts given directly are checked there; priced ones here.
    """
    CREATE FUNCTION ledger_max_amount() RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1000000000000000::bigint $$
    """,
    """
    CREATE FUNCTION ledger_price(pr prices, p_input_tokens bigint, p_output_tokens bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        -- exact in numeric; a fraction of a nano-unit rounds up, never down
        SELECT ceil((coalesce(p_input_tokens, 0)::numeric * pr.input_per_mtok
                     + coalesce(p_output_tokens, 0)::numeric * pr.output_per_mtok)
                    / 1000000)::bigint
    $$
    """,
]

# Pricing tokens for a charge, hold or capture in a given currency: the amount, or the problem
# that refuses it (unknown model, another currency, free or beyond one charge's maximum).
PRICING = [
    """
    CREATE FUNCTION ledger_price_tokens(p_model text, p_currency text, p_input_tokens bigint,
                                        p_output_tokens bigint, OUT amount bigint,
                                        OUT problem jsonb)
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        pr prices;
    BEGIN
        SELECT * INTO pr FROM prices WHERE model = p_model;
        IF NOT FOUND THEN
            problem := ledger_problem(422, 'unknown-model',
                format('No price is set for model %L.', p_model));
            RETURN;
        END IF;
        IF pr.currency <> p_currency THEN
            problem := ledger_problem(422, 'currency-mismatch',
                format('Model %L is priced in %s; this budget is kept in %s.',
                       p_model, pr.currency, p_currency));
            RETURN;
        END IF;
        amount := ledger_price(pr, p_input_tokens, p_output_tokens);
        IF amount <= 0 OR amount > ledger_max_amount() THEN
            problem := ledger_problem(422, 'validation-error',
                'These tokens cost nothing, or more than one charge may; amounts must be'
                || ' greater than zero and at most ' || ledger_max_amount() / 1000000000 || '.');
            amount := NULL;
        END IF;
    END;
    $$
    """,
]

# Appending an entry: the next link of the agent's chain. The caller holds the agent's row lock,
# which is what orders the chain; the sequence only numbers entries across the whole ledger.
APPEND = [
    """
    CREATE FUNCTION ledger_append(
        p_agent_id text, p_team_id text, p_kind text, p_amount bigint, p_currency text,
        p_model text, p_input_tokens bigint, p_output_tokens bigint, p_hold_id text,
        p_idempotency_key text, p_description text, p_metadata jsonb, p_key_id text,
        p_now timestamptz
    ) RETURNS ledger_entries LANGUAGE plpgsql AS $$
    DECLARE
        e ledger_entries;
    BEGIN
        SELECT head_hash INTO e.prev_hash FROM balances WHERE owner_id = p_agent_id;
        e.id := 'ent_' || replace(gen_random_uuid()::text, '-', '');
        e.seq := nextval('ledger_entries_seq');
        e.agent_id := p_agent_id;
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
        e.created_at := p_now;
        e.hash := ledger_entry_digest(e.id, e.seq, e.agent_id, e.team_id, e.kind, e.amount,
            e.currency, e.model, e.input_tokens, e.output_tokens, e.hold_id,
            e.idempotency_key, e.description, e.metadata, e.key_id, e.created_at,
            e.prev_hash);
        e.xid := pg_current_xact_id();
        INSERT INTO ledger_entries SELECT e.*;
        UPDATE balances SET head_hash = e.hash, head_seq = e.seq, entry_count = entry_count + 1
        WHERE owner_id = p_agent_id;
        RETURN e;
    END;
    $$
    """,
    # Claims an idempotency key for this transaction. NULL: go ahead. Otherwise the answer to
    # return: the stored one (a replay), or 422 when the key came with a different request.
    # A concurrent duplicate waits here on the primary key until the first one commits.
    """
    CREATE FUNCTION ledger_claim_idempotency_key(p_agent_id text, p_key text,
                                                 p_request_hash bytea) RETURNS jsonb
    LANGUAGE plpgsql AS $$
    DECLARE
        r idempotency_keys;
    BEGIN
        IF p_key IS NULL THEN
            RETURN NULL;
        END IF;
        INSERT INTO idempotency_keys (agent_id, key, request_hash, status, response)
        VALUES (p_agent_id, p_key, p_request_hash, 0, 'null'::jsonb)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        SELECT * INTO r FROM idempotency_keys WHERE agent_id = p_agent_id AND key = p_key;
        IF r.request_hash <> p_request_hash THEN
            RETURN ledger_problem(422, 'idempotency-key-reused',
                'This Idempotency-Key was first used with a different request.');
        END IF;
        RETURN r.response || '{"replayed": true}'::jsonb;
    END;
    $$
    """,
    """
    CREATE FUNCTION ledger_finish(p_agent_id text, p_key text, p_result jsonb) RETURNS jsonb
    LANGUAGE plpgsql AS $$
    BEGIN
        IF p_key IS NOT NULL THEN
            UPDATE idempotency_keys SET status = (p_result ->> 'status')::integer,
                                        response = p_result
            WHERE agent_id = p_agent_id AND key = p_key;
        END IF;
        RETURN p_result;
    END;
    $$
    """,
]

MONEY_DECISIONS = [
    # Charges, holds and adjustments. p_amount NULL means: price p_model's tokens.
    """
    CREATE FUNCTION ledger_spend(
        p_kind text, p_agent_id text, p_amount bigint, p_currency text, p_model text,
        p_input_tokens bigint, p_output_tokens bigint, p_description text, p_metadata jsonb,
        p_key_id text, p_idempotency_key text, p_request_hash bytea, p_ttl_seconds integer,
        p_now timestamptz
    ) RETURNS jsonb LANGUAGE plpgsql AS $$
    DECLARE
        v_answer   jsonb;
        a          balances;
        t          balances;
        v_price    record;
        h          holds;
        e          ledger_entries;
        v_now      timestamptz;
        v_amount   bigint := p_amount;
        v_currency text;
    BEGIN
        IF p_kind NOT IN ('charge', 'hold', 'adjustment') THEN
            RAISE EXCEPTION 'ledger_spend: unknown kind %', p_kind;
        END IF;
        v_answer := ledger_claim_idempotency_key(p_agent_id, p_idempotency_key, p_request_hash);
        IF v_answer IS NOT NULL THEN
            RETURN v_answer;
        END IF;

        -- Lock order, everywhere: the agent's balance row, then its team's.
        SELECT * INTO a FROM balances
        WHERE owner_id = p_agent_id AND owner_type = 'agent' FOR UPDATE;
        IF NOT FOUND THEN
            RETURN ledger_finish(p_agent_id, p_idempotency_key,
                ledger_problem(404, 'not-found', format('No agent with id %L.', p_agent_id)));
        END IF;
        IF a.team_id IS NOT NULL THEN
            SELECT * INTO t FROM balances WHERE owner_id = a.team_id FOR UPDATE;
        END IF;
        -- Read the clock only once the locks are held, so time never runs backwards along
        -- one agent's chain or one team's counters.
        v_now := coalesce(p_now, clock_timestamp());

        IF p_kind <> 'adjustment' AND a.agent_status = 'suspended' THEN
            RETURN ledger_finish(p_agent_id, p_idempotency_key,
                ledger_problem(403, 'agent-suspended',
                    format('Agent %L is suspended and may not spend.', p_agent_id)));
        END IF;

        v_currency := coalesce(p_currency, a.currency);
        IF v_currency <> a.currency OR (t.owner_id IS NOT NULL AND v_currency <> t.currency) THEN
            RETURN ledger_finish(p_agent_id, p_idempotency_key,
                ledger_problem(422, 'currency-mismatch',
                    format('The budget is kept in %s; this request is in %s.',
                           CASE WHEN v_currency <> a.currency THEN a.currency
                                ELSE t.currency END, v_currency)));
        END IF;

        IF v_amount IS NULL THEN
            SELECT * INTO v_price FROM ledger_price_tokens(p_model, v_currency,
                                                           p_input_tokens, p_output_tokens);
            IF v_price.problem IS NOT NULL THEN
                RETURN ledger_finish(p_agent_id, p_idempotency_key, v_price.problem);
            END IF;
            v_amount := v_price.amount;
        END IF;

        IF p_kind <> 'adjustment' THEN
            v_answer := ledger_refusal(a, v_amount, v_amount, v_now);
            IF v_answer IS NULL AND t.owner_id IS NOT NULL THEN
                v_answer := ledger_refusal(t, v_amount, v_amount, v_now);
            END IF;
            IF v_answer IS NOT NULL THEN
                RETURN ledger_finish(p_agent_id, p_idempotency_key,
                    ledger_problem(402, 'budget-exceeded',
                        'This would take the budget past its limit.', v_answer));
            END IF;
        END IF;

        IF p_kind = 'hold' THEN
            INSERT INTO holds (id, agent_id, team_id, amount, currency, model, description,
                               metadata, key_id, created_at, expires_at)
            VALUES ('hold_' || replace(gen_random_uuid()::text, '-', ''), p_agent_id,
                    a.team_id, v_amount, v_currency, p_model, p_description,
                    coalesce(p_metadata, '{}'::jsonb), p_key_id, v_now,
                    v_now + make_interval(secs => p_ttl_seconds))
            RETURNING * INTO h;
            PERFORM ledger_add_held(p_agent_id, a.team_id, v_amount);
        ELSE
            PERFORM ledger_record_spend(p_agent_id, a.team_id, p_model, p_kind, v_amount, v_now);
        END IF;
        e := ledger_append(p_agent_id, a.team_id, p_kind, v_amount, v_currency, p_model,
                           p_input_tokens, p_output_tokens, h.id, p_idempotency_key,
                           p_description, p_metadata, p_key_id, v_now);

        SELECT * INTO a FROM balances WHERE owner_id = p_agent_id;
        v_answer := jsonb_build_object('status', 201, 'entry', ledger_entry_json(e),
                                       'budget', ledger_status(a, v_now));
        IF p_kind = 'hold' THEN
            v_answer := v_answer || jsonb_build_object('hold', ledger_hold_json(h, v_now));
        END IF;
        RETURN ledger_finish(p_agent_id, p_idempotency_key, v_answer);
    END;
    $$
    """,
    # Closes one open hold as expired. The caller holds the agent's and the team's row locks.
    """
    CREATE FUNCTION ledger_expire_hold(h holds, p_now timestamptz) RETURNS ledger_entries
    LANGUAGE plpgsql AS $$
    DECLARE
        e ledger_entries;
    BEGIN
        UPDATE holds SET status = 'expired', resolved_at = p_now
        WHERE id = h.id AND status = 'open';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'hold % is not open', h.id;
        END IF;
        PERFORM ledger_add_held(h.agent_id, h.team_id, -h.amount);
        e := ledger_append(h.agent_id, h.team_id, 'expire', h.amount, h.currency, h.model,
                           NULL, NULL, h.id, NULL, NULL, NULL, NULL, p_now);
        RETURN e;
    END;
    $$
    """,
    # Capture and release share the locking and the checks that a hold is still open.
    # p_action: 'capture' or 'release'; p_amount NULL with p_model set means: price the tokens;
    # both NULL on capture means: capture the whole hold.
    """
    CREATE FUNCTION ledger_resolve_hold(
        p_action text, p_hold_id text, p_caller_agent_id text, p_amount bigint, p_model text,
        p_input_tokens bigint, p_output_tokens bigint, p_key_id text, p_idempotency_key text,
        p_request_hash bytea, p_now timestamptz
    ) RETURNS jsonb LANGUAGE plpgsql AS $$
    DECLARE
        v_answer  jsonb;
        a         balances;
        t         balances;
        v_price   record;
        h         holds;
        e         ledger_entries;
        v_now     timestamptz;
        v_amount  bigint := p_amount;
        v_closed  text;
    BEGIN
        SELECT * INTO h FROM holds WHERE id = p_hold_id;
        IF NOT FOUND OR (p_caller_agent_id IS NOT NULL AND h.agent_id <> p_caller_agent_id) THEN
            -- Another agent's hold is reported as missing: its existence is not theirs to know.
            RETURN ledger_problem(404, 'not-found', format('No hold with id %L.', p_hold_id));
        END IF;
        v_answer := ledger_claim_idempotency_key(h.agent_id, p_idempotency_key, p_request_hash);
        IF v_answer IS NOT NULL THEN
            RETURN v_answer;
        END IF;

        SELECT * INTO a FROM balances WHERE owner_id = h.agent_id FOR UPDATE;
        IF h.team_id IS NOT NULL THEN
            SELECT * INTO t FROM balances WHERE owner_id = h.team_id FOR UPDATE;
        END IF;
        SELECT * INTO h FROM holds WHERE id = p_hold_id FOR UPDATE;
        v_now := coalesce(p_now, clock_timestamp());

        IF h.status <> 'open' THEN
            v_closed := h.status;
        ELSIF h.expires_at <= v_now THEN
            -- Its time is up: close it as expired right here, then refuse.
            PERFORM ledger_expire_hold(h, v_now);
            RETURN ledger_finish(h.agent_id, p_idempotency_key,
                ledger_problem(409, 'hold-expired',
                    format('Hold %L expired at %s.', h.id, ledger_ts(h.expires_at))));
        END IF;
        IF v_closed IS NOT NULL THEN
            IF v_closed = 'expired' THEN
                RETURN ledger_finish(h.agent_id, p_idempotency_key,
                    ledger_problem(409, 'hold-expired',
                        format('Hold %L expired at %s.', h.id, ledger_ts(h.expires_at))));
            END IF;
            RETURN ledger_finish(h.agent_id, p_idempotency_key,
                ledger_problem(409, 'hold-closed',
                    format('Hold %L is already %s.', h.id, v_closed)));
        END IF;

        IF p_action = 'release' THEN
            UPDATE holds SET status = 'released', resolved_at = v_now WHERE id = h.id
            RETURNING * INTO h;
            PERFORM ledger_add_held(h.agent_id, h.team_id, -h.amount);
            e := ledger_append(h.agent_id, h.team_id, 'release', h.amount, h.currency, h.model,
                               NULL, NULL, h.id, NULL, NULL, NULL, p_key_id, v_now);
            SELECT * INTO a FROM balances WHERE owner_id = h.agent_id;
            RETURN jsonb_build_object('status', 200, 'hold', ledger_hold_json(h, v_now),
                                      'entry', ledger_entry_json(e),
                                      'budget', ledger_status(a, v_now));
        END IF;

        IF v_amount IS NULL AND p_model IS NOT NULL THEN
            SELECT * INTO v_price FROM ledger_price_tokens(p_model, h.currency,
                                                           p_input_tokens, p_output_tokens);
            IF v_price.problem IS NOT NULL THEN
                RETURN ledger_finish(h.agent_id, p_idempotency_key, v_price.problem);
            END IF;
            v_amount := v_price.amount;
        END IF;
        v_amount := coalesce(v_amount, h.amount);

        -- Only the part beyond the hold is new spending; it must pass the rule on its own. A
        -- suspended agent may still record what it spent within a hold taken before, not more.
        IF v_amount > h.amount AND a.agent_status = 'suspended' THEN
            RETURN ledger_finish(h.agent_id, p_idempotency_key,
                ledger_problem(403, 'agent-suspended',
                    format('Agent %L is suspended; it may capture up to its hold, not beyond.',
                           h.agent_id)));
        END IF;
        IF v_amount > h.amount THEN
            v_answer := ledger_refusal(a, v_amount - h.amount, v_amount, v_now);
            IF v_answer IS NULL AND t.owner_id IS NOT NULL THEN
                v_answer := ledger_refusal(t, v_amount - h.amount, v_amount, v_now);
            END IF;
            IF v_answer IS NOT NULL THEN
                RETURN ledger_finish(h.agent_id, p_idempotency_key,
                    ledger_problem(402, 'budget-exceeded',
                        'Capturing more than the hold would take the budget past its limit.',
                        v_answer));
            END IF;
        END IF;

        UPDATE holds SET status = 'captured', captured_amount = v_amount, resolved_at = v_now
        WHERE id = h.id RETURNING * INTO h;
        PERFORM ledger_add_held(h.agent_id, h.team_id, -h.amount);
        PERFORM ledger_record_spend(h.agent_id, h.team_id, coalesce(p_model, h.model),
                                    'capture', v_amount, v_now);
        e := ledger_append(h.agent_id, h.team_id, 'capture', v_amount, h.currency,
                           coalesce(p_model, h.model), p_input_tokens, p_output_tokens, h.id,
                           p_idempotency_key, h.description, h.metadata, p_key_id, v_now);
        SELECT * INTO a FROM balances WHERE owner_id = h.agent_id;
        RETURN ledger_finish(h.agent_id, p_idempotency_key,
            jsonb_build_object('status', 201, 'entry', ledger_entry_json(e),
                               'hold', ledger_hold_json(h, v_now),
                               'budget', ledger_status(a, v_now)));
    END;
    $$
    """,
    # The sweeper's unit of work: one agent's lapsed holds, in expiry order. An agent whose row
    # another transaction holds is skipped (SKIP LOCKED) and swept on a later pass, so any
    # number of processes can sweep side by side without waiting on each other.
    """
    CREATE FUNCTION ledger_sweep_agent(p_agent_id text, p_now timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        h        holds;
        v_now    timestamptz;
        v_swept  integer := 0;
    BEGIN
        PERFORM 1 FROM balances WHERE owner_id = p_agent_id FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN 0;
        END IF;
        v_now := coalesce(p_now, clock_timestamp());
        -- Teams in id order: a fixed order, should the agent's holds span two teams.
        PERFORM 1 FROM balances WHERE owner_id IN (
            SELECT team_id FROM holds
            WHERE agent_id = p_agent_id AND status = 'open' AND expires_at <= v_now)
        ORDER BY owner_id FOR UPDATE;
        FOR h IN
            SELECT * FROM holds
            WHERE agent_id = p_agent_id AND status = 'open' AND expires_at <= v_now
            ORDER BY expires_at, id FOR UPDATE
        LOOP
            PERFORM ledger_expire_hold(h, v_now);
            v_swept := v_swept + 1;
        END LOOP;
        RETURN v_swept;
    END;
    $$
    """,
]

FUNCTIONS_TO_DROP = [
    "ledger_sweep_agent(text, timestamptz)",
    "ledger_resolve_hold(text, text, text, bigint, text, bigint, bigint, text, text, bytea,"
    " timestamptz)",
    "ledger_expire_hold(holds, timestamptz)",
    "ledger_spend(text, text, bigint, text, text, bigint, bigint, text, jsonb, text, text,"
    " bytea, integer, timestamptz)",
    "ledger_finish(text, text, jsonb)",
    "ledger_claim_idempotency_key(text, text, bytea)",
    "ledger_append(text, text, text, bigint, text, text, bigint, bigint, text, text, text,"
    " jsonb, text, timestamptz)",
    "ledger_price(prices, bigint, bigint)",
    "ledger_max_amount()",
    "ledger_price_tokens(text, text, bigint, bigint)",
    "ledger_add_held(text, text, bigint)",
    "ledger_record_spend(text, text, text, text, bigint, timestamptz)",
    "ledger_add_spent(text, bigint, timestamptz)",
    "ledger_refusal(balances, bigint, bigint, timestamptz)",
    "ledger_status(balances, timestamptz)",
    "ledger_lapsed_held(balances, timestamptz)",
    "ledger_spent_in(balances, text, timestamptz)",
    "ledger_problem(integer, text, text, jsonb)",
    "ledger_hold_json(holds, timestamptz)",
    "ledger_entry_json(ledger_entries)",
    "ledger_ts(timestamptz)",
    "ledger_entry_digest(text, bigint, text, text, text, bigint, text, text, bigint, bigint,"
    " text, text, text, jsonb, text, timestamptz, bytea)",
    "ledger_canonical_field(text)",
]


def _seed_prices() -> list[str]:
    def nanos(decimal: str) -> int:
        whole, _, fraction = decimal.partition(".")
        return int(whole) * NANOS + int(fraction.ljust(9, "0"))

    return [
        f"INSERT INTO prices (model, input_per_mtok, output_per_mtok) "
        f"VALUES ('{model}', {nanos(inp)}, {nanos(out)})"
        for model, inp, out in SEED_PRICES
    ]


def upgrade() -> None:
    for statement in [
        *TABLES,
        *BALANCE_TRIGGERS,
        *HASHING,
        *HELPERS,
        *PRICING,
        *APPEND,
        *MONEY_DECISIONS,
        *_seed_prices(),
    ]:
        op.execute(statement)


def downgrade() -> None:
    for function in FUNCTIONS_TO_DROP:
        op.execute(f"DROP FUNCTION {function}")
    for statement in [
        "DROP TRIGGER agents_have_balances ON agents",
        "DROP TRIGGER teams_have_balances ON teams",
        "DROP FUNCTION balances_follow_owner()",
        "DROP TABLE idempotency_keys",
        "DROP TABLE spend_rollups",
        "DROP TABLE holds",
        "DROP TABLE ledger_entries",
        "DROP SEQUENCE ledger_entries_seq",
        "DROP TABLE balances",
        "DROP TABLE prices",
    ]:
        op.execute(statement)
