-- Small pure helpers shared by every money decision: problems, windows, ranges.
--
-- Applied by `agent-ledger migrate` (agent_ledger/migrate.py) in file-name order, in one
-- transaction, after the versioned migrations. Every function here lives in schema `ledger`;
-- the tables stay in `public`. Functions refer to each other schema-qualified, and to tables
-- unqualified, so no function needs a SET search_path clause (which would keep the planner
-- from inlining it and cost every call a GUC save and restore).

-- The answer of a refused decision: an RFC 9457 problem's status, code and detail plus its
-- members. Money members are integer nano-units here; the service formats them as decimal
-- strings (agent_ledger/ledger/render.py).
CREATE OR REPLACE FUNCTION ledger.problem(p_status integer, p_code text, p_detail text,
                               p_members jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_build_object('status', p_status, 'code', p_code, 'detail', p_detail)
        || p_members
$$;

-- Exact integer division rounding up, for numerators >= 0 of any size. (ceil(n / d) would not
-- do: numeric division keeps about 16 significant digits and can round a cost down.)
CREATE OR REPLACE FUNCTION ledger.ceil_div(p_numerator numeric, p_denominator numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT div(p_numerator + p_denominator - 1, p_denominator)
$$;

-- The largest value any counter (a bigint) can hold. Amounts, limits and counters are all
-- bigint nano-units, so this is the one bound on every one of them.
CREATE OR REPLACE FUNCTION ledger.max_nanos()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 9223372036854775807::bigint
$$;

-- The UTC calendar month and day a moment falls in: the windows of month and day limits.
CREATE OR REPLACE FUNCTION ledger.month_of(p_at timestamptz)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT date_trunc('month', p_at AT TIME ZONE 'UTC')::date
$$;

CREATE OR REPLACE FUNCTION ledger.day_of(p_at timestamptz)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (p_at AT TIME ZONE 'UTC')::date
$$;

-- prefix + '_' + 32 hex digits: the ids the database mints itself (entries, holds).
CREATE OR REPLACE FUNCTION ledger.new_id(p_prefix text)
RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT p_prefix || '_' || replace(gen_random_uuid()::text, '-', '')
$$;

-- The listing horizon of commit-order paging (agent_ledger/keyset.py): the snapshot's
-- in-progress transactions that may write here (all but those pg_stat_activity places in
-- another database) bound it from below; with none, the snapshot's xmax. Rows carry top-level
-- xids (pg_current_xact_id() in a subtransaction gives the top-level one), and a running
-- top-level xid is always in the snapshot, suboverflowed or not. Leaving out other databases'
-- transactions keeps a long COPY next door from holding every listing here back; one that
-- cannot be placed still holds the horizon, so the rule can only err towards waiting.
CREATE OR REPLACE FUNCTION ledger.listing_horizon()
RETURNS xid8
LANGUAGE sql STABLE
AS $$
    SELECT least(pg_snapshot_xmax(s), (
        SELECT min(x) FROM pg_snapshot_xip(s) AS x
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_stat_activity AS a
            WHERE a.backend_xid = x::xid AND a.datname <> current_database())))
    FROM pg_current_snapshot() AS s
$$;

-- A money request as the service passes it: what the HTTP request asked for, unjudged.
-- action: 'charge', 'hold', 'capture', 'release' or 'adjustment'. key_hash: the caller's API key
-- (its HMAC), authenticated by the decision itself. agent_id: the agent a staff key names (an
-- agent key acts for its own). amount NULL with a model: price the tokens. The cache and
-- reasoning counts come last (added with them, issue 14); reasoning_tokens are part of
-- output_tokens, recorded and not priced apart. run_id (issue 17): the agent's task or session
-- a charge or hold is for (65_runs.sql); for a capture, only to be checked against its hold's.
CREATE TYPE ledger.request AS (
    action           text,
    key_hash         bytea,
    agent_id         text,
    hold_id          text,
    amount           bigint,
    currency         text,
    model            text,
    input_tokens     bigint,
    output_tokens    bigint,
    description      text,
    metadata         jsonb,
    idempotency_key  text,
    request_hash     bytea,
    ttl_seconds      integer,
    context          jsonb,
    cached_input_tokens  bigint,
    cache_write_tokens   bigint,
    reasoning_tokens     bigint,
    run_id               text
);

-- Nano-units as the shortest exact decimal string (as agent_ledger/money.py format_amount),
-- for the few records written in SQL: 17500000 -> '0.0175'.
CREATE OR REPLACE FUNCTION ledger.decimal_text(p_nanos bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_nanos < 0 THEN '-' ELSE '' END
        || (abs(p_nanos) / 1000000000)::text
        || CASE WHEN abs(p_nanos) % 1000000000 = 0 THEN ''
                ELSE '.' || rtrim(lpad((abs(p_nanos) % 1000000000)::text, 9, '0'), '0') END
$$;

-- What every money decision answers: an HTTP status; whether it is a replay of an answer
-- given before under the same Idempotency-Key; the problem when refused; else the entry it
-- wrote, the hold it made or closed (if any) and the agent's budget right after it. key_id,
-- agent_id and team_id say who asked and for whom (the service batches by team and keeps
-- keys' last use).
CREATE TYPE ledger.outcome AS (
    status    integer,
    replayed  boolean,
    problem   jsonb,
    entry     ledger_entries,
    hold      holds,
    budget    budget_snapshot,
    key_id    text,
    agent_id  text,
    team_id   text
);

-- A refusal as an outcome.
CREATE OR REPLACE FUNCTION ledger.refused(p_problem jsonb)
RETURNS ledger.outcome
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ROW((p_problem ->> 'status')::integer, false, p_problem, NULL, NULL, NULL, NULL,
               NULL, NULL)::ledger.outcome
$$;
