"""Authentication: key format and checksum, the bearer header, hashed storage, expiry, last use.

Mirrors ``agent_ledger/auth.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.auth import LastUsedTracker, generate_key, key_is_well_formed
from agent_ledger.config import Settings
from agent_ledger.db import create_pool
from tests.conftest import TEST_PEPPER, Fleet, bearer

KEY_PATTERN = re.compile(r"^al_(adm|aud|agt)_[0-9A-Za-z]{38}$")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def expected_checksum(body: str) -> str:
    """The documented checksum, computed independently of the service: CRC32 as 6 base62 digits."""
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def mutate(key: str, position: int) -> str:
    """``key`` with exactly the character at ``position`` replaced by a different one."""
    replacement = "Z" if key[position] != "Z" else "Y"
    return key[:position] + replacement + key[position + 1 :]


async def assert_unauthorized(client: AsyncTestClient, headers: dict[str, str]) -> None:
    response = await client.get("/v1/me", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthorized"


# --- key format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "marker"), [("admin", "adm"), ("auditor", "aud"), ("agent", "agt")]
)
def test_generated_keys_carry_prefix_role_marker_and_length(role: str, marker: str) -> None:
    """A key is ``al_``, a role marker, ``_``, 32 random base62 chars and a 6-char checksum."""
    key = generate_key(role)
    assert KEY_PATTERN.match(key), key
    assert key.startswith(f"al_{marker}_")
    assert len(key) == 45


def test_checksum_is_crc32_of_the_body_in_base62() -> None:
    """The last six characters are the CRC32 of everything before them, in base62."""
    key = generate_key("agent")
    assert key[-6:] == expected_checksum(key[:-6])
    assert key_is_well_formed(key)


def test_generated_keys_are_unique() -> None:
    """Keys come from a CSPRNG; a thousand of them never collide."""
    assert len({generate_key("admin") for _ in range(1000)}) == 1000


def test_any_single_changed_character_breaks_the_checksum() -> None:
    """Changing any one character, prefix, marker, body or checksum, makes the key malformed."""
    key = generate_key("admin")
    for position in range(len(key)):
        assert not key_is_well_formed(mutate(key, position)), position


def test_truncated_and_extended_keys_are_malformed() -> None:
    """A key one character short or long is refused before any lookup."""
    key = generate_key("auditor")
    assert not key_is_well_formed(key[:-1])
    assert not key_is_well_formed(key + "a")
    assert not key_is_well_formed("")


@pytest.mark.parametrize(
    "position",
    [0, 2, 3, 5, 6, 7, 20, 38, 39, 44],
    ids=lambda p: f"char{p}",
)
async def test_a_key_with_one_character_changed_is_refused(
    client: AsyncTestClient, admin_key: str, position: int
) -> None:
    """A real key with any single character changed gets 401 ``unauthorized``."""
    await assert_unauthorized(client, bearer(mutate(admin_key, position)))


async def test_a_well_formed_key_never_issued_is_refused(client: AsyncTestClient) -> None:
    """A key with a valid checksum that the service never issued gets 401."""
    key = generate_key("admin")
    assert key_is_well_formed(key)
    await assert_unauthorized(client, bearer(key))


async def test_a_valid_key_is_accepted(client: AsyncTestClient, admin_key: str) -> None:
    """The control case for the refusals above: the same key unchanged is let in."""
    response = await client.get("/v1/me", headers=bearer(admin_key))
    assert response.status_code == 200
    assert response.json()["role"] == "admin"


# --- the Authorization header -------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic {key}",
        "Token {key}",
        "{key}",
        "Bearer {key} extra",
        "Bearer{key}",
    ],
    ids=[
        "missing",
        "empty",
        "bearer-no-token",
        "bearer-space",
        "bearer-blank",
        "basic",
        "token",
        "no-scheme",
        "trailing-junk",
        "no-space",
    ],
)
async def test_missing_or_malformed_authorization_is_refused(
    client: AsyncTestClient, admin_key: str, header: str | None
) -> None:
    """Anything but ``Bearer <key>`` with a real key gets 401, even when a real key is inside."""
    headers = {} if header is None else {"Authorization": header.format(key=admin_key)}
    await assert_unauthorized(client, headers)


async def test_bearer_scheme_is_case_insensitive(client: AsyncTestClient, admin_key: str) -> None:
    """HTTP auth schemes are case-insensitive (RFC 9110), so ``bearer`` works like ``Bearer``."""
    response = await client.get("/v1/me", headers={"Authorization": f"bearer {admin_key}"})
    assert response.status_code == 200


async def test_refusal_advertises_nothing_about_the_key(
    client: AsyncTestClient, admin_key: str
) -> None:
    """A 401 never echoes the key that was sent."""
    wrong = mutate(admin_key, 30)
    response = await client.get("/v1/me", headers=bearer(wrong))
    assert response.status_code == 401
    assert wrong not in response.text
    assert admin_key not in response.text


async def test_refusal_names_the_bearer_scheme(client: AsyncTestClient) -> None:
    """A 401 says how to authenticate: ``WWW-Authenticate: Bearer``."""
    response = await client.get("/v1/me")
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


# --- security audit events ----------------------------------------------------------------------


async def test_a_refused_key_writes_an_auth_failed_event(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A request with an unknown key leaves an ``auth.failed`` audit event (never the key)."""
    request_id = f"auth-failed-{uuid.uuid4().hex}"
    key = generate_key("admin")
    # A fresh app: the shared one's per-process rate limit on auth events is spent by now.
    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.get("/v1/me", headers={**bearer(key), "X-Request-ID": request_id})
    assert response.status_code == 401
    rows = await db.fetch(
        "SELECT action, before::text AS b, after::text AS a FROM audit_events"
        " WHERE request_id = $1",
        request_id,
    )
    assert [row["action"] for row in rows] == ["auth.failed"]
    assert key not in f"{rows[0]['b']}{rows[0]['a']}"


