"""Who priced each entry, budgets that insist on the server's price, and prices that match
the provider's bill: cached and cache-write tokens, reasoning tokens, per-request fees,
long-context tiers, dated changes.

Issue 12: a client could send ``{"amount": "0.000000001", "model": "gpt-4o", ...}`` and have it
booked, and reported, as gpt-4o spend. Now:

- every new entry records ``priced_by``: 'server' (priced from model and tokens) or 'client'
  (an explicit amount). A hold keeps it too, so that its capture of the whole hold, its release
  and its expiry say who priced the money they move. Entries written before this revision stay
  NULL: nothing recorded then tells the two apart, and the ledger is append-only;
- the hash of an entry covers ``priced_by`` from this revision on: ``hash_version`` says which
  canonical encoding an entry was hashed with (1 for every older entry, 2 from now on; the
  version is itself inside the hashed text, so changing it breaks the hash);
- the report rollups are kept per ``priced_by`` too ('' for money recorded before), so reports
  can split or filter spend by who priced it without reading the ledger;
- a balance row (agent or team) may require server pricing; its budget status says so.

Issue 14:
- entries record every count they were priced from: ``cached_input_tokens``,
  ``cache_write_tokens`` and ``reasoning_tokens`` (part of ``output_tokens``, recorded, not
  priced apart), all covered by hash version 2;
- a price has cached-input and cache-write rates (each the input rate unless set), a
  per-request fee and tiers (``[{"above_input_tokens", "input_per_mtok",
  "cached_input_per_mtok", "cache_write_per_mtok", "output_per_mtok"}]`` in nano-units,
  ascending), and takes effect from ``effective_from``: a change is a new row, so the prices
  table keeps its history, and a decision reads the row in force at its own time. Rows
  already there took effect when they were last set (``updated_at``);
- seeded prices are brought up to date (see ``SEEDS``), dated now, never rewriting an entry
  already written: the price in force before stays in the history and priced what it priced.
  A model whose price an admin has changed since it was seeded is left alone.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_PRICED_BY = "CHECK (priced_by IN ('server', 'client'))"
NANOS = 1_000_000_000

# USD per million tokens: (model, input, cached input, cache write, output, tiers), where a
# tier is (above this many prompt tokens, input, cached input, cache write, output).
# Sources, as listed on 2025-11-30: https://openai.com/api/pricing (cache writes cost the
# input rate), https://docs.claude.com/en/docs/about-claude/pricing (5-minute cache writes
# 1.25x input, cache reads 0.1x; Sonnet 4.5 above 200k prompt tokens 6 / 22.50) and
# https://ai.google.dev/gemini-api/docs/pricing (2.5 Pro above 200k prompt tokens 2.50 / 15;
# 1.5 Pro above 128k 2.50 / 10). Context-cache storage per hour is not a token price and is not
# modelled. README "Reviewing prices" says how to check them against the provider's list.
SEEDS = [
    ("gpt-4o", "2.50", "1.25", "2.50", "10.00", []),
    ("gpt-4o-mini", "0.15", "0.075", "0.15", "0.60", []),
    ("gpt-4.1", "2.00", "0.50", "2.00", "8.00", []),
    ("gpt-4.1-mini", "0.40", "0.10", "0.40", "1.60", []),
    ("gpt-5", "1.25", "0.125", "1.25", "10.00", []),
    ("gpt-5-mini", "0.25", "0.025", "0.25", "2.00", []),
    ("o3", "2.00", "0.50", "2.00", "8.00", []),
    ("o4-mini", "1.10", "0.275", "1.10", "4.40", []),
    ("claude-haiku-4.5", "1.00", "0.10", "1.25", "5.00", []),
    ("claude-sonnet-4.5", "3.00", "0.30", "3.75", "15.00",
     [(200_000, "6.00", "0.60", "7.50", "22.50")]),
    ("claude-sonnet-4.6", "3.00", "0.30", "3.75", "15.00", []),
    ("claude-opus-4.1", "15.00", "1.50", "18.75", "75.00", []),
    ("claude-opus-4.5", "5.00", "0.50", "6.25", "25.00", []),
    ("gemini-2.5-pro", "1.25", "0.125", "1.25", "10.00",
     [(200_000, "2.50", "0.25", "2.50", "15.00")]),
    ("gemini-1.5-pro", "1.25", "1.25", "1.25", "5.00",
     [(128_000, "2.50", "2.50", "2.50", "10.00")]),
]  # fmt: skip
# What migration 0002 seeded (input, output): a model still priced exactly so was never
# changed by an admin, and gets its new seed.
SEEDED_BY_0002 = {
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "claude-sonnet-4.6": ("3.00", "15.00"),
    "claude-haiku-4.5": ("0.25", "1.25"),
    "gemini-1.5-pro": ("1.25", "5.00"),
}


def _nanos(decimal: str) -> int:
    whole, _, fraction = decimal.partition(".")
    return int(whole) * NANOS + int(fraction.ljust(9, "0"))


def _tiers_json(tiers: list[tuple]) -> str:
    return json.dumps(
        [
            {
                "above_input_tokens": above,
                "input_per_mtok": _nanos(inp),
                "cached_input_per_mtok": _nanos(cached),
                "cache_write_per_mtok": _nanos(write),
                "output_per_mtok": _nanos(out),
            }
            for above, inp, cached, write, out in tiers
        ]
    )


def _seed_statements() -> list[sa.TextClause]:
    """One INSERT per seed: only where the model has no price yet, or only ever had 0002's."""
    statements = []
    for model, inp, cached, write, out, tiers in SEEDS:
        old = SEEDED_BY_0002.get(model)
        guard = (
            "NOT EXISTS (SELECT 1 FROM prices WHERE model = :model)"
            if old is None
            else "NOT EXISTS (SELECT 1 FROM prices WHERE model = :model AND (currency <> 'USD'"
            f" OR input_per_mtok <> {_nanos(old[0])} OR output_per_mtok <> {_nanos(old[1])}))"
        )
        statements.append(
            sa.text(
                "INSERT INTO prices (model, currency, input_per_mtok, cached_input_per_mtok,"
                " cache_write_per_mtok, output_per_mtok, per_request, tiers, effective_from,"
                " updated_at)"
                " SELECT :model, 'USD', :input, :cached, :write, :output, 0,"
                " CAST(:tiers AS jsonb),"
                # after the model's last change, even within the transaction that seeded it
                " greatest(now(), (SELECT max(effective_from) + interval '1 microsecond'"
                " FROM prices WHERE model = :model)), now()"
                f" WHERE {guard}"
            ).bindparams(
                model=model,
                input=_nanos(inp),
                cached=_nanos(cached),
                write=_nanos(write),
                output=_nanos(out),
                tiers=_tiers_json(tiers),
            )
        )
    return statements


