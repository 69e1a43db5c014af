"""Which statements may run on a shared, pooled connection.

Statements that change connection state beyond one statement (transaction
control, session settings, LISTEN, USE, temporary tables, ...) would leak one
caller's state to the next caller of the same connection, so ``Query`` and
``Execute`` refuse them and point to the transaction RPCs. This is a guard on
the first keyword(s), not a SQL parser: the pool's idle check on release is
the second line of defence.
"""

from __future__ import annotations

import functools
import re

from .errors import GatewayError, Reason

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_WORDS = re.compile(r"[A-Za-z_]+")

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


@functools.lru_cache(maxsize=1024)
def _first_words(sql: str, n: int = 3) -> tuple[str, ...]:
    """The first ``n`` keywords, upper-cased; cached, as the same statements
    come back call after call."""
    start = _LEADING_NOISE.match(sql)
    rest = sql[start.end() if start else 0 :]
    words = []
    for match in _WORDS.finditer(rest[:200]):
        words.append(match.group(0).upper())
        if len(words) == n:
            break
    return tuple(words)


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased ("" for none)."""
    words = _first_words(sql, 1)
    return words[0] if words else ""


def check_statement(sql: str, *, in_transaction: bool = False) -> None:
    """Raises FAILED_PRECONDITION / UNSUPPORTED_STATEMENT for statements that
    would leave state on a pooled connection."""
    words = _first_words(sql)
    if not words:
        return
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    why: str | None = _SESSION_STATEMENTS.get(first)
    if first == "SET" and second == "LOCAL":
        why = None  # lasts only until the end of the transaction
    if first == "ROLLBACK" and second == "TO" and in_transaction:
        why = None
    if in_transaction and first in _IN_TRANSACTION_ALLOWED:
        why = None
    if first == "CREATE" and (
        second in ("TEMP", "TEMPORARY") or (second in ("LOCAL", "GLOBAL") and len(words) > 2)
    ):
        why = None if in_transaction else "session state (temporary tables)"
    if first == "PRAGMA" and "=" in sql:
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
