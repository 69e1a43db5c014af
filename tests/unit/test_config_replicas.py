"""Configuration of read replicas, and durations written with units."""

from __future__ import annotations

import pytest

from dbgateway_server.config import PoolSettings, ReadPreference, parse_duration
from tests.unit.test_config import error_of, parse

PRIMARY = 'dsn = "postgresql://app:pw@primary:5432/orders"'


def test_design_example_configures_replicas_with_their_defaults():
    config = parse(
        f"""
        [databases.orders]
        {PRIMARY}
        replicas = ["postgresql://app:pw@replica-1:5432/orders",
                    "postgresql://app@replica-2:5433/orders"]
        read_preference = "primary"
        max_replica_lag = "10s"
        pool = {{ max_size = 20 }}
        """
    )
    db = config.databases["orders"]
    assert db.replicas == (
        "postgresql://app:pw@replica-1:5432/orders",
        "postgresql://app@replica-2:5433/orders",
    )
    assert db.read_preference is ReadPreference.PRIMARY
    assert db.max_replica_lag == 10.0
    assert db.replica_wait == 0.1
    replica = db.replica(1)
    assert (replica.dsn, replica.address, replica.replicas) == (
        db.replicas[1],
        "replica-2:5433",
        (),
    )
    assert replica.pool.max_size == 20  # replica_pool defaults to pool
    assert replica.statement_timeout == db.statement_timeout
    assert db.address == "primary:5432"  # never the credentials


def test_replica_pool_and_read_preference_apply_to_every_replica():
    config = parse(
        f"""
        [databases.orders]
        {PRIMARY}
        replicas = ["postgresql://app@replica-1:5432/orders"]
        read_preference = "replica_preferred"
        replica_pool = {{ min_size = 0, max_size = 4 }}
        replica_wait = "250ms"
        """
    )
    db = config.databases["orders"]
    assert db.read_preference is ReadPreference.REPLICA_PREFERRED
    assert db.replica(0).pool == PoolSettings(min_size=0, max_size=4)
    assert db.pool == PoolSettings()
    assert db.replica_wait == 0.25


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(2, 2.0), (0.5, 0.5), ('"250ms"', 0.25), ('"2s"', 2.0), ('"5m"', 300.0), ('"1.5s"', 1.5)],
)
def test_every_duration_key_takes_seconds_or_a_unit(value, seconds):
    config = parse(
        f"""
        [server]
        shutdown_grace = {value}
        [databases.orders]
        {PRIMARY}
        statement_timeout = {value}
        pool = {{ acquire_timeout = {value} }}
        breaker = {{ open_time = {value}, max_open_time = "10m" }}
        """
    )
    db = config.databases["orders"]
    assert config.server.shutdown_grace == seconds
    assert db.statement_timeout == seconds
    assert db.pool.acquire_timeout == seconds
    assert db.breaker.open_time == seconds
    assert db.breaker.max_open_time == 600.0


def test_parse_duration_refuses_what_is_not_a_duration():
    for value in ("10", "5 days", "ms", "-1s", True, None, [1]):
        assert parse_duration(value) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'replicas = "postgresql://app@r:5432/orders"',
            "databases.orders.replicas: must be an array of DSN strings",
        ),
        ("replicas = [1]", "databases.orders.replicas[0]: must be a non-empty DSN string"),
        (
            'replicas = ["mysql://app@r:3306/orders"]',
            "databases.orders.replicas[0]: must be the same engine as the dsn (postgresql), "
            "got mysql",
        ),
        (
            'replicas = ["sqlite:///tmp/x.db"]',
            "databases.orders.replicas[0]: SQLite has no replicas",
        ),
        (
            'replicas = ["postgresql://app@r:99999/orders"]',
            "databases.orders.replicas[0]: Port out of range",
        ),
        (
            'replicas = ["postgresql://r:1/a", "postgresql://r:1/a"]',
            "databases.orders.replicas[1]: is listed twice",
        ),
        (
            'replicas = ["postgresql://r:1/a"]\nread_preference = "nearest"',
            'databases.orders.read_preference: must be one of "primary", "replica_preferred", '
            "\"replica\", got 'nearest'",
        ),
        (
            'read_preference = "replica"',
            "databases.orders.read_preference: needs replicas = [...]",
        ),
        (
            "replica_pool = { max_size = 2 }",
            "databases.orders.replica_pool: needs replicas = [...]",
        ),
        (
            'replicas = ["postgresql://r:1/a"]\nreplica_pool = { max_size = 0 }',
            "databases.orders.replica_pool.max_size: must be >= 1, got 0",
        ),
        (
            'max_replica_lag = "soon"',
            "databases.orders.max_replica_lag: must be a duration: a number of seconds or a string "
            'like "250ms", "2s", "5m", got \'soon\'',
        ),
        ("max_replica_lag = 0", "databases.orders.max_replica_lag: must be positive"),
        ('replica_wait = "-5ms"', "databases.orders.replica_wait: must be a duration"),
        ("replica_lag = 1", "databases.orders.replica_lag: unknown key"),
    ],
)
def test_a_bad_replica_setting_names_the_key_and_the_problem(text, expected):
    message = error_of(f"[databases.orders]\n{PRIMARY}\n{text}\n")
    assert "\n" not in message
    assert expected in message


def test_a_failure_rate_is_a_fraction_not_a_duration():
    message = error_of(f'[databases.orders]\n{PRIMARY}\nbreaker = {{ failure_rate = "2s" }}\n')
    assert "databases.orders.breaker.failure_rate: must be a number" in message