PRICES_UPGRADE = [
    "ALTER TABLE prices ADD COLUMN cached_input_per_mtok bigint CHECK (cached_input_per_mtok >= 0)",
    "ALTER TABLE prices ADD COLUMN cache_write_per_mtok bigint CHECK (cache_write_per_mtok >= 0)",
    "ALTER TABLE prices ADD COLUMN per_request bigint NOT NULL DEFAULT 0 CHECK (per_request >= 0)",
    "ALTER TABLE prices ADD COLUMN tiers jsonb NOT NULL DEFAULT '[]'"
    " CHECK (jsonb_typeof(tiers) = 'array')",
    "ALTER TABLE prices ADD COLUMN effective_from timestamptz",
    """UPDATE prices SET cached_input_per_mtok = input_per_mtok,
           cache_write_per_mtok = input_per_mtok, effective_from = updated_at""",
    "ALTER TABLE prices ALTER COLUMN cached_input_per_mtok SET NOT NULL",
    "ALTER TABLE prices ALTER COLUMN cache_write_per_mtok SET NOT NULL",
    "ALTER TABLE prices ALTER COLUMN effective_from SET NOT NULL",
    "ALTER TABLE prices DROP CONSTRAINT prices_pkey",
    # The price of a model at a time: the row with the latest effective_from not after it.
    "ALTER TABLE prices ADD PRIMARY KEY (model, effective_from)",
]

