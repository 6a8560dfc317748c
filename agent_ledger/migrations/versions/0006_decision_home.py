"""The money decision moves to .sql files; compact idempotent answers; a chained audit log.

1. The ledger's callable functions leave this migration history for good: they now live in
   ``agent_ledger/ledger/sql/*.sql`` (schema ``ledger``), applied by ``agent-ledger migrate``
   after the versioned migrations (``agent_ledger/migrate.py``). This drops the copies that
   0002 and 0003 created in ``public``. Trigger functions stay here: they are part of the
   schema, like the triggers that call them.
2. An idempotent answer is stored as what it takes to give it again (status, the problem of a
   refusal, the entry and hold it wrote, the budget right after it) instead of the whole JSON
   answer (~1.5 KB a row). The entry and the hold are immutable records; the budget is the one
   thing that changes afterwards, so it is the one thing kept.
3. Every counter keeps its type's range: CHECKs say so for the spent windows, which a refund can
   lower but never below zero (see 20_budgets.sql).
4. The staff audit log becomes tamper-evident like the ledger: each event's hash covers its
   fields and the hash before it, in one chain whose head lives in ``audit_chain``; a trigger
   links every insert, whoever makes it. Inserts take the chain head's row lock, so an audit
   event is always the last write of its transaction (nothing waits on a ledger lock while
   holding it). Checkpoints now also record the audit chain's head.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The callable functions of 0002 and 0003, now defined in agent_ledger/ledger/sql/.
_OLD_FUNCTIONS = [
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
    "ledger_listing_horizon()",
]

# The canonical text an audit event's hash covers, for the events that exist before the chain
# does. agent_ledger/ledger/sql/10_chain.sql (ledger.audit_event_digest) and
# agent_ledger/audit/chain.py define the same encoding; verify checks these rows with the latter.
_AUDIT_DIGEST_SQL = """
sha256(convert_to(concat_ws('|', 'audit-event-v1',
    {f}(e.id), {f}(e.seq::text), {f}(n::text),
    {f}((extract(epoch FROM e.at) * 1000000)::bigint::text),
    {f}(e.actor_key_id), {f}(e.actor_role), {f}(e.action), {f}(e.target_type),
    {f}(e.target_id), {f}(e.before::text), {f}(e.after::text), {f}(e.request_id),
    {f}(e.client_ip), {f}(encode(prev, 'hex'))), 'UTF8'))
