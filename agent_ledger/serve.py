"""``agent-ledger serve``: migrate, make the first admin key, say where everything is, serve."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import socket

from agent_ledger import __version__
from agent_ledger.cli_database import CliError, DatabaseTarget, connect, open_database
from agent_ledger.config import Settings, load_settings
from agent_ledger.durability import UnsafeDurability, check_durability
from agent_ledger.keys.cli import issue_staff_key
from agent_ledger.metrics.multiprocess import run_directory

__all__ = ["cmd_serve", "startup_banner"]

LOST_KEY_HINT = "agent-ledger keys create --role admin"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _browsable_host(host: str) -> str:
    """A host a browser on this machine can open when the service listens on every interface."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def startup_banner(host: str, port: int, target: DatabaseTarget) -> str:
    """What ``serve`` prints on every start: where it listens, its docs, where its data is.

    The database URL is shown with its password masked; it never names a key.
    """
    listen = f"http://{_url_host(host)}:{port}"
    browse = f"http://{_url_host(_browsable_host(host))}:{port}"
    where = listen if browse == listen else f"{listen} (every interface; here: {browse})"
    if target.data_dir is not None and target.data_dir_configured:
        # The directory a command run elsewhere would search from has no database of its own.
        data = f"{target.data_dir} (embedded Postgres)"
        hint = f"run `LEDGER_DATA_DIR={shlex.quote(target.data_dir)} {LOST_KEY_HINT}`"
    elif target.data_dir is not None:
        data = f"{target.data_dir} (embedded Postgres)"
        hint = f"run `{LOST_KEY_HINT}` in {os.path.dirname(target.data_dir)}"
    else:
        data = "in the database below (DATABASE_URL)"
        hint = f"run `{LOST_KEY_HINT}` with the same DATABASE_URL"
    return "\n".join(
        [
            f"agent-ledger {__version__}",
            f"  listening on  {where}",
            f"  API docs      {browse}/docs",
            f"  data          {data}",
            f"  database      {target.display_url}",
            f"  lost the admin key? {hint}",
        ]
    )


def _check_port(host: str, port: int) -> None:
    """Refuse at once, in one line, when the address is taken (before Postgres starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The same option uvicorn sets, so a socket in TIME_WAIT is no reason to refuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(choose another port with --port or LEDGER_PORT)"
            ) from None


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _check_durability(url: str, *, allow: bool) -> None:
    """Refuse, in one line, a database that may lose what it acknowledged (durability.py)."""
    conn = await connect(url)
    try:
        await check_durability(conn, allow=allow)
    except UnsafeDurability as refusal:
        raise CliError(str(refusal)) from None
    finally:
        await conn.close()


async def _first_admin_key(url: str, pepper: str) -> str | None:
    return await issue_staff_key(url, "admin", "first admin", pepper, only_if_none=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agent_ledger.logs import configure_logging
    from agent_ledger.migrate import migrate

    settings: Settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    host, port = args.host or settings.host, args.port or settings.port
    _check_port(host, port)
    with open_database(settings, create=True, require_schema=False) as target:
        migrate(target.url)
        asyncio.run(_check_durability(target.url, allow=settings.allow_unsafe_durability))
        first_key = asyncio.run(_first_admin_key(target.url, settings.key_pepper))
        if first_key:
            print(
                "agent-ledger: first start, created an admin key. It is shown only now:\n"
                f"{first_key}",
                flush=True,
            )
        print(startup_banner(host, port, target), flush=True)
        # Worker processes read their settings from the environment.
        os.environ["DATABASE_URL"] = target.url
        # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets
        # the embedded Postgres stop cleanly on the way out instead of being orphaned.
        signal.signal(signal.SIGTERM, _exit_quietly)
        # The workers' metrics meet in a directory of this run's own (metrics/multiprocess.py);
        # set before the app, and with it prometheus_client, is first imported.
        with run_directory():
            uvicorn.run(
                "agent_ledger.app:app_from_environment",
                factory=True,
                host=host,
                port=port,
                workers=args.workers,
                http="agent_ledger.http_protocol:ProblemHttpToolsProtocol",
                log_config=None,
                access_log=False,
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
    return 0
