"""A private Postgres for ``agent-ledger serve`` when no DATABASE_URL is given.

The ``pgserver`` wheel ships Postgres binaries, works as root (it runs the server as an
unprivileged user) and listens only on a Unix socket, so it never clashes with a Postgres already
on port 5432.
"""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ["EmbeddedPostgres"]

DATABASE_NAME = "agent_ledger"


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._server = None

    def start(self) -> str:
        """Start (or join) the server and return an asyncpg-compatible URL for our database."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal in containers.
            warnings.simplefilter("ignore")
            import pgserver

            pgdata = self.data_dir / "pgdata"
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