"""

UPGRADE = [
    *(f"DROP FUNCTION {function}" for function in _OLD_FUNCTIONS),
    "CREATE SCHEMA ledger",
    # What `migrate` last applied from the .sql files, so that applying them again when nothing
    # changed does nothing at all.
    """
    CREATE TABLE ledger_sql_applied (
        digest      bytea NOT NULL CHECK (octet_length(digest) = 32),
        applied_at  timestamptz NOT NULL DEFAULT now()
    )
    """,
    # --- compact idempotent answers ------------------------------------------------------------
    """
    CREATE TYPE budget_snapshot AS (
        currency          text,
        limit_total       bigint,
        limit_month       bigint,
        limit_day         bigint,
        limit_per_charge  bigint,
        spent_total       bigint,
        spent_month       bigint,
        spent_day         bigint,
        held              bigint
    )
    """,
    """
    ALTER TABLE idempotency_keys
        ADD COLUMN problem   jsonb,
        ADD COLUMN entry_id  text,
        ADD COLUMN hold_id   text,
        ADD COLUMN budget    budget_snapshot
    """,
    # Answers stored by 0002's functions: a refusal's problem, or the entry, hold and budget.
    """
    UPDATE idempotency_keys SET
        problem = (response -> 'problem') || jsonb_build_object('status', response -> 'status'),
        entry_id = response #>> '{entry,id}',
        hold_id = response #>> '{hold,id}',
        budget = CASE WHEN response ? 'budget' THEN ROW(
            response #>> '{budget,currency}',
            (response #>> '{budget,limits,total}')::bigint,
            (response #>> '{budget,limits,month}')::bigint,
            (response #>> '{budget,limits,day}')::bigint,
            (response #>> '{budget,limits,per_charge}')::bigint,
            (response #>> '{budget,spent,total}')::bigint,
            (response #>> '{budget,spent,month}')::bigint,
            (response #>> '{budget,spent,day}')::bigint,
            (response #>> '{budget,held}')::bigint)::budget_snapshot END
    """,
    "ALTER TABLE idempotency_keys DROP COLUMN response",
    """
    ALTER TABLE idempotency_keys
        ADD CONSTRAINT idempotency_keys_answer CHECK ((problem IS NULL) = (entry_id IS NOT NULL))
    """,
    # --- counters within range -------------------------------------------------------------------
    # NOT VALID: rows written before this release may break it (0002 let a refund take a window
    # below zero); verify reports those, and new writes are held to it.
    """
    ALTER TABLE balances ADD CONSTRAINT balances_spent_not_negative
        CHECK (spent_total >= 0 AND spent_month >= 0 AND spent_day >= 0) NOT VALID
    """,
    # --- the audit chain -----------------------------------------------------------------------
    # chain_seq is the event's place in the chain, given under the chain's lock (seq is drawn
    # before it, so two concurrent inserts may link in the other order).
    """
    ALTER TABLE audit_events
        ADD COLUMN chain_seq  bigint UNIQUE,
        ADD COLUMN prev_hash  bytea,
        ADD COLUMN hash       bytea CHECK (octet_length(hash) = 32)
    """,
    # One row: the chain's head. Its row lock orders the chain.
    """
    CREATE TABLE audit_chain (
        id           boolean PRIMARY KEY DEFAULT true CHECK (id),
        head_hash    bytea,
        event_count  bigint NOT NULL DEFAULT 0 CHECK (event_count >= 0)
    )
    """,
    "INSERT INTO audit_chain DEFAULT VALUES",
    # Link the events that exist, in seq order.
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    f"""
    DO $$
    DECLARE
        e     audit_events;
        prev  bytea;
        n     bigint := 0;
    BEGIN
        FOR e IN SELECT * FROM audit_events ORDER BY seq LOOP
            n := n + 1;
            UPDATE audit_events SET chain_seq = n, prev_hash = prev,
                hash = {_AUDIT_DIGEST_SQL.format(f="pg_temp.audit_field")}
            WHERE id = e.id RETURNING hash INTO prev;
        END LOOP;
        UPDATE audit_chain SET head_hash = prev, event_count = n;
    END;
    $$
    """,
    "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
    "ALTER TABLE audit_events ALTER COLUMN chain_seq SET NOT NULL",
    "ALTER TABLE audit_events ALTER COLUMN hash SET NOT NULL",
    # Every insert, from the service or anyone else, becomes the next link.
    """
    CREATE FUNCTION audit_events_link() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        c audit_chain;
    BEGIN
        SELECT * INTO c FROM audit_chain FOR UPDATE;
        NEW.chain_seq := c.event_count + 1;
        NEW.prev_hash := c.head_hash;
        NEW.hash := ledger.audit_event_digest(NEW);
        UPDATE audit_chain SET head_hash = NEW.hash, event_count = NEW.chain_seq;
        RETURN NEW;
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_events_link BEFORE INSERT ON audit_events
        FOR EACH ROW EXECUTE FUNCTION audit_events_link()
    """,
    # Checkpoints now cover the audit chain too (format v2); v1 checkpoints stay verifiable.
    """
    ALTER TABLE ledger_checkpoints
        ADD COLUMN format            text NOT NULL DEFAULT 'agent-ledger-checkpoint-v1',
        ADD COLUMN audit_head_hash   bytea,
        ADD COLUMN audit_event_count bigint
    """,
    "ALTER TABLE ledger_checkpoints ALTER COLUMN format SET DEFAULT 'agent-ledger-checkpoint-v2'",
    # The service role (0005) calls the functions in schema ledger. Functions are executable by
    # everyone by default; the schema needs USAGE. New tables got 0005's default privileges.
    """
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agent_ledger_service') THEN
            GRANT USAGE ON SCHEMA ledger TO agent_ledger_service;
            REVOKE UPDATE ON ledger_sql_applied FROM agent_ledger_service;
        END IF;
    END
    $$
    """,
]

# A length-prefixed field, as in the digest functions; temporary, for the backfill above.
_FIELD_FUNCTION = """
CREATE FUNCTION pg_temp.audit_field(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '-' ELSE octet_length(v)::text || ':' || v END
$$
"""


def upgrade() -> None:
    op.execute(_FIELD_FUNCTION)
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    # 0002's and 0003's functions come back from their own migrations' text.
    import importlib

    ledger = importlib.import_module("agent_ledger.migrations.versions.0002_ledger")
    trail = importlib.import_module("agent_ledger.migrations.versions.0003_audit_trail")
    for statement in [
        "DROP TRIGGER audit_events_link ON audit_events",
        "DROP FUNCTION audit_events_link()",
        "ALTER TABLE ledger_checkpoints DROP COLUMN format, DROP COLUMN audit_head_hash,"
        " DROP COLUMN audit_event_count",
        "DROP TABLE audit_chain",
        "ALTER TABLE audit_events DROP COLUMN chain_seq, DROP COLUMN prev_hash, DROP COLUMN hash",
        "ALTER TABLE balances DROP CONSTRAINT balances_spent_not_negative",
        # Stored answers cannot be rebuilt into 0002's JSON shape; a downgrade forgets them.
        "DELETE FROM idempotency_keys",
        "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_answer,"
        " DROP COLUMN problem, DROP COLUMN entry_id, DROP COLUMN hold_id, DROP COLUMN budget,"
        " ADD COLUMN response jsonb NOT NULL DEFAULT 'null'",
        "DROP TYPE budget_snapshot",
        "DROP TABLE ledger_sql_applied",
        "DROP SCHEMA ledger CASCADE",
        *ledger.HASHING,
        *ledger.HELPERS,
        *ledger.PRICING,
        *ledger.APPEND,
        *ledger.MONEY_DECISIONS,
        trail.UPGRADE[0],
    ]:
        op.execute(statement)
