"""The CLI's pure parts: how parameters are typed and how rows are printed."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

import dbgateway
from dbgateway import _cli


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain", "plain"),
        ("a:b", "a:b"),
        ("str:int:5", "int:5"),
        ("int:-5", -5),
        ("float:4.5", 4.5),
        ("bool:yes", True),
        ("null:", None),
        ("decimal:12.50", decimal.Decimal("12.50")),
        ("bytes:00ff", b"\x00\xff"),
        ("date:2024-02-29", dt.date(2024, 2, 29)),
    ],
)
def test_cli_params_are_text_unless_typed(text, value):
    assert _cli.parse_param(text) == value


def test_cli_json_params_and_bad_values():
    assert _cli.parse_param('json:[1, {"a": 2}]') == dbgateway.Json([1, {"a": 2}])
    with pytest.raises(ValueError, match="not a valid int"):
        _cli.parse_param("int:five")


def test_cli_table_aligns_numbers_right_and_spells_null():
    lines = _cli.format_table(["id", "body", "stars"], [(1, "hello", 4.5), (10, "a\nb", None)])
    assert lines == [
        "id | body  | stars",
        "---+-------+------",
        " 1 | hello |   4.5",
        "10 | a\\nb  | NULL",
    ]