PRICES_DOWNGRADE = [
    # Back to one row per model: the one in force now (or the first, if all are scheduled).
    """DELETE FROM prices AS p WHERE EXISTS (
           SELECT 1 FROM prices AS q
           WHERE q.model = p.model AND q.effective_from <> p.effective_from
             AND (CASE WHEN p.effective_from <= now() THEN q.effective_from <= now()
                       AND q.effective_from > p.effective_from
                  ELSE q.effective_from < p.effective_from END))""",
    "ALTER TABLE prices DROP CONSTRAINT prices_pkey",
    "ALTER TABLE prices ADD PRIMARY KEY (model)",
    "ALTER TABLE prices DROP COLUMN effective_from",
    "ALTER TABLE prices DROP COLUMN tiers",
    "ALTER TABLE prices DROP COLUMN per_request",
    "ALTER TABLE prices DROP COLUMN cache_write_per_mtok",
    "ALTER TABLE prices DROP COLUMN cached_input_per_mtok",
]

UPGRADE = [
    # A constant default is stored in the catalog, not written into rows: the append-only
    # triggers never fire, and every existing entry reads as version 1.
    f"ALTER TABLE ledger_entries ADD COLUMN priced_by text {_PRICED_BY}",
    "ALTER TABLE ledger_entries ADD COLUMN hash_version smallint NOT NULL DEFAULT 1"
    " CHECK (hash_version IN (1, 2))",
    # Rows written from now on are version 2 (existing rows keep the 1 they were added with).
    "ALTER TABLE ledger_entries ALTER COLUMN hash_version SET DEFAULT 2",
    "ALTER TABLE ledger_entries ADD COLUMN cached_input_tokens bigint"
    " CHECK (cached_input_tokens >= 0)",
    "ALTER TABLE ledger_entries ADD COLUMN cache_write_tokens bigint"
    " CHECK (cache_write_tokens >= 0)",
    "ALTER TABLE ledger_entries ADD COLUMN reasoning_tokens bigint"
    " CHECK (reasoning_tokens >= 0 AND reasoning_tokens <= output_tokens)",
    f"ALTER TABLE holds ADD COLUMN priced_by text {_PRICED_BY}",
    "ALTER TABLE balances ADD COLUMN require_server_pricing boolean NOT NULL DEFAULT false",
    "ALTER TYPE budget_snapshot ADD ATTRIBUTE require_server_pricing boolean",
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            "ALTER TABLE {table} ADD COLUMN priced_by text NOT NULL DEFAULT ''"
            " CHECK (priced_by IN ('', 'server', 'client'))",
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} ADD PRIMARY KEY"
            " (home_id, agent_id, {period}, team_id, model, priced_by)",
        )
    ),
]

DOWNGRADE = [
    *(
        statement.format(table=table, period=period)
        for table, period in (("spend_rollups", "hour"), ("spend_rollups_daily", "day"))
        for statement in (
            # Fold the split rows back into one per (agent, period, team, model).
            """
            CREATE TEMPORARY TABLE {table}_folded ON COMMIT DROP AS
            SELECT home_id, agent_id, {period}, team_id, model, sum(spent)::bigint AS spent,
                   sum(charges)::bigint AS charges
            FROM {table} GROUP BY 1, 2, 3, 4, 5
            """,
            "DELETE FROM {table}",
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
            "ALTER TABLE {table} DROP COLUMN priced_by",
            """
            INSERT INTO {table} (home_id, agent_id, {period}, team_id, model, spent, charges)
            SELECT home_id, agent_id, {period}, team_id, model, spent, charges
            FROM {table}_folded
            """,
            "ALTER TABLE {table} ADD PRIMARY KEY (home_id, agent_id, {period}, team_id, model)",
        )
    ),
    "ALTER TYPE budget_snapshot DROP ATTRIBUTE require_server_pricing",
    "ALTER TABLE balances DROP COLUMN require_server_pricing",
    "ALTER TABLE holds DROP COLUMN priced_by",
    "ALTER TABLE ledger_entries DROP COLUMN reasoning_tokens",
    "ALTER TABLE ledger_entries DROP COLUMN cache_write_tokens",
    "ALTER TABLE ledger_entries DROP COLUMN cached_input_tokens",
    "ALTER TABLE ledger_entries DROP COLUMN hash_version",
    "ALTER TABLE ledger_entries DROP COLUMN priced_by",
]


def upgrade() -> None:
    for statement in [*UPGRADE, *PRICES_UPGRADE]:
        op.execute(statement)
    for statement in _seed_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in [*DOWNGRADE, *PRICES_DOWNGRADE]:
        op.execute(statement)
