"""The client's Python <-> Value mapping, without a server."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

import pytest
from google.protobuf import timestamp_pb2

from dbgateway import Interval, Json
from dbgateway._values import from_value, to_value, to_values
from dbgateway.v1 import value_pb2
from tests.support import V

INSTANT = dt.datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=dt.UTC)


def _ts(when: dt.datetime) -> value_pb2.Value:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return value_pb2.Value(timestamp_value=stamp)


@pytest.mark.parametrize(
    ("python", "value"),
    [
        (None, V.null()),
        (True, V.of(bool_value=True)),
        (False, V.of(bool_value=False)),
        (0, V.of(int_value=0)),
        (-(2**63), V.of(int_value=-(2**63))),
        (2**63 - 1, V.of(int_value=2**63 - 1)),
        (2**63, V.of(uint_value=2**63)),
        (2**64 - 1, V.of(uint_value=2**64 - 1)),
        (0.1, V.of(double_value=0.1)),
        ("héllo ✓", V.of(string_value="héllo ✓")),
        (b"\x00\xff", V.of(bytes_value=b"\x00\xff")),
        (decimal.Decimal("12.50"), V.of(decimal_value="12.50")),
        (decimal.Decimal("-1E-30"), V.of(decimal_value="-0.000000000000000000000000000001")),
        (INSTANT, _ts(INSTANT)),
        (
            dt.datetime(2024, 5, 1, 12, 30, 0, 123456),
            V.of(datetime_value="2024-05-01T12:30:00.123456"),
        ),
        (dt.date(2024, 2, 29), V.of(date_value="2024-02-29")),
        (dt.time(13, 45, 30, 123456), V.of(time_value="13:45:30.123456")),
        (uuid.UUID(int=7), V.of(uuid_value=str(uuid.UUID(int=7)))),
        (
            dt.timedelta(days=-3, seconds=4, microseconds=5006),
            V.of(interval_value=value_pb2.Interval(days=-3, microseconds=4_005_006)),
        ),
        (
            Interval(months=14, days=-3, microseconds=4_005_006),
            V.of(interval_value=value_pb2.Interval(months=14, days=-3, microseconds=4_005_006)),
        ),
        ({"a": [1, 2.5, None], "ü": True}, V.of(json_value='{"a": [1, 2.5, null], "ü": true}')),
        ([1, None, 3], V.list(V.of(int_value=1), V.null(), V.of(int_value=3))),
        (
            [[1, 2], [3, 4]],
            V.list(
                V.list(V.of(int_value=1), V.of(int_value=2)),
                V.list(V.of(int_value=3), V.of(int_value=4)),
            ),
        ),
    ],
    ids=repr,
)
def test_every_mapped_python_type_round_trips_through_its_value_kind(python, value):
    assert to_value(python) == value
    back = from_value(value)
    assert back == python
    assert type(back) is type(python)


def test_a_timestamp_in_any_zone_is_the_same_instant_and_comes_back_in_utc():
    plus_five = dt.datetime(
        2024, 5, 1, 16, 0, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    )
    back = from_value(to_value(plus_five))
    assert back == plus_five
    assert back.tzinfo == dt.UTC


def test_decimal_nan_goes_out_as_text_and_comes_back_nan():
    assert to_value(decimal.Decimal("NaN")) == V.of(decimal_value="NaN")
    assert from_value(V.of(decimal_value="NaN")).is_nan()


def test_ints_beyond_uint64_go_out_as_exact_decimals():
    assert to_value(2**70) == V.of(decimal_value=str(2**70))
    assert to_value(-(2**63) - 1) == V.of(decimal_value=str(-(2**63) - 1))


def test_json_wrapper_sends_arrays_and_scalars_as_json():
    assert to_value(Json([1, "a"])) == V.of(json_value='[1, "a"]')
    assert to_value(Json("text")) == V.of(json_value='"text"')
    assert from_value(V.of(json_value="[1, 2]")) == [1, 2]


def test_tuples_bytearrays_and_subclasses_map_like_their_base():
    class Color(enum.IntEnum):
        RED = 1

    assert to_value((1, 2)) == V.list(V.of(int_value=1), V.of(int_value=2))
    assert to_value(bytearray(b"ab")) == V.of(bytes_value=b"ab")
    assert to_value(memoryview(b"ab")) == V.of(bytes_value=b"ab")
    assert to_value(Color.RED) == V.of(int_value=1)


@pytest.mark.parametrize("unsupported", [object(), {1, 2}, 1 + 2j, frozenset()], ids=repr)
def test_an_unsupported_type_is_a_type_error_naming_it(unsupported):
    with pytest.raises(TypeError, match=type(unsupported).__qualname__):
        to_value(unsupported)


def test_parameter_errors_say_which_parameter():
    with pytest.raises(TypeError, match=r"parameter 2: .*complex"):
        to_values([1, 2j])
    with pytest.raises(TypeError, match="JSON"):
        to_value({"a": object()})


def test_mysql_time_is_a_signed_duration():
    assert from_value(V.of(time_value="-838:59:59"), "TIME") == -dt.timedelta(
        hours=838, minutes=59, seconds=59
    )
    assert from_value(V.of(time_value="13:45:30.5"), "TIME") == dt.timedelta(
        hours=13, minutes=45, seconds=30.5
    )
    # Other engines' time of day stays a time, with its offset when it has one.
    assert from_value(V.of(time_value="13:45:30+02:00"), "timetz") == dt.time(
        13, 45, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )


def test_arrays_of_rich_types_come_back_as_lists_of_native_values():
    value = V.list(V.of(decimal_value="1.10"), V.null(), V.of(uuid_value=str(uuid.UUID(int=1))))
    assert from_value(value) == [decimal.Decimal("1.10"), None, uuid.UUID(int=1)]


def test_infinite_dates_and_timestamps_read_as_the_extreme_python_values():
    assert from_value(V.of(datetime_value="infinity")) == dt.datetime.max
    assert from_value(V.of(datetime_value="-infinity")) == dt.datetime.min
    assert from_value(V.of(date_value="infinity")) == dt.date.max
    assert from_value(V.of(date_value="-infinity")) == dt.date.min
    # and go back out as what the server binds as PostgreSQL's infinity
    assert from_value(to_value(dt.datetime.max)) == dt.datetime.max