async def test_a_refused_role_writes_an_auth_forbidden_event(
    settings: Settings, auditor_key: str, db: asyncpg.Connection
) -> None:
    """An auditor trying to write leaves an ``auth.forbidden`` event naming the auditor's key."""
    request_id = f"auth-forbidden-{uuid.uuid4().hex}"
    # A fresh app: the shared one's per-process rate limit on auth events is spent by now.
    async with AsyncTestClient(create_app(settings)) as client:
        me = (await client.get("/v1/me", headers=bearer(auditor_key))).json()
        response = await client.post(
            "/v1/teams",
            json={"name": "not allowed"},
            headers={**bearer(auditor_key), "X-Request-ID": request_id},
        )
    assert response.status_code == 403
    rows = await db.fetch(
        "SELECT action, actor_key_id, actor_role FROM audit_events WHERE request_id = $1",
        request_id,
    )
    assert [tuple(row) for row in rows] == [("auth.forbidden", me["key_id"], "auditor")]


# --- storage -----------------------------------------------------------------------------------


async def test_only_a_peppered_hmac_of_the_key_is_stored(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """The api_keys row holds HMAC-SHA256(pepper, key) and the key text appears in no column."""
    agent = await fleet.agent("hash-check")
    created = await fleet.agent_key(agent["id"])
    key = created["key"]
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
    assert row is not None
    for column, value in row.items():
        if isinstance(value, bytes):
            assert key.encode() not in value, column
        assert key not in str(value), column
    expected = hmac.new(TEST_PEPPER.encode(), key.encode(), hashlib.sha256).digest()
    assert bytes(row["key_hash"]) == expected
    assert bytes(row["key_hash"]) != hashlib.sha256(key.encode()).digest()
    assert key.startswith(row["prefix"])
    assert len(row["prefix"]) < len(key) // 2


# --- expiry ------------------------------------------------------------------------------------


async def test_a_key_is_refused_once_it_expires(
    client: AsyncTestClient, fleet: Fleet, db: asyncpg.Connection
) -> None:
    """A key with ``expires_at`` works until then and gets 401 from that moment on."""
    agent = await fleet.agent("expiring")
    expires_at = await db.fetchval("SELECT now()") + timedelta(seconds=1)
    created = await fleet.agent_key(agent["id"], expires_at=expires_at.isoformat())
    assert (await client.get("/v1/me", headers=bearer(created["key"]))).status_code == 200

    remaining = (expires_at - await db.fetchval("SELECT now()")).total_seconds()
    await asyncio.sleep(max(remaining, 0) + 0.05)
    await assert_unauthorized(client, bearer(created["key"]))


# --- last use ----------------------------------------------------------------------------------


async def _last_used(db: asyncpg.Connection, key_id: str) -> datetime | None:
    return await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)


