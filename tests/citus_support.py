"""Databases on a Citus cluster, for the tests and benchmarks that run there.

Citus keeps its metadata per database: a new database needs the extension on every node, and on
the coordinator, the coordinator's own address and every worker registered. ``TEST_CITUS_URL``
names the coordinator's maintenance database (``../shared/citus/cluster start`` prints it); its
``pg_dist_node`` lists the workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = [
    "CITUS_URL",
    "advance_xids",
    "create_database",
    "current_xid",
    "drop_database",
    "home_node_url",
    "on_citus",
    "put_node_ahead",
    "worker_urls",
]

CITUS_URL = os.environ.get("TEST_CITUS_URL")
# Set for a test run whose every database lives on the Citus cluster (tests/test_citus.py).
BACKEND = os.environ.get("AGENT_LEDGER_TEST_BACKEND", "postgres")


def on_citus() -> bool:
    return BACKEND == "citus"


def _at(url: str, host: str, port: int, database: str) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}", path=f"/{database}"))


async def _nodes(coordinator_url: str) -> list[tuple[str, int]]:
    parts = urlsplit(coordinator_url)
    conn = await asyncpg.connect(coordinator_url)
    try:
        workers = await conn.fetch(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid > 0 ORDER BY nodeid"
        )
    finally:
        await conn.close()
    return [(parts.hostname or "127.0.0.1", parts.port or 5432)] + [
        (w["nodename"], w["nodeport"]) for w in workers
    ]


async def _create(coordinator_url: str, name: str) -> str:
    nodes = await _nodes(coordinator_url)
    for host, port in nodes:
        conn = await asyncpg.connect(_at(coordinator_url, host, port, "postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(_at(coordinator_url, host, port, name))
        try:
            await conn.execute("CREATE EXTENSION citus")
        finally:
            await conn.close()
    url = _at(coordinator_url, *nodes[0], name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT citus_set_coordinator_host($1, $2)", *nodes[0])
        for host, port in nodes[1:]:
            await conn.execute("SELECT citus_add_node($1, $2)", host, port)
    finally:
        await conn.close()
    return url


async def _drop(coordinator_url: str, name: str) -> None:
    for host, port in await _nodes(coordinator_url):
        conn = await asyncpg.connect(_at(coordinator_url, host, port, "postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _run(coroutine):  # from sync or async callers alike: its own thread and loop
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def create_database(coordinator_url: str, name: str) -> str:
    """An empty database with Citus on every node; returns its URL on the coordinator."""
    return _run(_create(coordinator_url, name))


def drop_database(coordinator_url: str, name: str) -> None:
    _run(_drop(coordinator_url, name))


# The worker that holds a home: the node of its shard of balances (every distributed table is
# co-located with it).
_HOME_NODE = """
SELECT n.nodename, n.nodeport
FROM pg_dist_placement AS p
JOIN pg_dist_node AS n ON n.groupid = p.groupid
WHERE p.shardid = get_shard_id_for_distribution_column('balances', $1::text)
"""


async def worker_urls(database_url: str) -> list[str]:
    """This database on every worker of the cluster."""
    name = urlsplit(database_url).path[1:]
    return [_at(database_url, host, port, name) for host, port in (await _nodes(database_url))[1:]]


async def home_node_url(database_url: str, home_id: str) -> str:
    """The URL of this database on the node that holds ``home_id``."""
    conn = await asyncpg.connect(database_url)
    try:
        node = await conn.fetchrow(_HOME_NODE, home_id)
    finally:
        await conn.close()
    return _at(database_url, node["nodename"], node["nodeport"], urlsplit(database_url).path[1:])


async def current_xid(url: str) -> int:
    """The next transaction id of the node ``url`` names (drawing it)."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
    finally:
        await conn.close()


async def advance_xids(url: str, past: int) -> None:
    """Draw transaction ids on the node ``url`` names until its counter is beyond ``past``."""
    conn = await asyncpg.connect(url)
    try:
        current = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
        # One round trip: each COMMIT in the loop ends a transaction that drew an id.
        await conn.execute(
            f"""DO $$ BEGIN
                    FOR i IN 1 .. {max(past - current, 0)} LOOP
                        PERFORM pg_current_xact_id();
                        COMMIT;
                    END LOOP;
                END $$"""
        )
    finally:
        await conn.close()


async def put_node_ahead(database_url: str, home_id: str, margin: int = 100) -> None:
    """Advance the transaction ids of the node holding ``home_id`` past the coordinator's.

    Every node counts its own transaction ids. A row written on the home's node with an id the
    coordinator drew sorts, in a listing by (xid, seq), before rows that committed earlier on
    that node (when the node is ahead) or stays hidden below its horizon (when behind); which
    one depends on how busy each node has been. This makes the first case certain.
    """
    coordinator = await current_xid(database_url)
    await advance_xids(await home_node_url(database_url, home_id), coordinator + margin)
