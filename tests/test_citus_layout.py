"""On a Citus cluster: every table is where agent_ledger/citus.py says, every money decision
runs on the node that holds its home, checkpoints cover every node, and a home moved to another
node (as a rebalance does) keeps its listing whole when the README's precaution is taken.

The money tests of tests/test_citus.py pass whether or not Citus distributes anything (a table
left on the coordinator, or a function that runs there statement by statement, still gives the
right answers, slowly, and with entries stamped with the wrong node's transaction ids). These
look at the cluster's own catalogue and at what the coordinator says it does with a call.
Skipped outside a Citus run (tests/test_citus.py runs this module on the cluster).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from agent_ledger import citus
from agent_ledger.audit.recorder import AuditContext
from agent_ledger.auth import hash_key
from agent_ledger.db import init_connection
from agent_ledger.grants import service as grants
from agent_ledger.grants.schemas import ChildCreate
from agent_ledger.ledger import decisions
from agent_ledger.ledger import queries as ledger_queries
from agent_ledger.principal import Principal
from tests.citus_support import (
    advance_xids,
    current_xid,
    home_node_url,
    on_citus,
    worker_urls,
)
from tests.conftest import TEST_PEPPER, Fleet, unique_name
from tests.test_delegation import delegating_parent
from tests.test_entries import page_all

pytestmark = [
    pytest.mark.skipif(
        not on_citus(),
        reason="looks at a Citus cluster's layout: tests/test_citus.py runs it there",
    ),
    # debug_pool listens on the connections the services take and give back (asyncpg drops
    # the listener then, and says so).
    pytest.mark.filterwarnings("ignore:.*active log listener"),
]

# What Citus says when it hands a whole call to the node that holds the distribution argument
# (its planner's DEBUG1 messages, citus/src/backend/distributed/planner/
# function_call_delegation.c); a call it does not delegate says neither.
DELEGATED = "pushing down the function call"
DELEGATED_IN_TRANSACTION = "pushing down function call in a multi-statement transaction"

_PLACEMENT = """
SELECT partmethod::text, repmodel::text, colocationid,
       column_to_column_name(logicalrelid, partkey) AS distribution_column
FROM pg_dist_partition WHERE logicalrelid = $1::regclass
"""

_FUNCTION = """
SELECT distribution_argument_index, colocationid, coalesce(force_delegation, false) AS forced
FROM pg_dist_object
WHERE classid = 'pg_proc'::regclass AND objid = $1::regprocedure
"""


async def test_every_table_is_distributed_or_replicated_as_listed(db: asyncpg.Connection) -> None:
    """The money tables hash-distributed on home_id, all in the balances' co-location group;
    the small global ones reference tables (a copy on every node)."""
    anchor = await db.fetchrow(_PLACEMENT, "balances")
    assert anchor is not None, "balances is not distributed"
    for table in citus.DISTRIBUTED:
        placed = await db.fetchrow(_PLACEMENT, table)
        assert placed is not None, f"{table} is not distributed"
        assert (placed["partmethod"], placed["distribution_column"]) == ("h", "home_id"), table
        assert placed["colocationid"] == anchor["colocationid"], f"{table} is not co-located"
    for table in citus.REFERENCE:
        placed = await db.fetchrow(_PLACEMENT, table)
        assert placed is not None, f"{table} is not a reference table"
        assert (placed["partmethod"], placed["repmodel"]) == ("n", "t"), table
    # Every table that carries a home is one of the distributed ones: a new one that is not
    # would stay on the coordinator, and every decision writing it would leave the worker.
    with_home = await db.fetch(
        "SELECT c.relname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid"
        " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE a.attname = 'home_id' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')"
        "   AND n.nspname = 'public'"
    )
    assert {r["relname"] for r in with_home} <= set(citus.DISTRIBUTED)


async def test_the_decisions_are_distributed_on_their_home_beside_the_balances(
    db: asyncpg.Connection,
) -> None:
    anchor = await db.fetchval(
        "SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'balances'::regclass"
    )
    expected = {
        **{signature: False for signature in citus.DISTRIBUTED_FUNCTIONS},
        **{signature: True for signature in citus.FORCE_DELEGATED_FUNCTIONS},
    }
    assert {
        "ledger.decide(text, ledger.request[], timestamptz)",
        "ledger.sweep_agent(text, text, timestamptz)",
        "ledger.open_grant(text, text, text, text, bigint, timestamptz, text, timestamptz)",
        "ledger.close_grant(text, text, text, text, timestamptz, boolean)",
    } <= set(expected)
    for signature, forced in expected.items():
        row = await db.fetchrow(_FUNCTION, signature)
        assert row is not None, f"{signature} is not a distributed function"
        assert dict(row) == {
            "distribution_argument_index": 0,
            "colocationid": anchor,
            "forced": forced,
        }, signature


class Said:
    """The messages a connection's server sent it (notices, and DEBUG when asked for)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
        self.messages.append(message.message)

    def clear(self) -> None:
        self.messages.clear()


@pytest.fixture
async def said() -> Said:
    return Said()


