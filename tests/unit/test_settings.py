"""Settings: the store is chosen by one URL; bad values fail clearly, secrets stay hidden."""

from __future__ import annotations

import pytest

from ledger.errors import ConfigurationError
from ledger.settings import PostgresStore, SQLiteStore, load_settings, parse_database_url


def test_default_is_the_embedded_sqlite_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    store = load_settings(_env_file=None).store
    assert isinstance(store, SQLiteStore)
    assert store.views_path.endswith("ledger.views.db")


def test_environment_picks_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://app:s3cret@db.local:6543/ledger")
    store = load_settings().store
    assert store == PostgresStore("db.local", 6543, "ledger", "app", "s3cret", "public")
    assert "s3cret" not in store.redacted()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "scheme 'mysql' is not supported"),
        ("postgresql://user@/db", "must look like postgresql://"),
        ("postgresql://user@host:5432/", "must look like postgresql://"),
        ("postgresql://user@host:notaport/db", "malformed"),
        ("sqlite://", "must look like sqlite:///"),
        ("nonsense", "scheme '(none)'"),
        ("postgresql://u@h/db?schema=x;drop", "schema"),
    ],
)
def test_malformed_database_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_DATABASE_URL") as info:
        parse_database_url(url)
    assert message in str(info.value)


def test_password_never_appears_in_url_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_database_url("postgresql://u:hunter2@h:99999/db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"max_pool_size": 0}, "LEDGER_MAX_POOL_SIZE"),
        ({"max_pool_size": 10**6}, "LEDGER_MAX_POOL_SIZE"),
        ({"pool_name": "Bad Name"}, "LEDGER_POOL_NAME"),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings(**overrides)


def test_tokens_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_COOLIFY_TOKEN", "tok-abc")
    monkeypatch.setenv("LEDGER_API_TOKEN", "api-xyz")
    settings = load_settings()
    assert settings.coolify_token.get_secret_value() == "tok-abc"
    assert "tok-abc" not in repr(settings) and "api-xyz" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEPLOYING_TIMEOUT", "-5"),
        ("LEDGER_DEPLOYING_TIMEOUT", "100000000"),
        ("RECOVERY_INTERVAL", "0"),
        ("RETIRE_MODE", "shred"),
        ("LEDGER_MAX_CONCURRENT_DEPLOYMENTS", "0"),
    ],
)
def test_absurd_policy_settings_are_rejected_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"^{variable}: "):
        load_settings()


def test_policy_settings_accept_the_issue_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYING_TIMEOUT", "900")
    monkeypatch.setenv("RETIRE_MODE", "quarantine")
    settings = load_settings()
    assert (settings.deploying_timeout_s, settings.retire_mode) == (900.0, "quarantine")
