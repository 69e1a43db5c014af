"""The result-size settings of a database: defaults, validation, and their fit
with the server's message limits."""

from __future__ import annotations

import pytest

from dbgateway_server.app import SERVER_OPTIONS
from dbgateway_server.config import (
    MAX_MESSAGE_BYTES,
    RESPONSE_OVERHEAD_BYTES,
    STREAM_MESSAGE_LIMIT_BYTES,
    ConfigError,
    parse_config,
)

MiB = 1024 * 1024


def database(**settings: object):
    raw = {"databases": {"main": {"dsn": "sqlite::memory:", **settings}}}
    return parse_config(raw, env={}, source="test.toml").databases["main"]


def test_defaults_are_100000_rows_16_mib_and_1_mib_chunks():
    db = database()
    assert db.max_result_rows == 100_000
    assert db.max_result_bytes == 16 * MiB
    assert db.stream_chunk_bytes == 1 * MiB


def test_settings_are_read_per_database():
    db = database(max_result_rows=10, max_result_bytes=4096, stream_chunk_bytes=2048)
    assert (db.max_result_rows, db.max_result_bytes, db.stream_chunk_bytes) == (10, 4096, 2048)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_result_rows", 0, "must be at least 1"),
        ("max_result_bytes", 100, "must be between 1024"),
        ("max_result_bytes", MAX_MESSAGE_BYTES, "message limit"),
        ("stream_chunk_bytes", 4 * MiB, "4 MiB"),
        ("stream_chunk_bytes", "1MiB", "must be an integer"),
    ],
)
def test_bad_values_name_the_key(key, value, problem):
    with pytest.raises(ConfigError) as info:
        database(**{key: value})
    assert f"databases.main.{key}" in str(info.value)
    assert problem in str(info.value)


def test_the_server_sends_the_largest_unary_result_the_config_allows():
    options = dict(SERVER_OPTIONS)
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    largest = database(max_result_bytes=MAX_MESSAGE_BYTES - RESPONSE_OVERHEAD_BYTES)
    assert largest.max_result_bytes + RESPONSE_OVERHEAD_BYTES <= MAX_MESSAGE_BYTES


def test_stream_chunks_always_fit_grpcs_default_message_limit():
    largest = database(stream_chunk_bytes=STREAM_MESSAGE_LIMIT_BYTES - RESPONSE_OVERHEAD_BYTES)
    assert largest.stream_chunk_bytes < 4 * MiB
