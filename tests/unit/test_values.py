"""Pure value conversion: the per-column converters and parameter decoding."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from dbgateway.v1 import value_pb2
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.values import (
    MYSQL_PARAMS,
    POSTGRES_PARAMS,
    SQLITE_PARAMS,
    decimal_text,
    duration_text,
    from_python,
    mysql_column,
    pg_converter,
)
from tests.support import V


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (decimal.Decimal("1E-7"), "0.0000001"),
        (decimal.Decimal("1.50"), "1.50"),
        (decimal.Decimal("1.5E+3"), "1500"),
        (decimal.Decimal("NaN"), "NaN"),
        (decimal.Decimal("-Infinity"), "-Infinity"),
    ],
)
def test_decimals_are_exact_text_never_exponents(value, text):
    assert decimal_text(value) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(hours=13, minutes=45, seconds=30, microseconds=123456), "13:45:30.123456"),
        (-dt.timedelta(hours=838, minutes=59, seconds=59), "-838:59:59"),
        (dt.timedelta(0), "00:00:00"),
    ],
)
def test_mysql_time_is_a_signed_duration(delta, text):
    assert duration_text(delta) == text
    assert MYSQL_PARAMS.decode(V.of(time_value=text), 0, 0) == delta


def test_aware_datetimes_become_timestamps_naive_ones_datetimes():
    aware = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert from_python(aware).timestamp_value.ToDatetime() == dt.datetime(2024, 5, 1, 10, 0)
    assert from_python(dt.datetime(2024, 5, 1, 12, 0)).datetime_value == "2024-05-01T12:00:00"


def test_integers_beyond_int64_become_uint():
    assert from_python(2**64 - 1) == V.of(uint_value=2**64 - 1)
    assert from_python(-(2**63)) == V.of(int_value=-(2**63))


def test_an_unknown_driver_type_is_unsupported_never_its_repr():
    class Point:
        def __str__(self) -> str:
            return "<Point object>"

    with pytest.raises(GatewayError) as info:
        from_python(Point())
    assert info.value.reason is Reason.UNSUPPORTED


def test_pg_column_converter_is_chosen_once_and_handles_null():
    conv = pg_converter("int8", "scalar")
    assert conv(None) == V.null()
    assert conv(5) == V.of(int_value=5)
    arrays = pg_converter("_int4", "array")
    assert arrays([[1, None], [3, 4]]) == V.list(
        V.list(V.of(int_value=1), V.null()), V.list(V.of(int_value=3), V.of(int_value=4))
    )


def test_mysql_zero_dates_do_not_break_a_result():
    _, conv = mysql_column(10, 0, 33)  # DATE; PyMySQL returns '0000-00-00' as text
    assert conv("0000-00-00") == V.of(string_value="0000-00-00")


@pytest.mark.parametrize(
    ("type_code", "flags", "charset", "name"),
    [
        (8, 32, 63, "BIGINT UNSIGNED"),
        (253, 0, 45, "VARCHAR"),
        (253, 128, 63, "VARBINARY"),
        (252, 16, 45, "TEXT"),
    ],
)
def test_mysql_db_type_names(type_code, flags, charset, name):
    assert mysql_column(type_code, flags, charset)[0] == name


def test_postgres_params_keep_interval_parts_and_lists():
    assert POSTGRES_PARAMS.decode_all(
        [
            V.of(interval_value=value_pb2.Interval(months=1, days=2, microseconds=3)),
            V.list(V.of(int_value=1)),
        ]
    ) == [(1, 2, 3), [1]]


def test_timestamp_params_are_aware_utc():
    stamp = POSTGRES_PARAMS.decode(V.ts(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), 0, 0)
    assert stamp == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert MYSQL_PARAMS.decode(V.ts(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), 0, 0).tzinfo is None


@pytest.mark.parametrize(
    ("decoder", "value", "field"),
    [
        (POSTGRES_PARAMS, V.of(decimal_value="1,5"), "params[0]"),
        (POSTGRES_PARAMS, V.of(date_value="2024-13-01"), "params[0]"),
        (POSTGRES_PARAMS, V.of(uuid_value="not-a-uuid"), "params[0]"),
        (MYSQL_PARAMS, V.of(time_value="noon"), "params[0]"),
        (SQLITE_PARAMS, V.of(uint_value=2**64 - 1), "params[0]"),
    ],
)
def test_unparsable_parameters_name_the_parameter(decoder, value, field):
    with pytest.raises(GatewayError) as info:
        decoder.decode_all([value])
    assert info.value.reason is Reason.INVALID_PARAMETER
    assert info.value.field_violations[0][0] == field


@pytest.mark.parametrize("decoder", [MYSQL_PARAMS, SQLITE_PARAMS])
def test_arrays_are_unsupported_where_the_engine_has_none(decoder):
    with pytest.raises(GatewayError) as info:
        decoder.decode_all([V.list(V.of(int_value=1))])
    assert info.value.reason is Reason.UNSUPPORTED


def test_deeply_nested_lists_are_refused_not_recursed():
    value = V.of(int_value=1)
    for _ in range(50):
        value = V.list(value)
    with pytest.raises(GatewayError) as info:
        POSTGRES_PARAMS.decode_all([value])
    assert info.value.reason is Reason.INVALID_PARAMETER


def test_sqlite_keeps_rich_kinds_as_exact_text():
    assert SQLITE_PARAMS.decode_all(
        [V.of(decimal_value="1.10"), V.of(uuid_value=str(uuid.UUID(int=1))), V.of(bool_value=True)]
    ) == ["1.10", "00000000-0000-0000-0000-000000000001", 1]
