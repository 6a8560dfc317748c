"""SQL owned by prices. A price change is a new row from its ``effective_from``; a model's price
at a time is its row with the latest ``effective_from`` not after it (ledger.price_tokens in
agent_ledger/ledger/sql/30_pricing.sql decides charges by the same rule)."""

PRICE_COLUMNS = (
    "model, currency, input_per_mtok, cached_input_per_mtok, cache_write_per_mtok,"
    " output_per_mtok, per_request, tiers, effective_from, updated_at"
)

# The database's clock: "never in the past" is judged by it, as decisions are.
NOW = "SELECT now()"
# When a change takes effect by default: the clock as it is once LOCK_PRICES is held (not the
# transaction's start, now(), which may be long before the change can be seen).
CLOCK = "SELECT clock_timestamp()"

# A change of prices and the money decisions serialize on this table lock: every decision
# takes ROW SHARE on prices before it reads the clock or any price (ledger.decide,
# 75_decide.sql), and EXCLUSIVE conflicts with it (not with plain reads: listings, exports and
# backups go on). So a decision either ends before the change reads the clock, and the change
# takes effect after it, or starts after the change committed, and sees it: no charge is ever
# priced with a price history says was not in force at its decision. EXCLUSIVE also orders
# changes among themselves. On Citus the lock is taken on every node (the reference table's
# copies), where the decisions run.
LOCK_PRICES = "LOCK TABLE prices IN EXCLUSIVE MODE"

# Each model's price in force at $1, and every change scheduled after it.
PRICES_AT = f"""
SELECT DISTINCT ON (model) {PRICE_COLUMNS} FROM prices
WHERE effective_from <= $1
ORDER BY model, effective_from DESC
"""
SCHEDULED_AFTER = f"""
SELECT {PRICE_COLUMNS} FROM prices WHERE effective_from > $1 ORDER BY effective_from, model
"""

# What a change at $2 replaces: the row at that very time (a scheduled one), else the one in
# force then.
PRICE_AT = f"""
SELECT {PRICE_COLUMNS} FROM prices WHERE model = $1 AND effective_from <= $2
ORDER BY effective_from DESC LIMIT 1
"""
# The same for the models $1, at once (an import): one row per model that has one.
PRICES_OF_AT = f"""
SELECT DISTINCT ON (model) {PRICE_COLUMNS} FROM prices
WHERE model = ANY ($1::text[]) AND effective_from <= $2
ORDER BY model, effective_from DESC
"""

# Many prices from one effective_from ($9) at once (an import): one statement, so the prices
# lock is held for as short a time as the rows take to write. Tiers travel as JSON text: a list
# inside an array parameter would be read as another dimension of the array.
UPSERT_PRICES = f"""
INSERT INTO prices (model, currency, input_per_mtok, cached_input_per_mtok, cache_write_per_mtok,
                    output_per_mtok, per_request, tiers, effective_from, updated_at)
SELECT model, currency, input, cached, write, output, per_request, tiers::jsonb, $9, now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::text[])
     AS u(model, currency, input, cached, write, output, per_request, tiers)
ON CONFLICT (model, effective_from) DO UPDATE
SET currency = EXCLUDED.currency, input_per_mtok = EXCLUDED.input_per_mtok,
    cached_input_per_mtok = EXCLUDED.cached_input_per_mtok,
    cache_write_per_mtok = EXCLUDED.cache_write_per_mtok,
    output_per_mtok = EXCLUDED.output_per_mtok, per_request = EXCLUDED.per_request,
    tiers = EXCLUDED.tiers, updated_at = EXCLUDED.updated_at
RETURNING {PRICE_COLUMNS}
"""
