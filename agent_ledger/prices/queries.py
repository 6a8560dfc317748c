"""SQL owned by prices. A price change is a new row from its ``effective_from``; a model's price
at a time is its row with the latest ``effective_from`` not after it (ledger.price_tokens in
agent_ledger/ledger/sql/30_pricing.sql decides charges by the same rule)."""

PRICE_COLUMNS = (
    "model, currency, input_per_mtok, cached_input_per_mtok, cache_write_per_mtok,"
    " output_per_mtok, per_request, tiers, effective_from, updated_at"
)

# The database's clock: "never in the past" is judged by it, as decisions are.
NOW = "SELECT now()"

# Each model's price in force at $1, and every change scheduled after it.
PRICES_AT = f"""
SELECT DISTINCT ON (model) {PRICE_COLUMNS} FROM prices
WHERE effective_from <= $1
ORDER BY model, effective_from DESC
"""
SCHEDULED_AFTER = f"""
SELECT {PRICE_COLUMNS} FROM prices WHERE effective_from > $1 ORDER BY effective_from, model
"""

# Changes of one model, one at a time (the row to replace may not exist yet to lock).
LOCK_MODEL = "SELECT pg_advisory_xact_lock(hashtext('agent-ledger:price:' || $1))"

# What a change at $2 replaces: the row at that very time (a scheduled one), else the one in
# force then.
PRICE_AT = f"""
SELECT {PRICE_COLUMNS} FROM prices WHERE model = $1 AND effective_from <= $2
ORDER BY effective_from DESC LIMIT 1
"""

UPSERT_PRICE = f"""
INSERT INTO prices (model, currency, input_per_mtok, cached_input_per_mtok, cache_write_per_mtok,
                    output_per_mtok, per_request, tiers, effective_from, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
ON CONFLICT (model, effective_from) DO UPDATE
SET currency = EXCLUDED.currency, input_per_mtok = EXCLUDED.input_per_mtok,
    cached_input_per_mtok = EXCLUDED.cached_input_per_mtok,
    cache_write_per_mtok = EXCLUDED.cache_write_per_mtok,
    output_per_mtok = EXCLUDED.output_per_mtok, per_request = EXCLUDED.per_request,
    tiers = EXCLUDED.tiers, updated_at = EXCLUDED.updated_at
RETURNING {PRICE_COLUMNS}
"""