@pytest.fixture
async def debug_pool(database_url: str, said: Said) -> AsyncIterator[asyncpg.Pool]:
    """Connections to the coordinator that hear its planner's DEBUG1 messages (the listener is
    added at every acquire: asyncpg drops log listeners when a connection goes back)."""

    async def listen(conn: asyncpg.Connection) -> None:
        conn.add_log_listener(said)

    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=1,
        init=init_connection,
        setup=listen,
        server_settings={"client_min_messages": "debug1"},
    )
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_charge_and_a_sweep_run_on_the_homes_node(
    fleet: Fleet, debug_pool: asyncpg.Pool, said: Said
) -> None:
    agent = await fleet.agent(unique_name("delegated"))
    admin_key = fleet.admin["Authorization"].removeprefix("Bearer ")
    request = decisions.Request(
        action="charge",
        key_hash=hash_key(admin_key, TEST_PEPPER),
        agent_id=agent["id"],
        amount=1_000_000,
    )
    async with debug_pool.acquire() as conn:
        [decision] = await decisions.decide(conn, agent["id"], [request], None)
        assert decision.status == 201
        assert DELEGATED in said.messages, said.messages
        said.clear()
        await conn.fetchval(ledger_queries.SWEEP_AGENT, agent["id"], agent["id"], None)
        assert DELEGATED in said.messages, said.messages


async def test_opening_and_closing_a_grant_run_on_the_homes_node(
    fleet: Fleet, debug_pool: asyncpg.Pool, said: Said
) -> None:
    """Inside the transaction that also writes the child's agents row, key and audit events:
    handed to the home's node all the same (force_delegation)."""
    parent = await delegating_parent(fleet)
    me = (await fleet.client.get("/v1/me", headers=fleet.admin)).json()
    admin = Principal(key_id=me["key_id"], role="admin", agent_id=None)
    ctx = AuditContext(
        actor_key_id=admin.key_id, actor_role="admin", request_id=None, client_ip=None
    )
    created = await grants.create_child(
        debug_pool,
        ctx,
        admin,
        parent.agent_id,
        ChildCreate(name=unique_name("child"), grant="1"),
        pepper=TEST_PEPPER,
        max_depth=3,
        now=None,
    )
    assert DELEGATED_IN_TRANSACTION in said.messages, said.messages
    said.clear()
    closed = await grants.close_grant(debug_pool, ctx, admin, created.grant.id, None)
    assert closed.status == "closed"
    assert DELEGATED_IN_TRANSACTION in said.messages, said.messages


async def test_a_checkpoint_covers_chains_on_every_worker_and_verifies(
    fleet: Fleet, database_url: str
) -> None:
    """Taken through the coordinator, a checkpoint records the head of every chain wherever
    its home lives, and verifying against it walks them all."""
    nodes: dict[str, dict] = {}
    for _ in range(40):  # homes land on a node by hash: a few teamless agents reach both
        agent = await fleet.agent(unique_name("placed"))
        nodes.setdefault(await home_node_url(database_url, agent["id"]), agent)
        if len(nodes) == 2:
            break
    assert len(nodes) == 2, "every home landed on one node"
    heads = {}
    for agent in nodes.values():
        charged = await fleet.client.post(
            "/v1/charges", json={"agent_id": agent["id"], "amount": "0.01"}, headers=fleet.admin
        )
        assert charged.status_code == 201, charged.text
        heads[agent["id"]] = charged.json()["hash"]
    taken = await fleet.client.post("/v1/ledger/checkpoints", headers=fleet.admin)
    assert taken.status_code == 201, taken.text
    checkpoint = taken.json()
    recorded = {h["agent_id"]: h["head_hash"] for h in checkpoint["heads"]}
    assert {a: recorded.get(a) for a in heads} == heads
    report = await fleet.client.get(
        f"/v1/ledger/checkpoints/{checkpoint['id']}/verify", headers=fleet.admin
    )
    assert report.status_code == 200, report.text
    assert (report.json()["ok"], report.json()["mismatches"]) == (True, [])


# Moves a shard group (a shard of every co-located table) between workers; 'block_writes'
# needs no logical replication (the local cluster runs wal_level replica).
_MOVE = """
SELECT citus_move_shard_placement(
    get_shard_id_for_distribution_column('balances', $1::text), $2, $3, $4, $5,
    shard_transfer_mode => 'block_writes')
"""


async def test_a_home_moved_to_a_node_ahead_is_listed_whole_and_in_order(
    fleet: Fleet, database_url: str, db: asyncpg.Connection
) -> None:
    """The rebalancing precaution of the README: before a home's shards move, the target's
    transaction counter is put past the source's; the moved entries keep the ids they were
    stamped with there and still sort before everything written after the move."""
    team = await fleet.team(unique_name("moving"))
    agent = await fleet.agent(unique_name("mover"), team_id=team["id"])

    async def charge() -> None:
        response = await fleet.client.post(
            "/v1/charges", json={"agent_id": agent["id"], "amount": "0.01"}, headers=fleet.admin
        )
        assert response.status_code == 201, response.text

    for _ in range(2):
        await charge()
    source = await home_node_url(database_url, team["id"])
    [target] = [url for url in await worker_urls(database_url) if url != source]
    # The margin covers what the source draws while the move runs (nothing else runs here).
    await advance_xids(target, await current_xid(source) + 1000)
    where = [(urlsplit(url).hostname, urlsplit(url).port) for url in (source, target)]
    await db.execute(_MOVE, team["id"], *where[0], *where[1])
    assert await home_node_url(database_url, team["id"]) == target
    for _ in range(2):
        await charge()

    chain = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM ledger_entries WHERE agent_id = $1 ORDER BY chain_seq", agent["id"]
        )
    ]
    assert len(chain) == 4
    listed = await page_all(fleet.client, fleet.admin, limit=1, expect=4, team_id=team["id"])
    assert [e["id"] for e in listed] == chain
