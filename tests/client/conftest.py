"""Fixtures for the client package's tests: the in-repo client on sys.path, a live server.

``pip install -e '.[dev]'`` installs the server; the client is a separate distribution in
``client/`` (``pip install ./client``), and the main project cannot depend on it by a relative
path in a portable way. These tests import it from this checkout instead, so the suite always
checks the client that sits next to the server it runs against.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, bearer, unique_name

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

# LiteLLM fetches its price map from the internet on import unless told to use its own copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="package")
def ledger_server(database_url: str) -> Iterator[ServerProcess]:
    """``agent-ledger serve`` in a child process on the session's database, for this package's
    tests only, with a small pool: the Postgres it shares with other test runs has few
    connections to spare."""
    server = ServerProcess(database_url, env={"LEDGER_POOL_MAX_SIZE": "6"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class AgentSetup:
    """A fresh team, agent and agent key on the live server, and the admin key beside them."""

    base_url: str
    admin_key: str
    team_id: str
    agent_id: str
    key: str

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = httpx.request(
            method, self.base_url + path, headers=bearer(self.admin_key), timeout=10, **kwargs
        )
        assert response.status_code < 300, response.text
        return response

    def set_budget(self, **limits: str | None) -> dict:
        return self.admin(
            "PUT", f"/v1/agents/{self.agent_id}/budget", json={"limits": limits}
        ).json()

    def entries(self, **params: str) -> list[dict]:
        """Every entry of this agent, read with the admin key (not through the client)."""
        items, cursor = [], None
        while True:
            query = {"agent_id": self.agent_id, "limit": "1000", **params}
            if cursor:
                query["cursor"] = cursor
            page = self.admin("GET", "/v1/entries", params=query).json()
            items += page["items"]
            if not (cursor := page["next_cursor"]):
                return items


def make_agent(base_url: str, admin_key: str, name: str = "client-test") -> AgentSetup:
    def post(path: str, body: dict) -> dict:
        response = httpx.post(base_url + path, json=body, headers=bearer(admin_key), timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    name = unique_name(name)  # names are unique, and every test shares the server's database
    team = post("/v1/teams", {"name": f"{name} team"})
    agent = post("/v1/agents", {"name": name, "team_id": team["id"]})
    key = post(f"/v1/agents/{agent['id']}/keys", {"name": "client tests"})["key"]
    return AgentSetup(base_url, admin_key, team["id"], agent["id"], key)


@pytest.fixture
def agent(ledger_server: ServerProcess, admin_key: str) -> AgentSetup:
    """A new agent with its key, no budget, on the live server."""
    return make_agent(ledger_server.base_url, admin_key)


@dataclass
class ChildSetup:
    """A child agent (delegation) of ``parent``, with its grant and its own key."""

    parent: AgentSetup
    agent_id: str
    grant_id: str
    key: str


def make_child(parent: AgentSetup, grant: str, name: str = "client-child") -> ChildSetup:
    """The admin lets ``parent`` delegate; the parent's own key creates a child with ``grant``."""
    parent.admin("PATCH", f"/v1/agents/{parent.agent_id}", json={"can_delegate": True})
    response = httpx.post(
        f"{parent.base_url}/v1/agents/{parent.agent_id}/children",
        json={"name": unique_name(name), "grant": grant, "ttl_seconds": 600},
        headers=bearer(parent.key),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return ChildSetup(parent, created["agent"]["id"], created["grant"]["id"], created["key"]["key"])
