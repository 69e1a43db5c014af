from __future__ import annotations

from pathlib import Path

import pytest

from dbgateway_server.config import (
    Config,
    ConfigError,
    Engine,
    load_config,
    parse_config,
    redact_dsn,
    sqlite_path,
)


def parse(text: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> Config:
    import tomllib

    return parse_config(
        tomllib.loads(text), env=env or {}, source=str((tmp or Path(".")) / "x.toml")
    )


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return str(info.value)


def test_design_example_parses_with_engines_from_the_scheme():
    config = parse(
        """
        [server]
        listen = "127.0.0.1:50051"
        [databases.orders]
        dsn = "postgresql://app@127.0.0.1:5432/orders"
        pool = { min_size = 2, max_size = 20 }
        [databases.legacy]
        dsn = "mysql://app:${LEGACY_PASSWORD}@127.0.0.1:3306/legacy"
        [databases.cache]
        dsn = "sqlite:///var/lib/dbgateway/cache.sqlite3"
        """,
        env={"LEGACY_PASSWORD": "s3cret"},
    )
    assert config.server.listen == "127.0.0.1:50051"
    assert {n: d.engine for n, d in config.databases.items()} == {
        "orders": Engine.POSTGRES,
        "legacy": Engine.MYSQL,
        "cache": Engine.SQLITE,
    }
    assert config.databases["orders"].pool.min_size == 2
    assert config.databases["orders"].pool.max_size == 20
    assert config.databases["legacy"].dsn == "mysql://app:s3cret@127.0.0.1:3306/legacy"
    assert config.databases["legacy"].redacted_dsn == "mysql://app:***@127.0.0.1:3306/legacy"
    assert config.databases["cache"].pool.max_size == 10  # DESIGN default


def test_defaults_follow_the_design():
    db = parse('[databases.a]\ndsn = "sqlite:a.db"').databases["a"]
    assert (db.pool.min_size, db.pool.max_size, db.pool.acquire_timeout) == (1, 10, 5.0)
    assert db.pool.max_waiting == 1024
    assert db.statement_timeout == 30.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[databases.a]\ndsn = 'sqlite:a.db'\npool = { max_size = 0 }",
            "databases.a.pool.max_size: must be >= 1, got 0",
        ),
        (
            "[databases.a]\ndsn = 'sqlite:a.db'\npool = { min_size = 5, max_size = 2 }",
            "databases.a.pool.max_size: must be at least min_size (5), got 2",
        ),
        (
            "[databases.a]\ndsn = 'sqlite:a.db'\npool = { max_size = 'ten' }",
            "databases.a.pool.max_size: must be an integer, got 'ten'",
        ),
        (
            "[databases.a]\ndsn = 'sqlite:a.db'\npool = { max_sise = 3 }",
            "databases.a.pool.max_sise: unknown key",
        ),
        ("[databases.a]\ndsn = 'oracle://x'", "databases.a.dsn: unknown scheme 'oracle'"),
        ("[databases.a]\npool = {}", "databases.a.dsn: is required"),
        ("[databases.a]\ndsn = 'postgresql://u@h:99999/x'", "databases.a.dsn: Port out of range"),
        (
            "[databases.a]\ndsn = 'mysql://u:${NOPE}@h/x'",
            "databases.a.dsn: environment variable NOPE is not set",
        ),
        (
            "[databases.a]\ndsn = 'sqlite:a.db'\nstatement_timeout = -1",
            "databases.a.statement_timeout: must be positive",
        ),
        (
            "[server]\nlisten = 'nowhere'\n[databases.a]\ndsn = 'sqlite:a.db'",
            "server.listen: must be HOST:PORT",
        ),
        ("[server]\nlisen = ':1'\n[databases.a]\ndsn = 'sqlite:a.db'", "server.lisen: unknown key"),
        (
            "[server]\nsubscription_queue = 0\n[databases.a]\ndsn = 'sqlite:a.db'",
            "server.subscription_queue: must be at least 1, got 0",
        ),
        ("[databases]", "databases: at least one database must be configured"),
        (
            "[databases.'bad name!']\ndsn = 'sqlite:a.db'",
            "databases.bad name!: database names use letters",
        ),
    ],
)
def test_a_bad_file_names_the_key_and_the_problem(text, expected):
    message = error_of(text)
    assert expected in message
    assert "\n" not in message


def test_password_file_is_read_and_never_needs_the_command_line(tmp_path):
    (tmp_path / "pw").write_text("p@ss:word\n")
    path = tmp_path / "gw.toml"
    path.write_text("[databases.a]\ndsn = 'postgresql://app@db:5432/x'\npassword_file = 'pw'\n")
    db = load_config(path, env={}).databases["a"]
    assert db.dsn == "postgresql://app:p%40ss%3Aword@db:5432/x"
    assert "p@ss" not in db.redacted_dsn


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_reported(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[databases\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("dsn", "path"),
    [
        ("sqlite:///var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:////var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:data/x.db", "data/x.db"),
        ("sqlite::memory:", ":memory:"),
    ],
)
def test_sqlite_dsn_forms(dsn, path):
    assert sqlite_path(dsn) == path


def test_redaction_leaves_passwordless_dsns_alone():
    assert redact_dsn("postgresql://app@h/x") == "postgresql://app@h/x"


def test_zero_setup_default_is_one_sqlite_database_in_the_working_directory(tmp_path):
    config = Config.default(tmp_path)
    assert list(config.databases) == ["default"]
    db = config.databases["default"]
    assert db.engine is Engine.SQLITE
    assert sqlite_path(db.dsn) == str(tmp_path / "dbgateway.sqlite3")
    assert config.server.listen == "127.0.0.1:50051"
