"""One asyncpg pool per process, opened and closed by the app's lifespan."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

__all__ = ["create_pool", "init_connection"]

_json_encoder = msgspec.json.Encoder()


def _decode_json(value: str) -> Any:
    return msgspec.json.decode(value)


def _encode_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    # json/jsonb travel as Python objects in both directions, encoded by msgspec.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_encode_json, decoder=_decode_json, schema="pg_catalog"
        )


async def create_pool(
    database_url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    application_name: str = "agent-ledger",
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        server_settings={"application_name": application_name, "timezone": "UTC"},
    )
