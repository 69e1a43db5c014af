"""Results made on the database server, so tests can ask for any number of
rows of any width without creating tables."""

from __future__ import annotations

from dbgateway.v1 import database_service_pb2 as pb
from tests.support import V

#: SQL producing rows ``(n, pad)`` for n = 1..rows (at most 100,000), where
#: ``pad`` is ``width`` characters; parameters are (width, rows).
WIDE = {
    "pg": "SELECT g AS n, repeat('x', $1::int) AS pad FROM generate_series(1, $2::int) AS g",
    "mysql": "SELECT CAST(seq AS SIGNED) AS n, repeat('x', %s) AS pad "
    "FROM seq_1_to_100000 WHERE seq <= %s",
    "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) "
    "SELECT n, printf('%' || ? || 's', 'x') AS pad FROM s WHERE n <= ?",
}
ENGINES = list(WIDE)


def wide(database: str, width: int, rows: int) -> pb.QueryRequest:
    """A request for ``rows`` rows of about ``width`` bytes each."""
    return pb.QueryRequest(
        database=database,
        sql=WIDE[database],
        params=[V.of(int_value=width), V.of(int_value=rows)],
    )
