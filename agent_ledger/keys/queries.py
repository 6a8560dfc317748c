"""SQL owned by the keys feature."""

from agent_ledger.keyset import Listing

KEY_COLUMNS = (
    "id, prefix, role, agent_id, name, created_at, expires_at, revoked_at, last_used_at, "
    "rotated_from"
)

INSERT_KEY = f"""
INSERT INTO api_keys (id, key_hash, prefix, role, agent_id, name, expires_at, rotated_from)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {KEY_COLUMNS}
"""

KEY_ROLE = "SELECT role FROM api_keys WHERE id = $1"

# Every admin key not yet revoked, locked in id order: two revocations of admin keys take these
# locks in the same order, so the second waits for the first and then sees what it did.
LOCK_ADMIN_KEYS = """
SELECT id, (expires_at IS NULL OR expires_at > now()) AS active
FROM api_keys
WHERE role = 'admin' AND revoked_at IS NULL
ORDER BY id
FOR UPDATE
"""

GET_KEY_FOR_UPDATE = f"SELECT {KEY_COLUMNS}, now() AS db_now FROM api_keys WHERE id = $1 FOR UPDATE"

# Listed in commit order (agent_ledger/keyset.py), so a key issued during a walk is never skipped.
KEY_LISTING = Listing(
    name="api_keys",
    table="api_keys",
    alias="k",
    columns=", ".join(f"k.{c}" for c in KEY_COLUMNS.split(", ")) + ", k.xid, k.seq",
    filters={"agent_id": "k.agent_id = ${}", "role": "k.role = ${}"},
    time_filters=(),
)

# $2: when it was revoked (the first revocation's time stays). A value, not coalesce(revoked_at,
# now()): Citus refuses a non-immutable function inside COALESCE on a reference table.
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = $2 WHERE id = $1
RETURNING {KEY_COLUMNS}
"""

# The old key lives on for the grace period, never longer than it would have anyway.
EXPIRE_KEY_AFTER_GRACE = f"""
UPDATE api_keys
SET expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2))
WHERE id = $1
RETURNING {KEY_COLUMNS}
"""

COUNT_KEYS = "SELECT count(*) FROM api_keys"

AGENT_TEAM = "SELECT team_id FROM agents WHERE id = $1"

AGENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1)"

# The agent a key is for, with its parent and grant when it is a child (issue 17).
AGENT_FOR_KEY = "SELECT id, team_id, parent_id, grant_id FROM agents WHERE id = $1"

# A child's grant, by its home (one shard on Citus).
GRANT_OF_CHILD = "SELECT status, expires_at FROM grants WHERE home_id = $1 AND id = $2"
