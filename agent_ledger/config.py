"""Typed settings, built from the environment by one function and passed around explicitly.

Each setting is declared once: its type and default on ``Settings``, its environment variable in
``ENVIRONMENT``. ``load_settings`` converts what the environment holds with msgspec, so a value
of the wrong type is refused with the variable's name instead of failing later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import msgspec

__all__ = ["ENVIRONMENT", "Settings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    data_dir: str = ".agent-ledger"
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: Literal["json", "console", "auto"] = "auto"  # auto: console on a terminal
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    key_pepper: str = ""
    pool_min_size: int = 2
    pool_max_size: int = 10
    max_body_bytes: int = 64 * 1024
    last_used_flush_seconds: float = 30.0
    sweep_interval_seconds: float = 1.0
    application_name: str = "agent-ledger"
    checkpoint_interval_seconds: float = 3600.0
    auth_events_per_ip_per_minute: int = 10
    auth_events_per_minute: int = 100


# The environment variable behind each setting.
ENVIRONMENT: Mapping[str, str] = {
    "database_url": "DATABASE_URL",
    "data_dir": "LEDGER_DATA_DIR",
    "host": "LEDGER_HOST",
    "port": "LEDGER_PORT",
    "log_format": "LOG_FORMAT",
    "log_level": "LOG_LEVEL",
    "key_pepper": "LEDGER_KEY_PEPPER",
    "pool_min_size": "LEDGER_POOL_MIN_SIZE",
    "pool_max_size": "LEDGER_POOL_MAX_SIZE",
    "max_body_bytes": "LEDGER_MAX_BODY_BYTES",
    "last_used_flush_seconds": "LEDGER_LAST_USED_FLUSH_SECONDS",
    "sweep_interval_seconds": "LEDGER_SWEEP_INTERVAL_SECONDS",
    "application_name": "LEDGER_APPLICATION_NAME",
    "checkpoint_interval_seconds": "LEDGER_CHECKPOINT_INTERVAL_SECONDS",
    "auth_events_per_ip_per_minute": "LEDGER_AUTH_EVENTS_PER_IP_PER_MINUTE",
    "auth_events_per_minute": "LEDGER_AUTH_EVENTS_PER_MINUTE",
}

# Case-insensitive settings, normalised before conversion.
_LOWER = {"log_format"}
_UPPER = {"log_level"}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment).

    An unset or empty variable leaves the default in place.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for field, variable in ENVIRONMENT.items():
        raw = env.get(variable)
        if raw is None or raw == "":
            continue
        if field in _LOWER:
            raw = raw.lower()
        elif field in _UPPER:
            raw = raw.upper()
        values[field] = raw
    try:
        # strict=False lets msgspec read "8000" as an int and "1.5" as a float.
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, values)) from None


def _explain(exc: msgspec.ValidationError, values: Mapping[str, str]) -> str:
    message = str(exc)
    field = message.rpartition("$.")[2].strip("`") if "$." in message else None
    if field in ENVIRONMENT:
        reason = message.partition(" - at ")[0]
        return f"{ENVIRONMENT[field]}={values.get(field)!r} is not valid: {reason}"
    return message
