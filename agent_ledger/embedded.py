"""A private Postgres for ``agent-ledger serve`` (and the other commands) when no DATABASE_URL is
given.

The ``pgserver`` wheel ships Postgres binaries, works as root (it runs the server as an
unprivileged user) and listens only on a Unix socket, so it never clashes with a Postgres already
on port 5432. Several processes may use one data directory at once (a running ``serve`` and a
CLI command, say); the last one out stops the server.

Who stops it is decided here, not by pgserver. pgserver counts its users by pid in a file and
stops the server when the last one leaves; a process killed with SIGKILL never leaves, so its pid
stayed in the file and from then on no clean exit ever stopped Postgres again. Here each user is
recorded by pid *and* process start time (a recycled pid is not mistaken for a live user), dead
users are pruned whenever the list is read, and the last live user to stop stops Postgres, all
under a file lock in the data directory.

Where the data lives: ``LEDGER_DATA_DIR`` when set; otherwise the nearest ``.agent-ledger``
directory in the current directory or one of its parents, the way git finds ``.git``, so a
command run anywhere inside the directory where ``serve`` was started finds the same data.
When there is none, ``serve`` creates ``./.agent-ledger``; every other command refuses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

__all__ = ["DATA_DIR_NAME", "EmbeddedPostgres", "has_database", "locate_data_dir"]

DATABASE_NAME = "agent_ledger"
DATA_DIR_NAME = ".agent-ledger"
USERS_FILE = "embedded-postgres-users.json"
LOCK_FILE = "embedded-postgres.lock"


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


# pgserver narrates every command it runs at INFO; only its warnings concern an operator.
logging.getLogger("pgserver").setLevel(logging.WARNING)


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def _is_alive(user: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(user["pid"])
        return (
            abs(process.create_time() - user["started"]) < 0.01
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError):
        return False


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return an asyncpg-compatible URL for our database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            users = self._live_users()
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset, normal in containers.
                warnings.simplefilter("ignore")
                import pgserver

                # cleanup_mode=None: pgserver never stops the server itself; stop() decides.
                self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
            self._write_users([*users, _this_process()])
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        """Leave; the last live user stops Postgres."""
        if self._server is None:
            return
        import pgserver

        me = _this_process()
        with self._locked():
            others = [u for u in self._live_users() if u["pid"] != me["pid"]]
            self._write_users(others)
            system_user = self._server.system_user
            self._server.cleanup()  # pgserver's own bookkeeping; it stops nothing
            self._server = None
            if not others and (self.pgdata / "postmaster.pid").exists():
                pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=system_user)

    def _live_users(self) -> list[dict[str, Any]]:
        """The recorded users still running; pgserver's own pid list is pruned the same way."""
        path = self.data_dir / USERS_FILE
        try:
            users = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            users = []
        self._prune_pgserver_pids()
        return [u for u in users if isinstance(u, dict) and _is_alive(u)]

    def _write_users(self, users: list[dict[str, Any]]) -> None:
        path = self.data_dir / USERS_FILE
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(users))
        scratch.replace(path)

    def _prune_pgserver_pids(self) -> None:
        handles = self.pgdata / ".handle_pids.json"
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids = json.loads(handles.read_text())
            alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
            if alive != pids:
                handles.write_text(json.dumps(alive))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.data_dir / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
