"""Delegation in escrow (issue 17): child agents spending grants carved from their parent.

What must hold: a grant counts as held on its parent and team from the moment it opens; a child
spends only within it; what a child spends becomes spent on every ancestor and the team and
stops counting as held; closing (or expiry) returns exactly the unspent rest and suspends the
child; and none of this can be raced past any limit, across processes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.agents import queries as agent_queries
from agent_ledger.agents.service import write_agent_row
from agent_ledger.citus import ONE_CONNECTION_PER_NODE
from agent_ledger.db import create_pool, init_connection
from agent_ledger.grants import queries as grant_queries
from agent_ledger.grants.service import close_due_grants
from agent_ledger.ids import new_id
from agent_ledger.ledger import decisions
from agent_ledger.ledger.chain import verify_ledger
from tests.citus_support import on_citus, put_node_ahead
from tests.conftest import Fleet, ServerProcess, bearer, unique_name
from tests.ledger_helpers import Spender, balance_of, set_team_limits, spender
from tests.test_entries import listable, page_all
from tests.test_exports import export

NANOS = 1_000_000_000


async def delegating_parent(
    fleet: Fleet, *, limits: dict[str, str] | None = None, team_limits: dict | None = None
) -> Spender:
    team = await fleet.team(unique_name("delegators"))
    if team_limits is not None:
        await set_team_limits(fleet, team["id"], team_limits)
    parent = await spender(fleet, team_id=team["id"], limits=limits)
    response = await fleet.client.patch(
        f"/v1/agents/{parent.agent_id}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["can_delegate"] is True
    return parent


async def make_child(
    client: AsyncTestClient | httpx.AsyncClient,
    parent: Spender,
    grant: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> dict:
    response = await client.post(
        f"/v1/agents/{parent.agent_id}/children",
        json={"name": unique_name("child"), "grant": grant, **extra},
        headers=headers or parent.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def child_spender(created: dict) -> Spender:
    agent = created["agent"]
    return Spender(agent_id=agent["id"], team_id=agent["team_id"], key=created["key"]["key"])


async def charge(client: AsyncTestClient | httpx.AsyncClient, who: Spender, amount: str):
    return await client.post("/v1/charges", json={"amount": amount}, headers=who.headers)


async def verified(fleet: Fleet) -> None:
    report = (await fleet.client.get("/v1/ledger/verify", headers=fleet.admin)).json()
    assert report["ok"], report["mismatches"]


async def test_grant_is_held_on_parent_and_team_and_child_spends_only_within_it(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    parent = await delegating_parent(fleet, limits={"total": "10"}, team_limits={"total": "20"})
    created = await make_child(fleet.client, parent, "4")
    child = child_spender(created)
    assert created["agent"]["parent_id"] == parent.agent_id
    assert created["agent"]["team_id"] == parent.team_id
    assert created["agent"]["grant_id"] == created["grant"]["id"]
    grant = created["grant"]
    assert (grant["amount"], grant["status"], grant["remaining"]) == ("4", "open", "4")
    assert created["key"]["expires_at"] is not None
    assert created["key"]["agent_id"] == child.agent_id

    parent_row, team_row = (
        await balance_of(db, parent.agent_id),
        await balance_of(db, parent.team_id),
    )
    assert (parent_row["held"], parent_row["spent_total"]) == (4 * NANOS, 0)
    assert team_row["held"] == 4 * NANOS

    assert (await charge(fleet.client, child, "1")).status_code == 201
    parent_row, team_row = (
        await balance_of(db, parent.agent_id),
        await balance_of(db, parent.team_id),
    )
    assert (parent_row["spent_total"], parent_row["held"]) == (1 * NANOS, 3 * NANOS)
    assert (team_row["spent_total"], team_row["held"]) == (1 * NANOS, 3 * NANOS)
    # The parent's budget status says the same: spent 1, held 3, remaining 6.
    status = (await fleet.client.get("/v1/me", headers=parent.headers)).json()["budget"]
    assert (status["spent"]["total"], status["held"], status["remaining"]["total"]) == (
        "1",
        "3",
        "6",
    )

    over = await charge(fleet.client, child, "3.000000001")
    assert over.status_code == 402
    problem = over.json()
    assert (problem["code"], problem["scope"], problem["window"]) == (
        "budget-exceeded",
        "grant",
        "total",
    )
    assert (problem["limit"], problem["spent"], problem["requested"]) == ("4", "1", "3.000000001")
    assert (await charge(fleet.client, child, "3")).status_code == 201
    assert (await charge(fleet.client, child, "0.000000001")).status_code == 402

    parent_row = await balance_of(db, parent.agent_id)
    assert (parent_row["spent_total"], parent_row["held"]) == (4 * NANOS, 0)
    kinds = [
        r["kind"]
        for r in await db.fetch(
            "SELECT kind FROM ledger_entries WHERE agent_id = $1 ORDER BY chain_seq",
            parent.agent_id,
        )
    ]
    assert kinds == ["grant", "grant_spend", "grant_spend"]
    got = await fleet.client.get(f"/v1/grants/{grant['id']}", headers=child.headers)
    assert (got.json()["spent"], got.json()["remaining"]) == ("4", "0")
    # The child sees its grant where it sees its budget.
    me = (await fleet.client.get("/v1/me", headers=child.headers)).json()
    assert (me["grant"]["id"], me["grant"]["remaining"]) == (grant["id"], "0")
    assert "grant" not in (await fleet.client.get("/v1/me", headers=parent.headers)).json()
    await verified(fleet)


async def test_a_grant_must_fit_the_parents_limits_and_nothing_is_written_when_it_does_not(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    parent = await delegating_parent(fleet, limits={"total": "5"}, team_limits={"month": "3"})
    assert (await charge(fleet.client, parent, "1")).status_code == 201
    for grant, scope in (("4.5", "agent"), ("2.5", "team")):
        response = await fleet.client.post(
            f"/v1/agents/{parent.agent_id}/children",
            json={"name": "too-big", "grant": grant},
            headers=parent.headers,
        )
        assert response.status_code == 402, response.text
        assert (response.json()["code"], response.json()["scope"]) == ("budget-exceeded", scope)
    assert not await db.fetchval(
        "SELECT count(*) FROM agents WHERE parent_id = $1", parent.agent_id
    )
    assert (await balance_of(db, parent.agent_id))["held"] == 0
    # Exactly what is left fits.
    await make_child(fleet.client, parent, "2")
    await verified(fleet)


async def test_closing_returns_the_rest_releases_holds_and_suspends_the_child(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    parent = await delegating_parent(fleet, limits={"total": "10"})
    created = await make_child(fleet.client, parent, "4")
    child, grant_id = child_spender(created), created["grant"]["id"]
    assert (await charge(fleet.client, child, "1")).status_code == 201
    hold = await fleet.client.post(
        "/v1/holds", json={"amount": "0.5", "ttl_seconds": 600}, headers=child.headers
    )
    assert hold.status_code == 201, hold.text
    # The child's own hold counts on the child (within its grant), not again on the team.
    assert (await balance_of(db, parent.team_id))["held"] == 3 * NANOS

    closed = await fleet.client.post(f"/v1/grants/{grant_id}/close", headers=parent.headers)
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["status"], body["spent"], body["returned"], body["remaining"]) == (
        "closed",
        "1",
        "3",
        "0",
    )
    parent_row = await balance_of(db, parent.agent_id)
    assert (parent_row["spent_total"], parent_row["held"]) == (1 * NANOS, 0)
    assert (await balance_of(db, parent.team_id))["held"] == 0
    child_row = await balance_of(db, child.agent_id)
    assert (child_row["held"], child_row["agent_status"]) == (0, "suspended")
    hold_row = await db.fetchrow("SELECT status FROM holds WHERE id = $1", hold.json()["id"])
    assert hold_row["status"] == "released"
    agent = await fleet.client.get(f"/v1/agents/{child.agent_id}", headers=fleet.admin)
    assert (agent.json()["status"], agent.json()["suspended_reason"]) == (
        "suspended",
        "grant_closed",
    )
    # Announced as any suspension: the audit log has it, published before the answer.
    events = await fleet.client.get(
        "/v1/audit-events",
        params={"target_id": child.agent_id, "action": "agent.suspended"},
        headers=fleet.admin,
    )
    assert events.status_code == 200, events.text
    [event] = events.json()["items"]
    assert (event["actor_role"], event["after"]["suspended_reason"]) == ("system", "grant_closed")
    assert event["after"]["grant_id"] == grant_id

    refused = await charge(fleet.client, child, "0.1")
    assert (refused.status_code, refused.json()["code"]) == (403, "agent-suspended")
    again = await fleet.client.post(f"/v1/grants/{grant_id}/close", headers=fleet.admin)
    assert (again.status_code, again.json()["code"]) == (409, "grant-closed")
    reactivate = await fleet.client.patch(
        f"/v1/agents/{child.agent_id}", json={"status": "active"}, headers=fleet.admin
    )
    assert (reactivate.status_code, reactivate.json()["code"]) == (409, "grant-closed")
    child_kinds = [
        r["kind"]
        for r in await db.fetch(
            "SELECT kind FROM ledger_entries WHERE agent_id = $1 ORDER BY chain_seq",
            child.agent_id,
        )
    ]
    assert child_kinds == ["grant_received", "charge", "hold", "release", "grant_closed"]
    # The parent can spend what came back.
    assert (await charge(fleet.client, parent, "9")).status_code == 201
    await verified(fleet)


async def test_a_grants_entries_are_listed_and_exported_once_in_chain_order(
    fleet: Fleet, db: asyncpg.Connection, database_url: str
) -> None:
    """Opening and closing a grant write entries like any decision: the listing and the export
    give each of them once, in the order of its agent's chain, beside the charges around them.

    On Citus every node counts transaction ids of its own and a listing pages home by home in
    (xid, seq) order on the home's node: an entry stamped with the coordinator's xid would sort
    among the node's by accident. The home's node is put ahead of the coordinator so that such
    an entry would come before the parent's first charge.
    """
    parent = await delegating_parent(fleet, limits={"total": "10"})
    assert (await charge(fleet.client, parent, "1")).status_code == 201
    if on_citus():
        await put_node_ahead(database_url, parent.team_id)
    created = await make_child(fleet.client, parent, "4")
    child, grant_id = child_spender(created), created["grant"]["id"]
    assert (await charge(fleet.client, child, "1")).status_code == 201
    hold = await fleet.client.post(
        "/v1/holds", json={"amount": "0.5", "ttl_seconds": 600}, headers=child.headers
    )
    assert hold.status_code == 201, hold.text
    closed = await fleet.client.post(f"/v1/grants/{grant_id}/close", headers=parent.headers)
    assert closed.status_code == 200, closed.text
    assert (await charge(fleet.client, parent, "2")).status_code == 201
    await listable(db)

    chains, kinds = {}, {}
    for who in (parent, child):
        chain = await db.fetch(
            "SELECT id, kind FROM ledger_entries WHERE agent_id = $1 ORDER BY chain_seq",
            who.agent_id,
        )
        chains[who.agent_id] = [r["id"] for r in chain]
        kinds[who.agent_id] = [r["kind"] for r in chain]
        listed = await page_all(
            fleet.client, fleet.admin, limit=2, expect=len(chain), agent_id=who.agent_id
        )
        assert [e["id"] for e in listed] == chains[who.agent_id], kinds[who.agent_id]
        text, _ = await export(
            fleet.client, fleet.admin, expect=len(chain), format="ndjson", agent_id=who.agent_id
        )
        exported = [json.loads(line)["id"] for line in text.splitlines()]
        assert exported == chains[who.agent_id]
    assert kinds[parent.agent_id] == ["charge", "grant", "grant_spend", "grant_return", "charge"]
    assert kinds[child.agent_id] == ["grant_received", "charge", "hold", "release", "grant_closed"]

    # The whole team: every entry of both once, each agent's in its chain's order.
    everything = [i for chain in chains.values() for i in chain]
    team = await page_all(
        fleet.client, fleet.admin, limit=3, expect=len(everything), team_id=parent.team_id
    )
    ids = [e["id"] for e in team]
    assert sorted(ids) == sorted(everything)
    for chain in chains.values():
        assert [i for i in ids if i in chain] == chain


async def test_a_grant_committing_late_in_its_home_is_not_skipped(
    fleet: Fleet, db: asyncpg.Connection, database_url: str
) -> None:
    """A grant's transaction draws its transaction id when it writes the child's agents row,
    before it takes the parent's lock; a teammate's charges commit meanwhile with later ids.
    A walk of the team's listing (one home: the guarantee the README gives on Citus too) must
    hold those back while the grant is open, and give the grant's entries once it commits,
    without skipping them or repeating anything."""
    parent = await delegating_parent(fleet)
    team_id = parent.team_id
    teammate = await spender(fleet, team_id=team_id)
    before = (await charge(fleet.client, teammate, "0.1")).json()
    child_id, grant_id, name = new_id("agt"), new_id("grt"), unique_name("late-child")

    slow = await asyncpg.connect(database_url)
    try:
        await init_connection(slow)
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(ONE_CONNECTION_PER_NODE)
        await write_agent_row(
            slow, team_id, name, agent_queries.INSERT_CHILD, child_id, name, team_id, {},
            parent.agent_id, 1, False, grant_id, [parent.agent_id],
        )  # fmt: skip
        later = [(await charge(fleet.client, teammate, "0.1")).json() for _ in range(3)]

        seen, cursor = [], None
        while True:  # the walk so far: it reaches the end of what may be served
            query = {"team_id": team_id, "limit": 1, **({"cursor": cursor} if cursor else {})}
            page = (await fleet.client.get("/v1/entries", params=query, headers=fleet.admin)).json()
            seen += [e["id"] for e in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert before["id"] in seen
        assert not {e["id"] for e in later} & set(seen), "held back by the open grant"

        opened = await slow.fetchval(
            grant_queries.OPEN_GRANT, team_id, parent.agent_id, child_id, grant_id,
            NANOS, datetime.now(UTC) + timedelta(hours=1), None, None,
        )  # fmt: skip
        assert "grant_id" in opened, opened
        await transaction.commit()
    finally:
        await slow.close()
    await listable(db)

    committed = await db.fetch(
        "SELECT id, kind FROM ledger_entries WHERE team_id = $1 ORDER BY xid, seq", team_id
    )
    # The walk goes on from where it stopped (its last page read again): the rest, once each.
    rest = await page_all(
        fleet.client,
        fleet.admin,
        limit=1,
        expect=len(committed) - len(seen) + 1,
        team_id=team_id,
        **({"cursor": cursor} if cursor else {}),
    )
    walked = seen + [e["id"] for e in rest if e["id"] not in seen]
    assert len({e["id"] for e in rest} & set(seen)) <= 1  # the last page, read again
    assert walked == [r["id"] for r in committed]
    # In the home's order the grant comes before the charges that committed while it was open.
    assert [r["kind"] for r in committed] == [
        "charge", "grant", "grant_received", "charge", "charge", "charge"
    ]  # fmt: skip


async def test_a_fully_spent_grant_closes_with_nothing_to_return(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    parent = await delegating_parent(fleet)
    created = await make_child(fleet.client, parent, "2")
    assert (await charge(fleet.client, child_spender(created), "2")).status_code == 201
    closed = await fleet.client.post(
        f"/v1/grants/{created['grant']['id']}/close", headers=fleet.admin
    )
    assert closed.status_code == 200, closed.text
    assert (closed.json()["returned"], closed.json()["spent"]) == ("0", "2")
    escrow = await db.fetchrow(
        "SELECT status, captured_amount FROM holds WHERE grant_id = $1", created["grant"]["id"]
    )
    assert (escrow["status"], escrow["captured_amount"]) == ("captured", 2 * NANOS)
    await verified(fleet)


async def test_an_expired_grant_stops_the_child_and_the_sweeper_returns_the_rest(
    fleet: Fleet, db: asyncpg.Connection, database_url: str
) -> None:
    parent = await delegating_parent(fleet)
    created = await make_child(fleet.client, parent, "3", ttl_seconds=1)
    child, grant_id = child_spender(created), created["grant"]["id"]
    assert (await charge(fleet.client, child, "0.5")).status_code == 201
    await asyncio.sleep(1.2)
    # The key it was given expired with the grant; an admin spending for it is refused too,
    # whether or not a sweeper has closed the grant yet.
    assert (await charge(fleet.client, child, "0.1")).status_code == 401
    refused = await fleet.client.post(
        "/v1/charges", json={"amount": "0.1", "agent_id": child.agent_id}, headers=fleet.admin
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "agent-suspended")
    # The app's own sweeper may have closed it already; this pass closes it if not.
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await close_due_grants(pool)
    finally:
        await pool.close()
    grant = (await fleet.client.get(f"/v1/grants/{grant_id}", headers=parent.headers)).json()
    assert (grant["status"], grant["returned"], grant["spent"]) == ("expired", "2.5", "0.5")
    assert (await balance_of(db, parent.agent_id))["held"] == 0
    agent = (await fleet.client.get(f"/v1/agents/{child.agent_id}", headers=fleet.admin)).json()
    assert agent["status"] == "suspended"
    await verified(fleet)


async def test_nested_grants_move_every_ancestor_and_close_in_cascade(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    root = await delegating_parent(fleet, limits={"total": "10"}, team_limits={"total": "10"})
    middle_created = await make_child(fleet.client, root, "6", can_delegate=True)
    middle = child_spender(middle_created)
    leaf = child_spender(await make_child(fleet.client, middle, "4"))
    # The middle agent's grant to the leaf is carved from its own grant: not held twice.
    assert (await balance_of(db, middle.agent_id))["held"] == 4 * NANOS
    assert (await balance_of(db, root.agent_id))["held"] == 6 * NANOS
    assert (await balance_of(db, root.team_id))["held"] == 6 * NANOS
    # The middle agent can carve only what its grant has left.
    over = await fleet.client.post(
        f"/v1/agents/{middle.agent_id}/children",
        json={"name": "one-too-many", "grant": "2.5"},
        headers=middle.headers,
    )
    assert (over.status_code, over.json()["scope"]) == (402, "grant")

    assert (await charge(fleet.client, leaf, "1")).status_code == 201
    rows = {r: await balance_of(db, r) for r in (leaf.agent_id, middle.agent_id, root.agent_id)}
    assert rows[leaf.agent_id]["spent_total"] == 1 * NANOS
    assert (rows[middle.agent_id]["spent_total"], rows[middle.agent_id]["held"]) == (
        1 * NANOS,
        3 * NANOS,
    )
    assert (rows[root.agent_id]["spent_total"], rows[root.agent_id]["held"]) == (
        1 * NANOS,
        5 * NANOS,
    )
    team = await balance_of(db, root.team_id)
    assert (team["spent_total"], team["held"]) == (1 * NANOS, 5 * NANOS)
    await verified(fleet)

    # Closing the middle grant closes the leaf's grant first, in the same transaction: the
    # leaf's rest goes back to the middle agent, then everything the middle agent's subtree did
    # not spend goes back to the root. No sweeper is needed for any of it.
    closed = await fleet.client.post(
        f"/v1/grants/{middle_created['grant']['id']}/close", headers=root.headers
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["returned"] == "5"
    leaf_grant = await db.fetchrow(
        "SELECT status, returned FROM grants WHERE child_id = $1", leaf.agent_id
    )
    assert (leaf_grant["status"], leaf_grant["returned"]) == ("closed", 3 * NANOS)
    leaf_row = (await fleet.client.get(f"/v1/agents/{leaf.agent_id}", headers=fleet.admin)).json()
    assert (leaf_row["status"], leaf_row["suspended_reason"]) == ("suspended", "grant_closed")
    refused = await charge(fleet.client, leaf, "0.1")
    assert (refused.status_code, refused.json()["code"]) == (403, "agent-suspended")
    assert (await balance_of(db, middle.agent_id))["held"] == 0
    root_row, team = await balance_of(db, root.agent_id), await balance_of(db, root.team_id)
    assert (root_row["spent_total"], root_row["held"]) == (1 * NANOS, 0)
    assert (team["spent_total"], team["held"]) == (1 * NANOS, 0)
    await verified(fleet)


async def test_closing_a_middle_grant_closes_the_grants_below_it_at_once(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A grandchild cannot spend money its grandparent already took back: closing the middle
    grant closes the leaf's grant in the same transaction (its hold released, its rest back
    to the middle agent before the middle agent's rest goes up). Before, the leaf stayed open
    until the sweeper's next pass, and a capture within its hold in that window moved money
    from held to spent on ancestors that had already been repaid it: the root's and the team's
    held fell below what they really reserved. On Postgres the close and the capture run in
    one transaction here, so no sweeper pass can come between them."""
    root = await delegating_parent(fleet, limits={"total": "10"}, team_limits={"total": "10"})
    middle_created = await make_child(fleet.client, root, "6", can_delegate=True)
    middle = child_spender(middle_created)
    leaf_created = await make_child(fleet.client, middle, "4")
    leaf = child_spender(leaf_created)
    own = await fleet.client.post(
        "/v1/holds", json={"amount": "1", "ttl_seconds": 600}, headers=root.headers
    )
    assert own.status_code == 201, own.text
    assert (await charge(fleet.client, leaf, "0.5")).status_code == 201
    leaf_hold = await fleet.client.post(
        "/v1/holds", json={"amount": "1.5", "ttl_seconds": 600}, headers=leaf.headers
    )
    assert leaf_hold.status_code == 201, leaf_hold.text
    hold_id = leaf_hold.json()["id"]

    if on_citus():
        # A decision goes to the worker that holds its home, which cannot join a transaction
        # the coordinator began: the close commits first, and the capture follows at once.
        closed = await fleet.client.post(
            f"/v1/grants/{middle_created['grant']['id']}/close", headers=root.headers
        )
        assert (closed.json()["spent"], closed.json()["returned"]) == ("0.5", "5.5")
        answer = await fleet.client.post(
            f"/v1/holds/{hold_id}/capture",
            json={"amount": "1"},
            headers=leaf.headers,
        )
        refusal = (answer.status_code, answer.json().get("code"))
    else:
        leaf_key_hash = await db.fetchval(
            "SELECT key_hash FROM api_keys WHERE agent_id = $1 AND revoked_at IS NULL",
            leaf.agent_id,
        )
        async with db.transaction():
            returned = await db.fetchval(
                "SELECT ledger.close_grant($1, $2, 'closed', NULL, NULL, false)",
                root.team_id,
                middle_created["grant"]["id"],
            )
            assert (returned["spent"], returned["returned"]) == (NANOS // 2, 11 * NANOS // 2)
            [captured] = await decisions.decide(
                db,
                root.team_id,
                [
                    decisions.Request(
                        action="capture", key_hash=leaf_key_hash, hold_id=hold_id, amount=NANOS
                    )
                ],
                None,
            )
            refusal = (captured.status, (captured.problem or {}).get("code"))
    assert refusal == (409, "hold-closed")

    leaf_grant = await db.fetchrow(
        "SELECT status, spent, returned FROM grants WHERE id = $1", leaf_created["grant"]["id"]
    )
    assert tuple(leaf_grant) == ("closed", NANOS // 2, 3 * NANOS + NANOS // 2)
    assert await db.fetchval("SELECT status FROM holds WHERE id = $1", hold_id) == "released"
    # Every counter as the entries have it: only the leaf's 0.5 was ever spent, and the only
    # money still held is the root's own hold of 1.
    expected = {
        leaf.agent_id: (NANOS // 2, 0, "suspended"),
        middle.agent_id: (NANOS // 2, 0, "suspended"),
        root.agent_id: (NANOS // 2, NANOS, "active"),
        root.team_id: (NANOS // 2, NANOS, None),
    }
    for owner_id, counters in expected.items():
        row = await balance_of(db, owner_id)
        assert (row["spent_total"], row["held"], row["agent_status"]) == counters, owner_id
    await verified(fleet)


async def test_depth_is_bounded(fleet: Fleet) -> None:
    """LEDGER_MAX_DELEGATION_DEPTH (default 3) levels below a top-level agent, no more."""
    level = await delegating_parent(fleet)
    for _ in range(3):
        level = child_spender(await make_child(fleet.client, level, "1", can_delegate=True))
    response = await fleet.client.post(
        f"/v1/agents/{level.agent_id}/children",
        json={"name": "too-deep", "grant": "0.1"},
        headers=level.headers,
    )
    assert (response.status_code, response.json()["code"]) == (422, "delegation-depth-exceeded")


async def test_who_may_delegate_and_close(fleet: Fleet, auditor_key: str) -> None:
    parent = await delegating_parent(fleet)
    stranger = await spender(fleet, team_id=parent.team_id)
    path = f"/v1/agents/{parent.agent_id}/children"
    body = {"name": "kid", "grant": "1"}
    assert (await fleet.client.post(path, json=body)).status_code == 401
    assert (
        await fleet.client.post(path, json=body, headers=bearer(auditor_key))
    ).status_code == 403
    assert (await fleet.client.post(path, json=body, headers=stranger.headers)).status_code == 403
    # An agent an admin has not allowed may not delegate, even for itself.
    own = await fleet.client.post(
        f"/v1/agents/{stranger.agent_id}/children", json=body, headers=stranger.headers
    )
    assert (own.status_code, own.json()["code"]) == (403, "forbidden")
    # An admin may create a child for a delegating agent.
    created = await make_child(fleet.client, parent, "1", headers=fleet.admin)
    child, grant_id = child_spender(created), created["grant"]["id"]

    grant_path = f"/v1/grants/{grant_id}"
    assert (await fleet.client.get(grant_path)).status_code == 401
    assert (await fleet.client.get(grant_path, headers=stranger.headers)).status_code == 404
    for allowed in (parent.headers, child.headers, bearer(auditor_key), fleet.admin):
        assert (await fleet.client.get(grant_path, headers=allowed)).status_code == 200
    close = f"{grant_path}/close"
    assert (await fleet.client.post(close)).status_code == 401
    assert (await fleet.client.post(close, headers=bearer(auditor_key))).status_code == 403
    assert (await fleet.client.post(close, headers=stranger.headers)).status_code == 404
    assert (await fleet.client.post(close, headers=child.headers)).status_code == 403
    assert (await fleet.client.post(close, headers=parent.headers)).status_code == 200


async def test_parent_issues_short_lived_keys_for_its_own_children_only(fleet: Fleet) -> None:
    parent = await delegating_parent(fleet)
    stranger = await spender(fleet, team_id=parent.team_id)
    created = await make_child(fleet.client, parent, "1", ttl_seconds=600)
    child = child_spender(created)
    expires = datetime.fromisoformat(created["grant"]["expires_at"])
    path = f"/v1/agents/{child.agent_id}/keys"
    issued = await fleet.client.post(path, json={"name": "worker"}, headers=parent.headers)
    assert issued.status_code == 201, issued.text
    assert datetime.fromisoformat(issued.json()["expires_at"]) == expires
    new_key = Spender(agent_id=child.agent_id, team_id=child.team_id, key=issued.json()["key"])
    assert (await charge(fleet.client, new_key, "0.1")).status_code == 201
    too_late = await fleet.client.post(
        path, json={"expires_at": "2999-01-01T00:00:00Z"}, headers=parent.headers
    )
    assert (too_late.status_code, too_late.json()["code"]) == (422, "validation-error")
    # Not for another agent's child, nor for itself, nor by the child for its parent, nor for
    # an agent that does not exist: the same 404 each time (other agents are not its to know).
    assert (await fleet.client.post(path, json={}, headers=stranger.headers)).status_code == 404
    for who, target in ((parent, parent.agent_id), (child, parent.agent_id), (parent, "agt_x")):
        response = await fleet.client.post(
            f"/v1/agents/{target}/keys", json={}, headers=who.headers
        )
        assert (response.status_code, response.json()["code"]) == (404, "not-found")
    await fleet.client.post(f"/v1/grants/{created['grant']['id']}/close", headers=parent.headers)
    closed = await fleet.client.post(path, json={}, headers=parent.headers)
    assert (closed.status_code, closed.json()["code"]) == (409, "grant-closed")


async def test_team_rules_of_delegation(fleet: Fleet) -> None:
    """Children live in their parent's team: a teamless agent cannot delegate, and neither a
    child nor a parent with children can change team."""
    loner = await fleet.agent(unique_name("loner"))
    response = await fleet.client.patch(
        f"/v1/agents/{loner['id']}", json={"can_delegate": True}, headers=fleet.admin
    )
    assert (response.status_code, response.json()["field"]) == (422, "can_delegate")
    parent = await delegating_parent(fleet)
    child = child_spender(await make_child(fleet.client, parent, "1"))
    elsewhere = await fleet.team(unique_name("elsewhere"))
    for agent_id in (parent.agent_id, child.agent_id):
        moved = await fleet.client.patch(
            f"/v1/agents/{agent_id}", json={"team_id": elsewhere["id"]}, headers=fleet.admin
        )
        assert (moved.status_code, moved.json()["code"]) == (409, "conflict")


async def test_the_escrow_is_not_captured_or_released_by_hand(fleet: Fleet) -> None:
    parent = await delegating_parent(fleet)
    created = await make_child(fleet.client, parent, "1")
    holds = await fleet.client.get(
        "/v1/holds", params={"agent_id": parent.agent_id}, headers=fleet.admin
    )
    [escrow] = holds.json()["items"]
    assert escrow["amount"] == "1"
    for action in ("capture", "release"):
        response = await fleet.client.post(
            f"/v1/holds/{escrow['id']}/{action}", json={}, headers=parent.headers
        )
        assert (response.status_code, response.json()["code"]) == (409, "grant-escrow")
        assert response.json()["grant_id"] == created["grant"]["id"]


async def test_adjustments_go_to_the_parent(fleet: Fleet) -> None:
    parent = await delegating_parent(fleet)
    child = child_spender(await make_child(fleet.client, parent, "1"))
    response = await fleet.client.post(
        "/v1/adjustments",
        json={"agent_id": child.agent_id, "amount": "0.5", "reason": "refund"},
        headers=fleet.admin,
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation-error")


async def test_child_holds_and_captures_spend_the_grant(
    fleet: Fleet, db: asyncpg.Connection
) -> None:
    parent = await delegating_parent(fleet, limits={"total": "5"})
    child = child_spender(await make_child(fleet.client, parent, "2"))
    hold = await fleet.client.post(
        "/v1/holds", json={"amount": "1.5", "ttl_seconds": 600}, headers=child.headers
    )
    assert hold.status_code == 201
    over = await fleet.client.post(
        "/v1/holds", json={"amount": "0.6", "ttl_seconds": 600}, headers=child.headers
    )
    assert (over.status_code, over.json()["scope"]) == (402, "grant")
    # Capturing beyond the hold is new spending, and must fit the grant too.
    beyond = await fleet.client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={"amount": "2.1"}, headers=child.headers
    )
    assert (beyond.status_code, beyond.json()["scope"]) == (402, "grant")
    captured = await fleet.client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={"amount": "1.2"}, headers=child.headers
    )
    assert captured.status_code == 201, captured.text
    parent_row, team = await balance_of(db, parent.agent_id), await balance_of(db, parent.team_id)
    assert (parent_row["spent_total"], parent_row["held"]) == (1_200_000_000, 800_000_000)
    assert (team["spent_total"], team["held"]) == (1_200_000_000, 800_000_000)
    await verified(fleet)


@pytest.mark.timeout(600)
async def test_parent_and_children_racing_never_pass_the_parents_limit(
    two_servers: list[ServerProcess], admin_key: str, db: asyncpg.Connection
) -> None:
    """Hundreds of charges at once, from a parent and three children (one of them a parent in
    turn) across two processes: the parent's limit and each grant hold exactly, and every
    counter equals its replay from the ledger afterwards."""
    async with httpx.AsyncClient(base_url=two_servers[0].base_url, timeout=60) as client:
        fleet = Fleet(client, admin_key)
        parent = await delegating_parent(fleet, limits={"total": "3"}, team_limits={"total": "4"})
        children = [
            child_spender(await make_child(client, parent, "0.8", can_delegate=True))
            for _ in range(3)
        ]
        grandchild = child_spender(await make_child(client, children[0], "0.3"))
    spenders = [parent, *children, grandchild]
    requests = [(who, "0.01") for who in spenders for _ in range(80)]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    clients = [
        httpx.AsyncClient(base_url=s.base_url, timeout=120, limits=limits) for s in two_servers
    ]
    try:
        calls = [
            c.post("/v1/charges", json={"amount": amount}, headers=who.headers)
            for c, (who, amount) in zip(itertools.cycle(clients), requests, strict=False)
        ]
        answers = await asyncio.gather(*calls)
    finally:
        for c in clients:
            await c.aclose()
    assert {a.status_code for a in answers} <= {201, 402}, {
        a.text for a in answers if a.status_code >= 500
    }
    accepted = {who.agent_id: 0 for who in spenders}
    for (who, _), answer in zip(requests, answers, strict=True):
        accepted[who.agent_id] += answer.status_code == 201
    # Each child spends at most its grant (the first child shares its own with the grandchild);
    # the parent's spent plus what its open grants still hold stays within its limit.
    # Every grant is used up exactly: the first child keeps 0.5 of its 0.8 (0.3 went on to the
    # grandchild), the others spend all of theirs.
    assert accepted[grandchild.agent_id] == 30
    assert accepted[children[0].agent_id] == 50
    assert [accepted[other.agent_id] for other in children[1:]] == [80, 80]
    total_spent = sum(accepted.values()) * 10_000_000
    row = await balance_of(db, parent.agent_id)
    assert row["spent_total"] == total_spent
    assert row["spent_total"] + row["held"] <= 3 * NANOS
    # The limit was reached, not merely respected: the grants were fully carved at 2.4 and the
    # parent's own 0.6 spent.
    assert accepted[parent.agent_id] == 60
    assert (await verify_ledger(db)).ok


async def test_reports_roll_children_up_to_their_ancestors(fleet: Fleet) -> None:
    root = await delegating_parent(fleet)
    middle = child_spender(await make_child(fleet.client, root, "5", can_delegate=True))
    leaf = child_spender(await make_child(fleet.client, middle, "2"))
    for who, amount in ((root, "1"), (middle, "0.5"), (leaf, "0.25")):
        assert (await charge(fleet.client, who, amount)).status_code == 201
    params = {"team_id": root.team_id, "group_by": "agent"}
    plain = await fleet.client.get("/v1/reports/top-spenders", params=params, headers=fleet.admin)
    assert {i["id"]: i["spent"] for i in plain.json()["items"]} == {
        root.agent_id: "1",
        middle.agent_id: "0.5",
        leaf.agent_id: "0.25",
    }
    rolled = await fleet.client.get(
        "/v1/reports/top-spenders", params={**params, "rollup": "true"}, headers=fleet.admin
    )
    assert rolled.status_code == 200, rolled.text
    assert [(i["id"], i["spent"], i["charges"]) for i in rolled.json()["items"]] == [
        (root.agent_id, "1.75", 3)
    ]
    assert rolled.json()["total"] == plain.json()["total"] == "1.75"
    for who, own, tree in ((middle, "0.5", "0.75"), (leaf, "0.25", "0.25")):
        for rollup, expected in (("false", own), ("true", tree)):
            series = await fleet.client.get(
                "/v1/reports/spend",
                params={"agent_id": who.agent_id, "rollup": rollup},
                headers=fleet.admin,
            )
            assert series.status_code == 200, series.text
            assert sum(float(b["spent"]) for b in series.json()["items"]) == float(expected)
