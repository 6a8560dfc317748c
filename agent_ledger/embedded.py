"""A private Postgres for ``agent-ledger serve`` when no DATABASE_URL is given.

The ``pgserver`` wheel ships Postgres binaries, works as root (it runs the server as an
unprivileged user) and listens only on a Unix socket, so it never clashes with a Postgres already
on port 5432. Several processes may use one data directory at once (a running ``serve`` and a
CLI command, say): pgserver counts them and the last one out stops the server.

Where the data lives: ``LEDGER_DATA_DIR`` when set; otherwise the nearest ``.agent-ledger``
directory in the current directory or one of its parents, the way git finds ``.git``, so a
command run anywhere inside the directory where ``serve`` was started finds the same data.
When there is none, ``serve`` creates ``./.agent-ledger``; every other command refuses.
"""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ["DATA_DIR_NAME", "EmbeddedPostgres", "has_database", "locate_data_dir"]

DATABASE_NAME = "agent_ledger"
DATA_DIR_NAME = ".agent-ledger"


def locate_data_dir(configured: str | None, cwd: Path | None = None) -> Path:
    """The embedded data directory: ``configured`` (LEDGER_DATA_DIR) when given, else the nearest
    ``.agent-ledger`` in ``cwd`` or its parents, else ``cwd/.agent-ledger`` (absent yet)."""
    here = (cwd or Path.cwd()).absolute()
    if configured:
        return (here / Path(configured).expanduser()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / DATA_DIR_NAME
        if has_database(candidate):
            return candidate
    return here / DATA_DIR_NAME


def has_database(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an embedded Postgres cluster (``serve`` made one there)."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()


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
