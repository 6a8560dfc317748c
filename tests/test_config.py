"""Settings from the environment (``agent_ledger/config.py``)."""

from __future__ import annotations

import pytest

from agent_ledger.app import decision_slots
from agent_ledger.config import ENVIRONMENT, Settings, SettingsError, load_settings


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    """Nothing set, or set to the empty string, means the declared default."""
    assert load_settings({}) == Settings()
    assert load_settings(dict.fromkeys(ENVIRONMENT.values(), "")) == Settings()


def test_values_are_converted_to_their_declared_types() -> None:
    """Numbers arrive as text and leave as numbers; log settings are case-insensitive."""
    settings = load_settings(
        {
            "LEDGER_PORT": "9000",
            "LEDGER_SWEEP_INTERVAL_SECONDS": "0.5",
            "LOG_FORMAT": "JSON",
            "LOG_LEVEL": "warning",
            "DATABASE_URL": "postgresql://x@y/z",
        }
    )
    assert settings.port == 9000
    assert settings.sweep_interval_seconds == 0.5
    assert settings.log_format == "json"
    assert settings.log_level == "WARNING"
    assert settings.database_url == "postgresql://x@y/z"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LEDGER_PORT", "eighty"), ("LOG_FORMAT", "xml"), ("LEDGER_POOL_MAX_SIZE", "1.5")],
)
def test_a_bad_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    """The error says which variable and what it held, not a msgspec path."""
    with pytest.raises(SettingsError, match=variable) as caught:
        load_settings({variable: value})
    assert repr(value) in str(caught.value)


def test_every_setting_has_exactly_one_variable() -> None:
    """A setting added to Settings without a variable would silently ignore the environment."""
    assert set(ENVIRONMENT) == set(Settings.__struct_fields__)
    assert len(set(ENVIRONMENT.values())) == len(ENVIRONMENT)


@pytest.mark.parametrize(
    ("environ", "distributed", "slots"),
    [
        ({}, False, 10),  # the pool's size
        ({"LEDGER_POOL_MAX_SIZE": "4"}, False, 4),
        ({"LEDGER_DECISION_SLOTS": "3"}, False, 3),
        ({"LEDGER_DECISION_SLOTS": "0"}, False, None),  # every batch alone
        ({"LEDGER_DECISION_SLOTS": "3"}, True, None),  # never on Citus
    ],
)
def testdecision_slots(environ: dict[str, str], distributed: bool, slots: int | None) -> None:
    """How many decision calls a process runs before waiting homes share one."""
    assert decision_slots(load_settings(environ), distributed) == slots


def test_negativedecision_slots_are_refused() -> None:
    with pytest.raises(SettingsError, match="LEDGER_DECISION_SLOTS"):
        load_settings({"LEDGER_DECISION_SLOTS": "-1"})
