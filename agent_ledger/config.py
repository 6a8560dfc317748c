"""Typed settings, built from the environment by one function and passed around explicitly.

Each setting is declared once: its type and default on ``Settings``, its environment variable in
``ENVIRONMENT``. ``load_settings`` converts what the environment holds with msgspec, so a value
of the wrong type is refused with the variable's name instead of failing later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

__all__ = ["ENVIRONMENT", "Settings", "SettingsError", "cors_origins", "load_settings"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    # None: the nearest .agent-ledger in the current directory or a parent (embedded.py).
    data_dir: str | None = None
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
    # Origins allowed to call the API from a browser, comma-separated; empty: CORS is off.
    cors_origins: str = ""
    # Proxies whose X-Forwarded-For and -Proto headers are believed (uvicorn's option).
    forwarded_allow_ips: str = "127.0.0.1"
    allow_unsafe_durability: bool = False
    rate_limit_per_key: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Every request is answered within this (a 503 when the database does not answer in time).
    request_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    # ...except a verify (GET /v1/ledger/verify, .../checkpoints/{id}/verify), which hashes every
    # entry and answers only at the end: on a large ledger that takes minutes, not seconds.
    verify_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 3600.0
    # Webhooks may call loopback and private addresses (a receiver on this machine or network).
    webhook_allow_private: bool = False
    # Whether this process sends webhook deliveries (off: an API-only process; others deliver).
    webhook_deliveries: bool = True
    # How often each process looks for deliveries due; the first retry comes 1 s after a failure.
    webhook_poll_seconds: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # Connect, write and read timeout of one delivery attempt.
    webhook_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    # How long a dashboard sign-in lasts (it also ends at logout and when its key is revoked).
    dashboard_session_seconds: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 8 * 3600
    # GET /metrics: off with false; behind this bearer token when set, else open.
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # Traces go to this OTLP/HTTP endpoint; unset: no tracing at all.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "agent-ledger"
    # How many levels of child agents below a top-level agent delegation allows (issue 17).
    max_delegation_depth: Annotated[int, msgspec.Meta(ge=1, le=16)] = 3
    # Decision calls one process runs at once; when all are busy, waiting homes' batches share
    # the next call (group commit across homes). None: the pool's size; 0: every batch alone.
    decision_slots: Annotated[int, msgspec.Meta(ge=0)] | None = None


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
    "cors_origins": "LEDGER_CORS_ORIGINS",
    "forwarded_allow_ips": "LEDGER_FORWARDED_ALLOW_IPS",
    "allow_unsafe_durability": "LEDGER_ALLOW_UNSAFE_DURABILITY",
    "rate_limit_per_key": "LEDGER_RATE_LIMIT_PER_KEY",
    "request_timeout_seconds": "LEDGER_REQUEST_TIMEOUT_SECONDS",
    "verify_timeout_seconds": "LEDGER_VERIFY_TIMEOUT_SECONDS",
    "webhook_allow_private": "LEDGER_WEBHOOK_ALLOW_PRIVATE",
    "webhook_deliveries": "LEDGER_WEBHOOK_DELIVERIES",
    "webhook_poll_seconds": "LEDGER_WEBHOOK_POLL_SECONDS",
    "webhook_timeout_seconds": "LEDGER_WEBHOOK_TIMEOUT_SECONDS",
    "dashboard_session_seconds": "LEDGER_DASHBOARD_SESSION_SECONDS",
    "metrics_enabled": "LEDGER_METRICS_ENABLED",
    "metrics_token": "LEDGER_METRICS_TOKEN",
    # The OpenTelemetry SDK's own names, so the usual deployment recipes work unchanged.
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "max_delegation_depth": "LEDGER_MAX_DELEGATION_DEPTH",
    "decision_slots": "LEDGER_DECISION_SLOTS",
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
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, values)) from None
    cors_origins(settings)  # refused now, naming the variable, rather than never matching later
    return settings


# An origin as a browser sends it: scheme://host[:port], no path, no trailing slash. A '*' may
# stand for any part (Litestar's CORSConfig matches it as a wildcard), or for every origin.
_ORIGIN = re.compile(r"^(\*|https?://[^/\s]+)$")


def cors_origins(settings: Settings) -> list[str]:
    """The origins in LEDGER_CORS_ORIGINS (comma-separated); empty when CORS is off."""
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise SettingsError(
                f"LEDGER_CORS_ORIGINS holds {origin!r}, which is not an origin: write it as a "
                "browser sends it, scheme://host[:port] with no path or trailing slash"
            )
    return origins


def _explain(exc: msgspec.ValidationError, values: Mapping[str, str]) -> str:
    message = str(exc)
    field = message.rpartition("$.")[2].strip("`") if "$." in message else None
    if field in ENVIRONMENT:
        reason = message.partition(" - at ")[0]
        return f"{ENVIRONMENT[field]}={values.get(field)!r} is not valid: {reason}"
    return message
