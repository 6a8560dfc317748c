"""SQL owned by prices."""

PRICE_COLUMNS = "model, currency, input_per_mtok, output_per_mtok, updated_at"

LIST_PRICES = f"SELECT {PRICE_COLUMNS} FROM prices ORDER BY model"

GET_PRICE_FOR_UPDATE = f"SELECT {PRICE_COLUMNS} FROM prices WHERE model = $1 FOR UPDATE"

UPSERT_PRICE = f"""
INSERT INTO prices (model, currency, input_per_mtok, output_per_mtok, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (model) DO UPDATE
SET currency = EXCLUDED.currency, input_per_mtok = EXCLUDED.input_per_mtok,
    output_per_mtok = EXCLUDED.output_per_mtok, updated_at = EXCLUDED.updated_at
RETURNING {PRICE_COLUMNS}
"""
