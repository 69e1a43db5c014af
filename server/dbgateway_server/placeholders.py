"""Hints for the most common mistake with parameters: another engine's
placeholder style (``?`` on PostgreSQL, ``%s`` on SQLite, ``$1`` on MySQL).

The database's own answer ("syntax error at end of input", ``near "%"``) does
not say what is wrong; when a statement failed that way and its text holds
another engine's placeholders but none of its own, the error gets a hint
naming the placeholder the engine expects. Only a failed statement is looked
at: a correct one pays nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import GatewayError, Reason

#: The placeholder each engine takes (the drivers' own paramstyle).
PLACEHOLDERS: Mapping[str, str] = {"postgresql": "$1", "mysql": "%s", "sqlite": "?"}
_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "sqlite": "SQLite"}
_EXAMPLES = {"$1": "$1, $2, ...", "%s": "%s, %s, ...", "?": "?, ?, ..."}
_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "$1": re.compile(r"\$\d+"),
    "%s": re.compile(r"%s"),
    "?": re.compile(r"\?"),
}
#: String literals, quoted identifiers and comments, which may hold any of
#: these characters without being placeholders.
_NOT_CODE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.DOTALL)
#: Failures a wrong placeholder causes: a syntax error, or a parameter count
#: the statement does not take.
_SYMPTOMS = frozenset({Reason.SQL_ERROR, Reason.INVALID_REQUEST, Reason.INVALID_PARAMETER})


def placeholder_hint(engine: str, sql: str) -> str | None:
    """The hint for ``sql`` on ``engine``, or None when its placeholders look right."""
    own = PLACEHOLDERS.get(engine)
    if own is None:
        return None
    code = _NOT_CODE.sub(" ", sql)
    if _PATTERNS[own].search(code):
        return None
    found = [style for style, pattern in _PATTERNS.items() if style != own and pattern.search(code)]
    if not found:
        return None
    return (
        f"hint: {_NAMES[engine]} placeholders are {_EXAMPLES[own]}; "
        f"this statement uses {' and '.join(found)}"
    )


def with_placeholder_hint(error: GatewayError, engine: str, sql: str) -> GatewayError:
    """``error`` with the placeholder hint added to its message when it applies."""
    if error.reason not in _SYMPTOMS or "hint: " in error.message:
        return error
    hint = placeholder_hint(engine, sql)
    if hint is not None:
        error.message = f"{error.message} ({hint})"
        error.args = (error.message,)
        error.with_metadata(placeholder=PLACEHOLDERS[engine])
    return error
