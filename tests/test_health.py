"""Probes and the served OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from litestar.testing import AsyncTestClient

from agent_ledger.cli import openapi_document

ROOT = Path(__file__).resolve().parent.parent


async def test_healthz_answers_without_a_key(client: AsyncTestClient) -> None:
    """Liveness needs no credentials and no database."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_migrated_revision(client: AsyncTestClient) -> None:
    """Readiness checks the database answers and carries the newest migration."""
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["schema_revision"] == body["expected_revision"]


async def test_committed_openapi_document_is_current(client: AsyncTestClient) -> None:
    """openapi/openapi.json must be regenerated (agent-ledger openapi) whenever the API changes."""
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == openapi_document(), "run 'agent-ledger openapi' and commit the result"
    served = (await client.get("/schema/openapi.json")).json()
    assert served == committed
