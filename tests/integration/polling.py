"""Waiting for a condition the system reaches on its own (a row gone from
pg_stat_activity, a log line written): polled, so a test states what must
become true, never how long it takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

POLL_INTERVAL = 0.02


def eventually(check: Callable[[], Any], within: float = 1.0) -> bool:
    """True as soon as ``check()`` is, False if it still is not after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(POLL_INTERVAL)
    return bool(check())


def waited_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``check()``'s first truthy result; fails naming ``what`` if there is
    none within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:g}s: {what}")
        time.sleep(POLL_INTERVAL)