async def test_requests_do_not_write_last_used_at_until_a_flush(
    settings: Settings, admin_key: str, db: asyncpg.Connection
) -> None:
    """Authenticating only notes the use in memory; the row changes when the tracker flushes,
    which the app also does on shutdown."""
    app = create_app(msgspec.structs.replace(settings, last_used_flush_seconds=3600))
    async with AsyncTestClient(app) as client:
        fleet = Fleet(client, admin_key)
        agent = await fleet.agent("last-used")
        key = await fleet.agent_key(agent["id"])
        for _ in range(3):
            assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200
        assert await _last_used(db, key["id"]) is None
    assert await _last_used(db, key["id"]) is not None


async def test_tracker_flush_writes_last_used_at_in_one_batch(
    fleet: Fleet, database_url: str, db: asyncpg.Connection
) -> None:
    """``flush`` writes every touched key once, reports how many, and then has nothing left."""
    agent = await fleet.agent("tracker")
    first, second = await fleet.agent_key(agent["id"]), await fleet.agent_key(agent["id"])
    tracker = LastUsedTracker()
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        before = datetime.now(UTC)
        tracker.touch(first["id"])
        tracker.touch(second["id"])
        tracker.touch(first["id"])
        assert await _last_used(db, first["id"]) is None
        assert await tracker.flush(pool) == 2
        for key in (first, second):
            used = await _last_used(db, key["id"])
            assert used is not None
            assert before - timedelta(seconds=5) <= used <= datetime.now(UTC) + timedelta(seconds=5)
        assert await tracker.flush(pool) == 0
    finally:
        await pool.close()


async def test_a_failed_flush_keeps_the_uses_for_the_next_one(
    fleet: Fleet, database_url: str, db: asyncpg.Connection
) -> None:
    """When a flush cannot reach the database, the next flush still writes what it missed."""
    agent = await fleet.agent("tracker-retry")
    key = await fleet.agent_key(agent["id"])
    tracker = LastUsedTracker()
    tracker.touch(key["id"])
    broken = await create_pool(database_url, min_size=1, max_size=1)
    await broken.close()
    with pytest.raises(asyncpg.InterfaceError):
        await tracker.flush(broken)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        assert await tracker.flush(pool) == 1
    finally:
        await pool.close()
    assert await _last_used(db, key["id"]) is not None


async def test_tracker_flush_never_moves_last_used_at_backwards(
    fleet: Fleet, database_url: str, db: asyncpg.Connection
) -> None:
    """A flush from a process with an older observation leaves a newer ``last_used_at`` alone."""
    agent = await fleet.agent("tracker-order")
    key = await fleet.agent_key(agent["id"])
    newer = datetime.now(UTC) + timedelta(hours=1)
    await db.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", key["id"], newer)
    tracker = LastUsedTracker()
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        tracker.touch(key["id"])
        await tracker.flush(pool)
    finally:
        await pool.close()
    assert await _last_used(db, key["id"]) == newer
