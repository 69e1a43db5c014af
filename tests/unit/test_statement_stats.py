"""Statement statistics: normalized text, counters, percentiles, bounded memory."""

from __future__ import annotations

import tracemalloc

import pytest

from dbgateway_server.statement_stats import StatementStatistics, normalize


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = ?"),
        ("select *\n  from t where id=  42 ", "select * from t where id= ?"),
        ("SELECT 'it''s', E'a\\'b', 3.5e-3, .5, 0x1F", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT x FROM t WHERE id IN (1, 2, 3, 4)", "SELECT x FROM t WHERE id IN (?)"),
        ("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT INTO t VALUES (?)"),
        ("SELECT $1::int + 1 FROM t2", "SELECT $1::int + ? FROM t2"),
        ("SELECT %s, ? FROM t -- note 7", "SELECT %s, ? FROM t"),
        ('SELECT "col 1", `x2` FROM "t 3"', 'SELECT "col 1", `x2` FROM "t 3"'),
        ("SELECT $$secret$$, $tag$x$tag$", "SELECT ?, ?"),
        ("SELECT /* 99 */ a1 FROM b2", "SELECT a1 FROM b2"),
    ],
)
def test_literals_are_folded_and_identifiers_and_placeholders_kept(sql, expected):
    assert normalize(sql) == expected


def test_executions_with_different_literals_are_one_statement():
    stats = StatementStatistics(10, clock=lambda: 1000.0)
    stats.record("pg", "SELECT * FROM t WHERE id = 1", 0.010, 1)
    stats.record("pg", "SELECT * FROM t WHERE id = 2", 0.030, 0)
    stats.record("pg", "SELECT * FROM t WHERE id = 3", 0.020, 1, "STATEMENT_TIMEOUT")
    stats.record("lite", "SELECT * FROM t WHERE id = 1", 0.001, 1)
    (entry,) = stats.top("pg")
    assert entry.text == "SELECT * FROM t WHERE id = ?"
    assert (entry.calls, entry.errors, entry.rows) == (3, 1, 2)
    assert entry.errors_by_reason == {"STATEMENT_TIMEOUT": 1}
    assert entry.total_time == pytest.approx(0.060)
    assert entry.mean_time == pytest.approx(0.020)
    assert entry.last_seen == 1000.0
    assert [e.database for e in stats.top()] == ["pg", "lite"]


def test_top_orders_by_total_time_and_honours_the_limit():
    stats = StatementStatistics(10)
    for n, elapsed in enumerate([0.001, 0.5, 0.02]):
        stats.record("pg", f"SELECT c{n} FROM t", elapsed, 0)
    assert [e.text for e in stats.top()] == [
        "SELECT c1 FROM t",
        "SELECT c2 FROM t",
        "SELECT c0 FROM t",
    ]
    assert [e.text for e in stats.top(limit=1)] == ["SELECT c1 FROM t"]


def test_p99_is_within_ten_percent_of_the_true_value():
    stats = StatementStatistics(10)
    for n in range(1, 1001):  # 1 ms .. 1000 ms: the true p99 is 990 ms
        stats.record("pg", "SELECT 1", n / 1000, 0)
    (entry,) = stats.top()
    assert entry.p99_time == pytest.approx(0.990, rel=0.1)


def test_least_recently_executed_statement_is_forgotten_beyond_capacity():
    stats = StatementStatistics(3)
    for name in ("a", "b", "c"):
        stats.record("pg", f"SELECT {name} FROM t", 0.001, 0)
    stats.record("pg", "SELECT a FROM t", 0.001, 0)  # a is now the most recent
    stats.record("pg", "SELECT d FROM t", 0.001, 0)  # b goes
    assert sorted(e.text for e in stats.top()) == [
        "SELECT a FROM t",
        "SELECT c FROM t",
        "SELECT d FROM t",
    ]


def test_reset_forgets_one_database_or_all():
    stats = StatementStatistics(10)
    stats.record("pg", "SELECT 1", 0.001, 1)
    stats.record("lite", "SELECT 1", 0.001, 1)
    assert stats.reset("pg") == 1
    assert [e.database for e in stats.top()] == ["lite"]
    assert stats.reset() == 1
    assert stats.top() == []


@pytest.mark.slow
def test_memory_stays_bounded_with_100_000_distinct_statements():
    stats = StatementStatistics(1000)

    def run(start: int, stop: int) -> None:
        for n in range(start, stop):
            stats.record("pg", f"SELECT c{n} FROM t{n} WHERE id = {n}", 0.001 * (n % 7), 1)

    tracemalloc.start()
    try:
        run(0, 2000)  # the table and the normalization cache are full from here on
        full = tracemalloc.get_traced_memory()[0]
        run(2000, 100_000)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(stats) == 1000
    assert after < full * 1.25, (full, after)
    assert stats.top(limit=1)[0].text.startswith("SELECT c9")


def test_capacity_zero_keeps_nothing():
    stats = StatementStatistics(0)
    stats.record("pg", "SELECT 1", 0.001, 1)
    assert stats.top() == []


def test_statement_stats_setting_defaults_to_1000_and_is_validated():
    import tomllib

    from dbgateway_server.config import ConfigError, parse_config

    def parse(text: str):
        return parse_config(tomllib.loads(text), env={}, source="x.toml")

    db = '[databases.a]\ndsn = "sqlite:///tmp/a.sqlite3"\n'
    assert parse(db).server.statement_stats == 1000
    assert parse("[server]\nstatement_stats = 0\n" + db).server.statement_stats == 0
    with pytest.raises(ConfigError, match="statement_stats"):
        parse("[server]\nstatement_stats = -1\n" + db)
