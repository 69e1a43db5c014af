"""Which statements may run on a shared, pooled connection: a friendly
early error, not the boundary.

Statements that change connection state beyond one statement (transaction
control, session settings, LISTEN, USE, temporary tables, ...) are refused in
``Query`` and ``Execute`` with a message pointing to the transaction RPCs.
This looks at the first keyword(s) only, so it cannot enumerate every way a
statement changes a session (``SELECT set_config(...)``, ``GET_LOCK()``):
what keeps callers apart is the pool, which resets every connection before
the next caller gets it, and the drivers, which run one statement per call.

Comments are read the way every engine reads them, so none hides a keyword:
MySQL's ``#`` line comments and executable ``/*! ... */`` comments (whose
contents run), and block comments both flat (MySQL, SQLite) and nested
(PostgreSQL); a statement is refused if either reading finds a refused keyword.
"""

from __future__ import annotations

import functools
import re

from .errors import GatewayError, Reason

_WORD = re.compile(r"[A-Za-z_]+")
#: The opener of a MySQL/MariaDB executable comment; what follows it runs.
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!\d*")
#: How far into the text keywords are looked for.
_SCAN_LIMIT = 20_000

#: SQLite PRAGMAs that take an argument but only read: allowed with one.
SQLITE_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
_PRAGMA_WITH_VALUE = re.compile(
    r"PRAGMA\s+(?:[\w\"`\[\]]+\s*\.\s*)?[\"`\[]?(\w+)[\"`\]]?\s*([=(])", re.IGNORECASE
)

#: First keyword -> why it is refused outside a transaction RPC.
_SESSION_STATEMENTS: dict[str, str] = {
    "BEGIN": "transaction control",
    "START": "transaction control",
    "COMMIT": "transaction control",
    "END": "transaction control",
    "ROLLBACK": "transaction control",
    "ABORT": "transaction control",
    "SAVEPOINT": "transaction control",
    "RELEASE": "transaction control",
    "XA": "transaction control",
    "SET": "a session setting",
    "RESET": "a session setting",
    "USE": "a session setting",
    "DISCARD": "a session setting",
    "LISTEN": "session state",
    "UNLISTEN": "session state",
    "PREPARE": "session state",
    "DEALLOCATE": "session state",
    "DECLARE": "session state (cursors)",
    "CLOSE": "session state (cursors)",
    "FETCH": "session state (cursors)",
    "MOVE": "session state (cursors)",
    "LOCK": "session state (locks)",
    "UNLOCK": "session state (locks)",
    "HANDLER": "session state",
    "ATTACH": "session state",
    "DETACH": "session state",
}

#: Allowed as the first statement keywords inside a transaction.
#: What to do instead of a refused session-state statement, where there is a way.
_ALTERNATIVE = {
    "SET": " (on PostgreSQL, SET LOCAL inside a transaction RPC is allowed)",
    "USE": " (configure the other database in the gateway and name it in the request's "
    "database field, or qualify the tables: other_db.table)",
}
_IN_TRANSACTION_ALLOWED = {"SAVEPOINT", "RELEASE", "LOCK", "DECLARE", "FETCH", "MOVE", "CLOSE"}


def _skip_comment(sql: str, i: int, *, nested: bool) -> int:
    """The index after the block comment opening at ``i``."""
    depth = 0
    end = len(sql)
    while i < end:
        if sql.startswith("/*", i):
            if depth and not nested:
                i += 2
                continue
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return end


def _keywords(sql: str, n: int, *, nested: bool) -> tuple[str, ...]:
    """The first ``n`` keywords, upper-cased, reading comments flat or nested."""
    words: list[str] = []
    i, end = 0, min(len(sql), _SCAN_LIMIT)
    while i < end and len(words) < n:
        c = sql[i]
        if sql.startswith("--", i) or c == "#":
            newline = sql.find("\n", i)
            i = end if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            opener = _EXECUTABLE_COMMENT.match(sql, i)
            i = opener.end() if opener else _skip_comment(sql, i, nested=nested)
        elif sql.startswith("*/", i):
            i += 2  # the end of an executable comment
        elif c in "'\"`":
            break  # a literal or quoted name: no keyword can be told from here on
        else:
            word = _WORD.match(sql, i)
            if word is None:
                i += 1
            else:
                words.append(word.group(0).upper())
                i = word.end()
    return tuple(words)


@functools.lru_cache(maxsize=1024)
def _readings(sql: str, n: int = 3) -> tuple[tuple[str, ...], ...]:
    """The first ``n`` keywords under each way an engine reads comments;
    cached, as the same statements come back call after call."""
    flat = _keywords(sql, n, nested=False)
    nested = _keywords(sql, n, nested=True) if "/*" in sql else flat
    return (flat,) if nested == flat else (flat, nested)


def _first_words(sql: str, n: int = 3) -> tuple[str, ...]:
    return _readings(sql, n)[0]


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased ("" for none)."""
    words = _first_words(sql, 1)
    return words[0] if words else ""


def check_statement(sql: str, *, in_transaction: bool = False) -> None:
    """Raises FAILED_PRECONDITION / UNSUPPORTED_STATEMENT for statements that
    would leave state on a pooled connection."""
    for words in _readings(sql):
        _check_words(sql, words, in_transaction=in_transaction)


def _check_words(sql: str, words: tuple[str, ...], *, in_transaction: bool) -> None:
    if not words:
        return
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    why: str | None = _SESSION_STATEMENTS.get(first)
    if first == "SET" and second == "LOCAL":
        # Lasts until the end of the transaction (PostgreSQL; on MySQL,
        # LOCAL means SESSION, which the pool's reset undoes).
        why = None
    if first == "ROLLBACK" and second == "TO" and in_transaction:
        why = None
    if in_transaction and first in _IN_TRANSACTION_ALLOWED:
        why = None
    if first == "CREATE" and (
        second in ("TEMP", "TEMPORARY") or (second in ("LOCAL", "GLOBAL") and len(words) > 2)
    ):
        why = None if in_transaction else "session state (temporary tables)"
    if first == "PRAGMA":
        pragma = _PRAGMA_WITH_VALUE.search(sql)
        if pragma is not None and pragma.group(1).lower() not in SQLITE_READ_PRAGMAS:
            why = "a session setting"
    if why is None:
        return
    if why == "transaction control":
        where = (
            "inside a transaction: end it with the commit or rollback action"
            if in_transaction
            else "in Query/Execute: use the Transaction, BeginTransaction or RunTransaction RPCs"
        )
    else:
        where = (
            "inside a transaction RPC: it would outlive the transaction on a pooled connection"
            if in_transaction
            else "in Query/Execute: it would outlive this call on a pooled connection"
            + _ALTERNATIVE.get(first, "")
        )
    raise GatewayError(
        Reason.UNSUPPORTED_STATEMENT,
        f"{first} ({why}) is refused {where}",
        metadata={"statement": first},
    )
