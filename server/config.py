"""Settings: one frozen object, resolved once from the environment.

Every value has a preset per environment (``dev``, ``test``, ``prod``) and an
environment variable that overrides it. Nothing else in the server reads the
environment: the settings object is passed explicitly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ConfigError", "PoolSettings", "Settings", "load_settings"]

ENV_PREFIX = "BOOKING_"
DEV_PAGE_TOKEN_SECRET = b"booking-dev-page-token-secret"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and
    what it expects, in one line (the CLI prints it and exits 2)."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool of the one AsyncEngine (SQLAlchemy QueuePool over asyncpg)."""

    size: int = 10
    max_overflow: int = 10
    # Seconds a call waits for a free connection before UNAVAILABLE + RetryInfo.
    timeout_s: float = 5.0
    # Connections older than this are replaced (seconds; -1 = never).
    recycle_s: int = 1800
    # Ping a connection on checkout. Costs a round trip per RPC; lost
    # connections are detected and replaced on error anyway, so prod leaves it
    # on only where a proxy silently drops idle connections.
    pre_ping: bool = False
    # Server-side cap for any statement (ms); a call's gRPC deadline lowers it.
    statement_timeout_ms: int = 30_000
    connect_timeout_s: float = 5.0
    application_name: str = "booking-data"


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str = "dev"
    # postgresql://... ; None = start the embedded PostgreSQL.
    database_url: str | None = None
    # Data directory of the embedded PostgreSQL (created when absent).
    embedded_data_dir: Path = field(
        default_factory=lambda: Path.home() / ".local" / "share" / "booking-data" / "pgdata"
    )
    host: str = "127.0.0.1"
    port: int = 50051
    # Server processes sharing the port (SO_REUSEPORT): one Python process
    # serves about one core's worth of calls.
    workers: int = 1
    # Bind the port with SO_REUSEPORT. Only the workers of one `serve --workers`
    # unit set it (the CLI does): a second server on a taken port must fail
    # instead of silently splitting the callers between two databases.
    reuse_port: bool = False
    pool: PoolSettings = field(default_factory=PoolSettings)
    # Run `alembic upgrade head` at start-up.
    migrate_on_start: bool = True
    # Seconds in-flight RPCs get to finish on SIGTERM/SIGINT.
    shutdown_grace_s: float = 10.0
    # Seconds between database health probes.
    health_interval_s: float = 2.0
    # Seconds a request_id's first result is kept for retries (AIP-155); older
    # ones are purged every purge_interval_s, after which a retry writes anew.
    request_id_retention_s: float = 86_400.0
    purge_interval_s: float = 600.0
    # Key that signs page tokens. Set it in prod (same value on every replica)
    # or tokens are rejected by the other replicas and after a restart.
    page_token_secret: bytes = DEV_PAGE_TOKEN_SECRET
    default_page_size: int = 50
    max_page_size: int = 1000
    # Page-number mode: page * page_size may not exceed this (OFFSET cost).
    max_offset: int = 100_000
    # COUNT_MODE_EXACT counts at most this many rows.
    exact_count_cap: int = 10_000
    log_level: str = "INFO"
    log_json: bool = False
    # Export traces and metrics to the console (OpenTelemetry SDK).
    otel_console: bool = False
    migrations_dir: Path = field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "alembic"
    )


_PRESETS: dict[str, dict[str, object]] = {
    "dev": {},
    "test": {
        "pool": PoolSettings(size=5, max_overflow=5, timeout_s=2.0, statement_timeout_ms=15_000),
        "shutdown_grace_s": 2.0,
        "health_interval_s": 0.2,
    },
    "prod": {
        "host": "0.0.0.0",
        "pool": PoolSettings(size=20, max_overflow=20, timeout_s=3.0, pre_ping=True),
        "shutdown_grace_s": 20.0,
        "log_json": True,
    },
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: expected a boolean (true/false), got {raw!r}")


def _parse_number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(raw.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}: expected {noun}, got {raw!r}") from None


def _convert(name: str, raw: str, kind: object) -> object:
    if kind in (bool, "bool"):
        return _parse_bool(name, raw)
    if kind in (int, "int"):
        return _parse_number(name, raw, int)
    if kind in (float, "float"):
        return _parse_number(name, raw, float)
    if kind in (bytes, "bytes"):
        return raw.encode()
    if kind in ("Path",):
        return Path(raw).expanduser()
    if kind in ("str | None",):
        return raw or None
    return raw


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Resolve settings: preset of BOOKING_ENV, then BOOKING_* variables, then overrides.

    Pool values use ``BOOKING_POOL_<FIELD>`` (e.g. ``BOOKING_POOL_SIZE``).
    """
    env = os.environ if env is None else env
    environment = env.get(f"{ENV_PREFIX}ENV", "dev")
    if environment not in _PRESETS:
        raise ConfigError(f"{ENV_PREFIX}ENV must be one of {sorted(_PRESETS)}, got {environment!r}")
    values: dict[str, object] = {"environment": environment, **_PRESETS[environment]}
    pool = values.get("pool", PoolSettings())
    assert isinstance(pool, PoolSettings)
    pool_values: dict[str, object] = {}
    for f in dataclasses.fields(PoolSettings):
        raw = env.get(f"{ENV_PREFIX}POOL_{f.name.upper()}")
        if raw is not None:
            pool_values[f.name] = _convert(f"{ENV_PREFIX}POOL_{f.name.upper()}", raw, f.type)
    values["pool"] = dataclasses.replace(pool, **pool_values)  # type: ignore[arg-type]
    for f in dataclasses.fields(Settings):
        if f.name in ("pool", "environment", "reuse_port"):
            continue  # reuse_port: set by the CLI for --workers only, not from the environment
        raw = env.get(f"{ENV_PREFIX}{f.name.upper()}")
        if raw is not None:
            values[f.name] = _convert(f"{ENV_PREFIX}{f.name.upper()}", raw, f.type)
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.environment == "prod" and not settings.database_url:
        raise ConfigError(
            f"{ENV_PREFIX}DATABASE_URL must be set in prod (no embedded database there); "
            f"set it, or use {ENV_PREFIX}ENV=dev for the embedded PostgreSQL"
        )
    if settings.environment == "prod" and settings.page_token_secret == DEV_PAGE_TOKEN_SECRET:
        raise ConfigError(f"{ENV_PREFIX}PAGE_TOKEN_SECRET must be set in prod")
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"{ENV_PREFIX}PORT/--port: expected 0-65535, got {settings.port}")
    if settings.workers < 1:
        raise ConfigError(
            f"{ENV_PREFIX}WORKERS/--workers: expected 1 or more, got {settings.workers}"
        )
    if str(settings.log_level).upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"{ENV_PREFIX}LOG_LEVEL: expected one of {', '.join(_LOG_LEVELS)}, "
            f"got {settings.log_level!r}"
        )
