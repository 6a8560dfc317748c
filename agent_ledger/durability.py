"""Refuse to run on a database that may forget what it acknowledged.

With ``fsync`` off a crash of the machine can corrupt the database; with ``synchronous_commit``
off Postgres acknowledges a commit before it is on disk, so a crash loses charges the service
already answered 201 for (and an idempotent retry would then charge them again). Both are
settings an operator can change per server, database or role without us noticing, so the service
checks them on its own connections at start. ``LEDGER_ALLOW_UNSAFE_DURABILITY=true`` starts it
anyway (a throwaway test database, say), with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

__all__ = ["UnsafeDurability", "check_durability", "unsafe_settings"]

# The settings that must not be "off", and what is lost when they are.
_REQUIRED_ON = {
    "fsync": "a crash of the machine can corrupt the database",
    "synchronous_commit": "a crash can lose charges that were already acknowledged",
}


class UnsafeDurability(RuntimeError):
    """The database may lose acknowledged commits; the message is one line for the operator."""


def unsafe_settings(values: Mapping[str, str]) -> list[str]:
    """The names, among ``values`` (setting -> value as SHOW prints it), that are off."""
    return [name for name in _REQUIRED_ON if values.get(name, "on").lower() == "off"]


async def check_durability(conn: asyncpg.Connection, *, allow: bool) -> list[str]:
    """Raise ``UnsafeDurability`` unless ``allow``; answer the unsafe settings found."""
    values = {name: await conn.fetchval(f"SHOW {name}") for name in _REQUIRED_ON}
    unsafe = unsafe_settings(values)
    if unsafe and not allow:
        database = await conn.fetchval("SELECT current_database()")
        reasons = "; ".join(f"{name} is off, so {_REQUIRED_ON[name]}" for name in unsafe)
        raise UnsafeDurability(
            f"refusing to start on database {database!r}: {reasons}. Turn it on (for example "
            f"ALTER DATABASE {database} SET {unsafe[-1]} = on), or set "
            "LEDGER_ALLOW_UNSAFE_DURABILITY=true to start anyway."
        )
    return unsafe
