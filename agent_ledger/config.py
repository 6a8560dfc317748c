"""Typed settings, built from the environment by one function and passed around explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

__all__ = ["Settings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    data_dir: str = ".agent-ledger"
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "auto"  # json | console | auto (console on a terminal)
    log_level: str = "INFO"
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


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    log_format = env.get("LOG_FORMAT", "auto").lower()
    if log_format not in {"json", "console", "auto"}:
        raise SettingsError(f"LOG_FORMAT must be json, console or auto, got {log_format!r}")
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        data_dir=env.get("LEDGER_DATA_DIR") or ".agent-ledger",
        host=env.get("LEDGER_HOST") or "127.0.0.1",
        port=_int(env, "LEDGER_PORT", 8000),
        log_format=log_format,
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        key_pepper=env.get("LEDGER_KEY_PEPPER", ""),
        pool_min_size=_int(env, "LEDGER_POOL_MIN_SIZE", 2),
        pool_max_size=_int(env, "LEDGER_POOL_MAX_SIZE", 10),
        max_body_bytes=_int(env, "LEDGER_MAX_BODY_BYTES", 64 * 1024),
        last_used_flush_seconds=_float(env, "LEDGER_LAST_USED_FLUSH_SECONDS", 30.0),
        sweep_interval_seconds=_float(env, "LEDGER_SWEEP_INTERVAL_SECONDS", 1.0),
        application_name=env.get("LEDGER_APPLICATION_NAME") or "agent-ledger",
        checkpoint_interval_seconds=_float(env, "LEDGER_CHECKPOINT_INTERVAL_SECONDS", 3600.0),
        auth_events_per_ip_per_minute=_int(env, "LEDGER_AUTH_EVENTS_PER_IP_PER_MINUTE", 10),
        auth_events_per_minute=_int(env, "LEDGER_AUTH_EVENTS_PER_MINUTE", 100),
    )
