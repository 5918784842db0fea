"""Settings: every knob read once, from the environment or ``.env``, with pydantic-settings.

``LEDGER_DATABASE_URL`` picks the store: ``postgresql://user@host:5432/db`` or
``sqlite:///path/to/file``; unset means the embedded SQLite default. Bad values fail at
start with a :class:`~ledger.errors.ConfigurationError` that names the setting; secrets
are ``SecretStr`` so they never show in reprs, logs or errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.errors import ConfigurationError

__all__ = [
    "PostgresStore",
    "SQLiteStore",
    "Settings",
    "StoreConfig",
    "load_settings",
    "parse_database_url",
]

DEFAULT_DATABASE_URL = "sqlite:///.slotledger/ledger.db"


@dataclass(frozen=True)
class SQLiteStore:
    """The embedded store: the ledger's file, and a sibling file for the read models
    (the library's SQLite tables have fixed names, so each consumer needs its own file)."""

    path: str

    @property
    def views_path(self) -> str:
        return self.sibling("views")

    def sibling(self, purpose: str) -> str:
        """A file beside the ledger's, e.g. ``ledger.views.db`` for the read models."""
        if self.path == ":memory:":
            return ":memory:"
        p = Path(self.path)
        return str(p.with_name(f"{p.stem}.{purpose}{p.suffix or '.db'}"))

    def redacted(self) -> str:
        return f"sqlite:///{self.path}"


@dataclass(frozen=True)
class PostgresStore:
    host: str
    port: int
    dbname: str
    user: str
    password: str
    schema: str = "public"

    def redacted(self) -> str:
        auth = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"postgresql://{auth}{self.host}:{self.port}/{self.dbname}?schema={self.schema}"

    def conninfo(self) -> str:
        """A libpq connection string, for our own connections beside the library's pool."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password or None,
        )


StoreConfig = SQLiteStore | PostgresStore


def parse_database_url(url: str) -> StoreConfig:
    """Parse ``LEDGER_DATABASE_URL``; the error names the problem but never the password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        msg = f"LEDGER_DATABASE_URL is malformed: {e}"
        raise ConfigurationError(msg) from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if parts.netloc or not path:
            msg = "LEDGER_DATABASE_URL for SQLite must look like sqlite:///path/to/file.db"
            raise ConfigurationError(msg)
        return SQLiteStore(path=path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname:
            msg = (
                "LEDGER_DATABASE_URL for PostgreSQL must look like "
                "postgresql://user@host:5432/dbname"
            )
            raise ConfigurationError(msg)
        query = parse_qs(parts.query)
        schema = query.get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum():
            msg = f"LEDGER_DATABASE_URL schema {schema!r} must be letters, digits and _"
            raise ConfigurationError(msg)
        return PostgresStore(
            host=parts.hostname,
            port=port or 5432,
            dbname=dbname,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            schema=schema,
        )
    shown = scheme or "(none)"
    msg = f"LEDGER_DATABASE_URL scheme {shown!r} is not supported: use postgresql:// or sqlite:///"
    raise ConfigurationError(msg)


Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Settings(BaseSettings):
    """All settings; environment variables are ``LEDGER_<NAME>`` (README lists them)."""

    model_config = SettingsConfigDict(
        env_prefix="LEDGER_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    pool_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")] = "default"
    default_platform: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")] = "bot"
    slot_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")] = "pool"
    max_pool_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    acquire_attempts: Annotated[int, Field(ge=1, le=1000)] = 32
    postgres_pool_size: Annotated[int, Field(ge=1, le=100)] = 2
    postgres_max_overflow: Annotated[int, Field(ge=0, le=100)] = 8
    coolify_url: str = "http://127.0.0.1:8765/api/v1"
    coolify_token: SecretStr = SecretStr("")
    coolify_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    coolify_project_uuid: str = ""
    coolify_server_uuid: str = ""
    coolify_environment_name: str = "production"
    coolify_requests_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 150
    """Coolify's default limit is 200 per minute per token. On PostgreSQL every process of
    the store draws from this one budget; on SQLite the one process does."""
    coolify_probe_interval_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    drift_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    drift_grace_s: Annotated[float, Field(ge=0, le=86_400)] = 120.0
    """How long a drift must stay seen before it is recorded and acted on."""
    slot_image: str = "ghcr.io/example/meeting-bot"
    slot_image_tag: str = "latest"
    max_concurrent_deployments: Annotated[int, Field(ge=1, le=100)] = 4
    api_token: SecretStr = SecretStr("")
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Open ``/v1/stream`` connections a server keeps; more are answered 503."""
    deploying_timeout_s: Annotated[
        float,
        Field(
            ge=10,
            le=86_400,
            validation_alias=AliasChoices("LEDGER_DEPLOYING_TIMEOUT", "DEPLOYING_TIMEOUT"),
        ),
    ] = 300.0
    recovery_interval_s: Annotated[
        float,
        Field(
            ge=1,
            le=86_400,
            validation_alias=AliasChoices("LEDGER_RECOVERY_INTERVAL", "RECOVERY_INTERVAL"),
        ),
    ] = 300.0
    recovery_max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    retire_mode: Annotated[
        Literal["delete", "quarantine"],
        Field(validation_alias=AliasChoices("LEDGER_RETIRE_MODE", "RETIRE_MODE")),
    ] = "delete"
    policy_tick_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    invariant_queue_wait_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    """The always-on checker: how long a queue may wait while a slot it could take is idle."""
    invariant_deploying_grace_s: Annotated[float | None, Field(gt=0, le=86_400)] = None
    """How late past ``DEPLOYING_TIMEOUT`` the stale-deploying policy's decision may come
    before the checker records a slot stuck deploying; unset: two policy ticks."""
    invariant_checkpoint_events: Annotated[int, Field(ge=100, le=10_000_000)] = 10_000
    """How many events the checker reads between two checkpoints of its state (what a
    restarted worker reads again, at most)."""
    queue_timeout_s: Annotated[float, Field(gt=0, le=600)] = 300.0
    poll_initial_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """The deploy flow's first pause between two polls of Coolify; each next one is
    half again as long, up to ``poll_max_s``, every one off by up to 20 %."""
    poll_max_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    """The longest pause between two polls: the origin system polls every 15 s ± 20 %."""
    status_lag_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """How late Coolify's status may be: its status sweep runs about once a minute."""
    exited_grace_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """How long after its deployment finished a container may take to be seen running.
    Until Coolify's status sweep (about once a minute, ``status_lag_s``) looks, the app
    shows the bare ``running`` its deployment job wrote; two sweep periods let one sweep
    be late or skipped before a slot fails."""
    stop_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 180.0
    """How long a release waits for Coolify to report its container gone (cancel, the
    queued stop job, the container's stop grace period) before the slot fails."""
    deploy_retries: Annotated[int, Field(ge=0, le=10)] = 1
    """How many times a bot's request is tried again on another slot after its deploy
    failed (there, or at the head of the queue)."""
    start_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """How long ``serve`` keeps retrying its start while the store is unavailable."""

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        parse_database_url(value)
        return value

    @property
    def store(self) -> StoreConfig:
        return parse_database_url(self.database_url)


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning validation errors into one clear ConfigurationError: each
    problem once, after the variable the user set (its code, ``bad_configuration``, says
    the rest)."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(f"{_variable(err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(problems) from None


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error's location: of the names a
    setting answers to (``LEDGER_DEPLOYING_TIMEOUT``, ``DEPLOYING_TIMEOUT``), the first one
    set in the environment or ``.env``, as pydantic-settings reads them (pydantic names
    the first alias, whichever was set); ``LEDGER_<NAME>`` when none is."""
    import os

    from dotenv import dotenv_values

    head = str(loc[0]).upper() if loc else ""
    names = [head if head.startswith("LEDGER_") else f"LEDGER_{head}"]
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else []
        spelled = [c.upper() for c in choices if isinstance(c, str)] or [f"LEDGER_{name.upper()}"]
        if head == name.upper() or head in spelled:
            names = spelled
            break
    env_file = Settings.model_config.get("env_file")
    dotenv = (
        dotenv_values(env_file) if isinstance(env_file, str) and Path(env_file).is_file() else {}
    )
    given = {key.upper() for key in (*os.environ, *dotenv)}
    return next((n for n in names if n in given), names[0])
