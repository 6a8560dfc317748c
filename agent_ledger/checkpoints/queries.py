"""SQL owned by checkpoints."""

# Every agent's chain head, as recorded on its balance row in the same transaction as the entry.
CHAIN_HEADS = """
SELECT owner_id AS agent_id, head_seq, head_hash, entry_count
FROM balances
WHERE owner_type = 'agent' AND head_hash IS NOT NULL
"""

# One checkpoint at a time across every process: taking it and reading the latest digest happen
# under this lock, so two processes never record the same state twice, and seq follows commit
# order (which is why listing checkpoints by seq is safe).
LOCK = "SELECT pg_advisory_xact_lock(hashtext('agent-ledger:ledger_checkpoints'))"

LATEST_DIGEST = "SELECT digest FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1"

# The staff audit log's chain head (migration 0006).
AUDIT_HEAD = "SELECT head_hash, event_count FROM audit_chain"

COLUMNS = (
    "id, seq, taken_at, digest, agent_count, entry_count, heads, source, format,"
    " audit_head_hash, audit_event_count"
)

INSERT_CHECKPOINT = f"""
INSERT INTO ledger_checkpoints (id, digest, agent_count, entry_count, heads, actor_key_id, source,
                                format, audit_head_hash, audit_event_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING {COLUMNS}
"""

GET_CHECKPOINT = f"SELECT {COLUMNS} FROM ledger_checkpoints WHERE id = $1"

FIND_BY_DIGEST = f"SELECT {COLUMNS} FROM ledger_checkpoints WHERE digest = $1 ORDER BY seq"

LIST_CHECKPOINTS = """
SELECT id, seq, taken_at, digest, agent_count, entry_count, source
FROM ledger_checkpoints
WHERE ($1::bigint IS NULL OR seq > $1)
ORDER BY seq
LIMIT $2
"""

# The entries of the checkpointed agents up to their recorded heads, chain by chain, in chain
# order (migration 0012) through the (agent_id, chain_seq) index, so that no sort is needed.
ENTRIES_UP_TO_HEADS = """
SELECT e.id, e.seq, e.agent_id, e.team_id, e.kind, e.amount, e.currency, e.model,
       e.input_tokens, e.output_tokens, e.hold_id, e.idempotency_key, e.description,
       e.metadata::text AS metadata_text, e.key_id, e.created_at, e.prev_hash, e.hash,
       e.priced_by, e.cached_input_tokens, e.cache_write_tokens, e.reasoning_tokens,
       e.run_id, e.hash_version
FROM ledger_entries AS e
WHERE e.agent_id = $1 AND e.chain_seq <= $2
ORDER BY e.chain_seq
"""
