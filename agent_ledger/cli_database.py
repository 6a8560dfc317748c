"""How CLI commands find and open the database the server uses, and refuse in one line when not.

``DATABASE_URL`` when set; otherwise the embedded Postgres in the data directory that
``agent_ledger.embedded.locate_data_dir`` finds. Only ``serve`` may create that directory: any
other command run where there is none would otherwise start an empty database and then fail on
its first query, so it refuses instead, naming where it looked and what to set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from agent_ledger.config import Settings
from agent_ledger.embedded import EmbeddedPostgres, has_database, locate_data_dir

__all__ = [
    "CONNECTION_ERRORS",
    "CliError",
    "DatabaseTarget",
    "connect",
    "database_url",
    "describe_connection_error",
    "mask_url",
    "open_database",
]

# Seconds to wait for a connection: an unreachable host should not hang a command for a minute.
CONNECT_TIMEOUT = 10

# Failures to reach or log in to the database: the operator's to fix, so one line, no traceback.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


class CliError(Exception):
    """A refusal the user can act on; the CLI prints it as one line and exits 2."""


class DatabaseTarget:
    """Where a command's database is: the URL to connect to and how to describe it to a person."""

    def __init__(
        self, url: str, data_dir: str | None, *, data_dir_configured: bool = False
    ) -> None:
        self.url = url
        self.data_dir = data_dir
        # Whether LEDGER_DATA_DIR named the directory (rather than the search from the current
        # directory finding it): then only the same setting leads another command back to it.
        self.data_dir_configured = data_dir_configured

    @property
    def display_url(self) -> str:
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, in the userinfo or the query string."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        if password:
            netloc = f"{user}:***@{host}"
        else:
            netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, "***" if k.lower() == "password" and v else v) for k, v in pairs]
        query = urlencode(masked, safe="/:*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _check_scheme(url: str) -> None:
    scheme = url.partition("://")[0]
    if scheme not in {"postgres", "postgresql"}:
        raise CliError(
            f"DATABASE_URL must be a postgresql:// URL, not {mask_url(url)!r} "
            "(for example postgresql://user:password@host:5432/agent_ledger)"
        )


def describe_connection_error(exc: BaseException, target: str) -> str:
    """One line saying which database could not be used and why."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot connect to the database at {target}: {reason}"


async def connect(url: str) -> asyncpg.Connection:
    """A connection set up as the service's are (UTC, codecs), or a CliError saying why not."""
    from agent_ledger.db import init_connection

    try:
        conn = await asyncpg.connect(
            url, server_settings={"timezone": "UTC"}, timeout=CONNECT_TIMEOUT
        )
    except CONNECTION_ERRORS as exc:
        raise CliError(describe_connection_error(exc, mask_url(url))) from None
    await init_connection(conn)
    return conn


async def _schema_problem(url: str, *, require_schema: bool) -> str | None:
    from agent_ledger.migrate import current_revision, head_revision

    conn = await connect(url)
    try:
        revision = await current_revision(conn)
    finally:
        await conn.close()
    if not require_schema:
        return None
    head = head_revision()
    if revision is None:
        return (
            f"the database at {mask_url(url)} has no agent-ledger schema: "
            "run `agent-ledger migrate` first"
        )
    if revision != head:
        return (
            f"the database at {mask_url(url)} is at schema revision {revision}, this "
            f"agent-ledger needs {head}: run `agent-ledger migrate` (or use the agent-ledger "
            "version that migrated it)"
        )
    return None


def _check(url: str, *, require_schema: bool) -> None:
    problem = asyncio.run(_schema_problem(url, require_schema=require_schema))
    if problem is not None:
        raise CliError(problem)


def _no_database(data_dir: Path, *, configured: bool) -> str:
    if configured:
        return (
            f"no agent-ledger database in {data_dir} (LEDGER_DATA_DIR); "
            "`agent-ledger serve` creates one there"
        )
    return (
        f"no agent-ledger database in {data_dir.parent} or its parent directories: run this "
        "where `agent-ledger serve` was started, or set LEDGER_DATA_DIR (or DATABASE_URL)"
    )


@contextlib.contextmanager
def open_database(
    settings: Settings, *, create: bool = False, require_schema: bool = True
) -> Iterator[DatabaseTarget]:
    """The database a command works on, reachable for the duration of the block.

    ``create``: the embedded data directory may be created (``serve`` only). ``require_schema``:
    refuse unless the schema is migrated to this version's head (all but ``serve`` and
    ``migrate``). Any refusal is a CliError naming where the command looked.
    """
    if settings.database_url:
        _check_scheme(settings.database_url)
        _check(settings.database_url, require_schema=require_schema)
        yield DatabaseTarget(settings.database_url, None)
        return
    data_dir = locate_data_dir(settings.data_dir)
    if not create and not has_database(data_dir):
        raise CliError(_no_database(data_dir, configured=bool(settings.data_dir)))
    embedded = EmbeddedPostgres(data_dir)
    try:
        url = embedded.start()
        _check(url, require_schema=require_schema)
        yield DatabaseTarget(url, str(data_dir), data_dir_configured=bool(settings.data_dir))
    finally:
        embedded.stop()


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The URL of the migrated database a command works on (see ``open_database``)."""
    with open_database(settings) as target:
        yield target.url
