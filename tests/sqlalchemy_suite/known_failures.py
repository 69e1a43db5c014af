"""Tests of SQLAlchemy's suite that fail through dbgateway but pass with the
engine's native driver, each with its reason. The wrapper test fails on any
other such test."""

from __future__ import annotations

import fnmatch

#: (engine, test id pattern as ``Class::test[params]``, reason)
KNOWN_GATEWAY_FAILURES: list[tuple[str, str, str]] = [
    (
        "*",
        "ServerSideCursorsTest::*",
        "the suite recognises a server-side cursor only for the drivers it names "
        "(testing/suite/test_results.py `_is_server_side` returns False for any other); "
        "stream_results and yield_per do read through StreamQuery "
        "(tests/integration/test_sqlalchemy_dialects.py)",
    ),
    (
        "sqlite",
        "ComponentReflectionTestExtra::test_check_constraint_*[[]True*",
        "needs the suite's attached test_schema database: ATTACH is session state, "
        "which the gateway refuses on pooled connections",
    ),
    (
        "sqlite",
        "IsolationLevelTest::test_dialect_user_setting_is_restored",
        "the test needs a second isolation level besides the default and AUTOCOMMIT; "
        "pysqlite offers READ UNCOMMITTED through `PRAGMA read_uncommitted`, a session "
        "setting the gateway refuses, so SQLite through the gateway has SERIALIZABLE only",
    ),
    (
        "mysql",
        "CTETest::*",
        "the suite's MySQL cleanup between tests runs `SET foreign_key_checks = 0`, a "
        "session-wide SET the gateway refuses, so the previous test's rows remain",
    ),
]

#: PostgreSQL: the gateway keeps asyncpg's prepared-statement cache on its
#: pooled connections; after the suite drops a table and creates one of the
#: same name with other column types, a cached plan fails inside a
#: transaction ("cached plan must not change result type"), where asyncpg
#: cannot re-prepare by itself. A server-side matter (the server would have
#: to clear the cache on that error), outside the dialect.
STALE_PLAN = "cached plan must not change result type"


def known_reason(engine: str, test_id: str, message: str) -> str | None:
    """Why ``test_id`` fails through the gateway on ``engine``; None when it
    is not a known failure."""
    if engine == "postgresql" and STALE_PLAN in message:
        return "stale prepared statement on a pooled connection (server-side cache)"
    for where, pattern, reason in KNOWN_GATEWAY_FAILURES:
        if where in ("*", engine) and fnmatch.fnmatchcase(test_id, pattern):
            return reason
    return None
