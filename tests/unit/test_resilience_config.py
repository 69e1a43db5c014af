"""``retry`` and ``breaker`` tables: defaults from DESIGN §5, strict validation."""

from __future__ import annotations

import pytest

from dbgateway_server.config import ConfigError, parse_config


def parse(extra: str = ""):
    import tomllib

    raw = tomllib.loads(f'[databases.orders]\ndsn = "postgresql://app@127.0.0.1/orders"\n{extra}')
    return parse_config(raw, env={}, source="test.toml").databases["orders"]


def test_defaults_follow_the_design():
    db = parse()
    assert (db.retry.max_attempts, db.retry.initial_backoff, db.retry.max_backoff) == (3, 0.05, 1.0)
    b = db.breaker
    assert (b.failure_threshold, b.open_time, b.max_open_time, b.half_open_probes) == (5, 5, 60, 1)


def test_breaker_and_retry_tables_are_read():
    db = parse(
        "breaker = { failure_threshold = 2, open_time = 1, max_open_time = 4 }\n"
        "retry = { max_attempts = 5, initial_backoff = 0.01 }"
    )
    assert db.breaker.failure_threshold == 2
    assert db.breaker.open_time == 1.0
    assert db.retry.max_attempts == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "breaker = { failure_treshold = 2 }",
            "databases.orders.breaker.failure_treshold: unknown key",
        ),
        ("breaker = { open_time = 0 }", "databases.orders.breaker.open_time: must be a positive"),
        (
            "breaker = { open_time = 10, max_open_time = 5 }",
            "databases.orders.breaker.max_open_time: must be at least open_time",
        ),
        (
            "breaker = { failure_rate = 1.5 }",
            "databases.orders.breaker.failure_rate: must be a fraction",
        ),
        (
            "breaker = { failure_threshold = 'x' }",
            "databases.orders.breaker.failure_threshold: must be an integer",
        ),
        ("breaker = 3", "databases.orders.breaker: must be a table"),
        ("retry = { max_attempts = 0 }", "databases.orders.retry.max_attempts: must be >= 1"),
        (
            "retry = { initial_backoff = 2, max_backoff = 1 }",
            "databases.orders.retry.max_backoff: must be at least initial_backoff",
        ),
    ],
)
def test_bad_values_name_the_key(extra, message):
    with pytest.raises(ConfigError) as info:
        parse(extra)
    assert message in str(info.value)
