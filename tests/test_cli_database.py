"""How CLI commands find their database, and how they refuse when they cannot use it.

Mirrors ``agent_ledger/cli_database.py`` and ``locate_data_dir`` in ``agent_ledger/embedded.py``.
Every command runs as a child process, as an operator would run it; every refusal is one line
on stderr, exit status 2, and never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent_ledger.cli_database import mask_url
from agent_ledger.embedded import locate_data_dir
from tests.conftest import _with_database
from tests.test_cli import cli_env, run_cli

# Every command that works on an existing database (serve and openapi aside).
COMMANDS = [
    ("keys", "create", "--role", "admin"),
    ("verify",),
    ("verify", "--checkpoint", "0" * 64),
    ("export", "--format", "csv"),
    ("checkpoint",),
    ("report", "spend"),
    ("report", "top-spenders"),
    ("migrate",),
]


def assert_one_line_refusal(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agent-ledger: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def no_data_above(directory: Path) -> bool:
    return not any((d / ".agent-ledger" / "pgdata").exists() for d in directory.parents)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_commands_refuse_where_there_is_no_database(tmp_path: Path, command: tuple) -> None:
    """Run in an empty directory with nothing configured, a command creates nothing and says in
    one line where it looked and what to set, instead of starting an empty database."""
    if not no_data_above(tmp_path):
        pytest.skip("a parent of the temporary directory holds an .agent-ledger")
    result = run_cli(*command, env=cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=None), cwd=tmp_path)
    assert_one_line_refusal(result, f"no agent-ledger database in {tmp_path}", "LEDGER_DATA_DIR")
    assert list(tmp_path.iterdir()) == []


def test_a_configured_data_dir_without_a_database_is_refused(tmp_path: Path) -> None:
    """LEDGER_DATA_DIR naming a directory with no database: the refusal names that directory."""
    env = cli_env(DATABASE_URL=None, LEDGER_DATA_DIR=str(tmp_path / "nowhere"))
    result = run_cli("verify", env=env, cwd=tmp_path)
    assert_one_line_refusal(result, str(tmp_path / "nowhere"), "(LEDGER_DATA_DIR)")
    assert not (tmp_path / "nowhere").exists()


def test_an_unmigrated_database_is_refused_with_what_to_run(
    new_database: Callable[[], str],
) -> None:
    """An external database without the schema: every command but migrate says to migrate,
    and changes nothing; migrate then makes it usable."""
    url = new_database()
    env = cli_env(DATABASE_URL=url)
    for command in COMMANDS[:-1]:
        result = run_cli(*command, env=env)
        assert_one_line_refusal(result, "has no agent-ledger schema", "agent-ledger migrate")
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is up to date" in migrated.stdout
    assert run_cli("verify", env=env).returncode == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ledger:s3cret-pw@127.0.0.1:1/agent_ledger", "cannot connect"),
        ("postgresql://ledger:s3cret-pw@no-such-host.invalid/agent_ledger", "cannot connect"),
        ("mysql://ledger:s3cret-pw@127.0.0.1/agent_ledger", "must be a postgresql:// URL"),
    ],
)
def test_an_unusable_database_url_is_one_line_without_the_password(url: str, expected: str) -> None:
    """A database that cannot be reached, or a URL of the wrong kind, is named in one line with
    its password masked."""
    result = run_cli("report", "spend", env=cli_env(DATABASE_URL=url), timeout=60)
    line = assert_one_line_refusal(result, expected, "ledger:***@")
    assert "s3cret-pw" not in line


def test_a_database_that_does_not_exist_is_named(server_url: str) -> None:
    """A URL naming a database that is not there says so."""
    url = _with_database(server_url, "agent_ledger_no_such_database")
    result = run_cli("verify", env=cli_env(DATABASE_URL=url))
    assert_one_line_refusal(result, "agent_ledger_no_such_database", "does not exist")


def test_a_bad_setting_is_one_line() -> None:
    """A malformed environment variable is named, without a traceback."""
    result = run_cli("verify", env=cli_env(LEDGER_PORT="eighty"))
    assert_one_line_refusal(result, "LEDGER_PORT='eighty'")


def test_file_problems_are_one_line(tmp_path: Path, database_url: str) -> None:
    """An output file that cannot be written, or a checkpoint file that is not there, is one
    line naming the file, and no checkpoint is recorded for nothing."""
    env = cli_env(DATABASE_URL=database_url)
    missing = tmp_path / "missing" / "out.csv"
    assert_one_line_refusal(run_cli("export", "--output", str(missing), env=env), str(missing))
    assert_one_line_refusal(run_cli("checkpoint", "--output", str(missing), env=env), str(missing))
    result = run_cli("verify", "--checkpoint", str(tmp_path / "cp.json"), env=env)
    assert_one_line_refusal(result, "neither a checkpoint digest", "cp.json")


def test_the_nearest_data_directory_upwards_is_used(tmp_path: Path) -> None:
    """Without LEDGER_DATA_DIR the nearest .agent-ledger holding a database, in the current
    directory or a parent, is the one; with none, ./.agent-ledger; LEDGER_DATA_DIR wins and is
    taken relative to the current directory."""
    project = tmp_path / "project"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    if not no_data_above(tmp_path):
        pytest.skip("a parent of the temporary directory holds an .agent-ledger")
    assert locate_data_dir(None, deep) == deep / ".agent-ledger"
    (project / ".agent-ledger" / "pgdata").mkdir(parents=True)
    (project / ".agent-ledger" / "pgdata" / "PG_VERSION").write_text("16\n")
    assert locate_data_dir(None, deep) == project / ".agent-ledger"
    (deep / ".agent-ledger").mkdir()  # empty: not a database, so not chosen
    assert locate_data_dir(None, deep) == project / ".agent-ledger"
    assert locate_data_dir("elsewhere", deep) == deep / "elsewhere"
    assert locate_data_dir(str(tmp_path / "abs"), deep) == tmp_path / "abs"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://postgres:@/agent_ledger?host=/tmp/x",
            "postgresql://postgres@/agent_ledger?host=/tmp/x",
        ),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    """A database URL is printed with any password, in the userinfo or the query, masked."""
    assert mask_url(url) == shown
