"""Scale-out on Citus: which tables are distributed, which replicated, and where decisions run.

Plain Postgres (and the embedded one) is the default and nothing here runs on it. When the
database `agent-ledger migrate` targets has the citus extension (a coordinator with workers),
``distribute`` lays the schema out after the versioned migrations, idempotently:

- money tables are distributed on ``home_id`` (an agent's team, or the agent itself without
  one; migration 0009) and co-located, so that one home's balance rows, entries, holds,
  idempotency answers, rollups, outbox rows, alert crossings and runs live on one node;
- small global tables (teams, agents, api_keys, prices, webhooks, and the dashboard's sessions,
  read with their key) are reference tables: a copy on every node, so a decision reads them
  locally (a decision asks whether a webhook wants an event);
- the staff audit log, checkpoints, webhook deliveries and the migration bookkeeping stay on the
  coordinator (they are written only there, never by a decision; the audit chain's trigger must
  see one table, and delivery workers claim due deliveries across all homes with SKIP LOCKED);
- ``ledger.decide`` and ``ledger.sweep_agent`` are distributed functions on their home argument:
  Citus runs each call on the node that holds the home, as one local transaction, so a charge is
  still one round trip from the service (to the coordinator, which delegates it);
  ``ledger.open_grant`` and ``ledger.close_grant`` too, inside the caller's transaction. Every
  function that writes entries must be one of them: an entry is stamped with the transaction id
  of the node that writes it, and listings order a home's entries by the ids of its node.

The append-only triggers go with the tables to every shard (citus.enable_unsafe_triggers: they
touch nothing but their own row).
"""

from __future__ import annotations

import asyncpg

__all__ = [
    "DISTRIBUTED",
    "DISTRIBUTED_FUNCTIONS",
    "FORCE_DELEGATED_FUNCTIONS",
    "ONE_CONNECTION_PER_NODE",
    "REFERENCE",
    "distribute",
    "distribute_functions",
    "is_citus",
]

REFERENCE = ("teams", "agents", "api_keys", "prices", "webhooks", "dashboard_sessions")
# The first is the co-location anchor of the others.
DISTRIBUTED = (
    "balances",
    "ledger_entries",
    "holds",
    "idempotency_keys",
    "spend_rollups",
    "spend_rollups_daily",
    "outbox",
    "alert_crossings",
    "runs",
    "grants",
)
# Each on its first argument, the home. Called alone, outside a transaction block: Citus
# delegates such a call whole to the home's node, which runs it as its own local transaction.
DISTRIBUTED_FUNCTIONS = (
    "ledger.decide(text, ledger.request[], timestamptz)",
    "ledger.sweep_agent(text, text, timestamptz)",
)
# Called inside a transaction that also writes the agents row, the child's key (reference
# tables) and the staff audit log (the coordinator's), so that a grant and its child exist
# together or not at all: force_delegation makes Citus hand the call to the home's node even
# there, as part of the one distributed transaction, and holds every statement of the function
# to that home's shards. Undelegated, the function would run on the coordinator and stamp the
# entries it writes with the coordinator's transaction id, which the home's node orders
# nothing by (a listing pages each home in (xid, seq) order on its node).
FORCE_DELEGATED_FUNCTIONS = (
    "ledger.open_grant(text, text, text, text, bigint, timestamptz, text, timestamptz)",
    "ledger.close_grant(text, text, text, text, timestamptz, boolean)",
)

# For a transaction that writes reference tables and shards (or foreign keys between them):
# Citus must use one connection per node for it. A custom setting, harmless on plain Postgres.
ONE_CONNECTION_PER_NODE = "SET LOCAL citus.multi_shard_modify_mode = 'sequential'"

_PLACED = "SELECT partmethod FROM pg_dist_partition WHERE logicalrelid = $1::regclass"


async def is_citus(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")


# The foreign keys among the tables to place, as (table, name, definition).
_FOREIGN_KEYS = """
SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE contype = 'f' AND conrelid = ANY ($1::regclass[])
ORDER BY conrelid::regclass::text, conname
"""


async def distribute(conn: asyncpg.Connection) -> list[str]:
    """Make the reference and distributed tables that are not yet; returns what it did.

    Citus wants every table a foreign key points to placed before the key exists (else it
    turns the referencing tables into coordinator-only tables), so the keys among these tables
    are dropped, the tables placed, and the same keys created again, in one transaction.
    """
    tables = [*REFERENCE, *DISTRIBUTED]
    missing = [t for t in tables if await conn.fetchval(_PLACED, t) is None]
    if missing:
        await _place(conn, tables, missing)
    # Listings of the ledger walk home by home on a cluster (agent_ledger/keyset.py).
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS ledger_entries_home_page_idx"
        " ON ledger_entries (home_id, xid, seq)"
    )
    return missing


async def _place(conn: asyncpg.Connection, tables: list[str], missing: list[str]) -> None:
    async with conn.transaction():
        await conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        # Foreign keys to reference tables need one connection per node within a transaction.
        await conn.execute(ONE_CONNECTION_PER_NODE)
        keys = await conn.fetch(_FOREIGN_KEYS, tables)
        for key in keys:
            await conn.execute(
                f'ALTER TABLE {key["table_name"]} DROP CONSTRAINT "{key["conname"]}"'
            )
        for table in REFERENCE:
            if table in missing:
                await conn.execute("SELECT create_reference_table($1)", table)
        anchor = DISTRIBUTED[0]
        for table in DISTRIBUTED:
            if table in missing:
                await conn.execute(
                    "SELECT create_distributed_table($1, 'home_id', colocate_with => $2)",
                    table,
                    "none" if table == anchor else anchor,
                )
        for key in keys:
            await conn.execute(
                f'ALTER TABLE {key["table_name"]} ADD CONSTRAINT "{key["conname"]}" '
                f"{key['definition']}"
            )


async def distribute_functions(conn: asyncpg.Connection) -> None:
    """Delegate the money decisions to the node that holds their home (after every time the
    function files are applied: recreating a function forgets that it was distributed)."""
    for signature in DISTRIBUTED_FUNCTIONS:
        await conn.execute(
            "SELECT create_distributed_function($1, '$1', colocate_with => 'balances')",
            signature,
        )
    for signature in FORCE_DELEGATED_FUNCTIONS:
        await conn.execute(
            "SELECT create_distributed_function($1, '$1', colocate_with => 'balances',"
            " force_delegation => true)",
            signature,
        )
