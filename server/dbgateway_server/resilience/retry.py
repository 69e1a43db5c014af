"""The retry policy (DESIGN §5), applied at one layer only: ``Database.run``.

What may be retried depends on what the database may already have done:

====================================  =====================================
failure                               retried
====================================  =====================================
nothing reached the database          always (every kind of call), up to
(connect refused or timed out,        ``max_attempts``
``GatewayError.sent`` is False)
connection lost mid-flight            a read: once; a write: only when the
                                      caller marked it ``idempotent``, once
serialization failure / deadlock      a whole transaction (``TRANSACTION``)
COMMIT outcome unknown, SQL errors,   never
timeouts, pool exhausted, circuit
open
====================================  =====================================

How many attempts: a statement (``READ``, ``WRITE``, ``IDEMPOTENT_WRITE``)
makes at most ``[retry] max_attempts``; a whole transaction is run again until
its deadline (a retry loop that gives up with most of the deadline left fails
callers that would have succeeded), unless the caller set ``max_attempts``.

Waits use full jitter (uniform in ``[0, min(max_backoff, initial_backoff *
2**(n-1))]``, so contending transactions spread out and no wait exceeds
``max_backoff``) and never outlast the caller's deadline: an attempt whose wait
would pass it is not made.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ..config import RetrySettings
from ..errors import GatewayError, Reason

log = logging.getLogger(__name__)

T = TypeVar("T")


class CallKind(StrEnum):
    """What a call does to the database, which decides what may be retried."""

    READ = "read"
    WRITE = "write"
    IDEMPOTENT_WRITE = "idempotent_write"
    TRANSACTION = "transaction"  # a whole transaction, from BEGIN to COMMIT

    @classmethod
    def of(cls, *, write: bool, idempotent: bool) -> CallKind:
        if not write:
            return cls.READ
        return cls.IDEMPOTENT_WRITE if idempotent else cls.WRITE


#: Failures after which a whole transaction is run again.
_TRANSACTION_CONFLICTS = frozenset({Reason.SERIALIZATION_FAILURE, Reason.DEADLOCK})
#: How many connection losses mid-flight a read (or idempotent write) survives.
MAX_LOSSES_IN_FLIGHT = 1


def retryable(error: BaseException, kind: CallKind, *, losses_before: int) -> bool:
    """True when a call of ``kind`` that failed with ``error`` may be tried again;
    ``losses_before`` counts the connections it already lost mid-flight."""
    if not isinstance(error, GatewayError):
        return False  # cancellation, timeouts of our own, bugs
    if error.reason is Reason.COMMIT_OUTCOME_UNKNOWN:
        return False
    if kind is CallKind.TRANSACTION and error.reason in _TRANSACTION_CONFLICTS:
        return True
    if not error.is_infrastructure:
        return False
    if not error.sent:
        return True
    if kind in (CallKind.WRITE, CallKind.TRANSACTION):
        # The database may have done it; only the caller knows if twice is fine.
        return False
    return losses_before < MAX_LOSSES_IN_FLIGHT


def attempt_limit(kind: CallKind, settings: RetrySettings, requested: int = 0) -> int | None:
    """Most attempts a call of ``kind`` makes (None: as many as its deadline
    allows). ``requested`` is the caller's own limit (0: none)."""
    if requested:
        return requested
    if kind is CallKind.TRANSACTION:
        return None
    return settings.max_attempts


@dataclass(slots=True)
class _Retryable:
    """tenacity's ``retry`` predicate, counting the losses of one call."""

    kind: CallKind
    losses: int = 0

    def __call__(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        if error is None:
            return False
        ok = retryable(error, self.kind, losses_before=self.losses)
        if isinstance(error, GatewayError) and error.is_infrastructure and error.sent:
            self.losses += 1
        return ok


#: No retry starts later than this before the caller's deadline: an attempt
#: begun in its last moments can only end at the deadline, and its answer
#: would then race the deadline to the caller, who would see a bare
#: DEADLINE_EXCEEDED instead of the failure that kept the call from succeeding.
ANSWER_MARGIN = 0.05


def late_answer(budget: float | None, remaining: float | None) -> bool:
    """An answer ready with ``remaining`` seconds of a call's ``budget`` left
    may reach its caller only after the caller's own deadline (which comes
    first: the server's counts from when the request arrived). True in the
    last :data:`ANSWER_MARGIN`, or the last quarter of a shorter budget."""
    if budget is None or remaining is None:
        return False
    return remaining < min(ANSWER_MARGIN, budget / 4)


class _Deadline(stop_base):
    """tenacity's ``stop``: no attempt whose wait would outlast the deadline
    (less :data:`ANSWER_MARGIN`)."""

    def __init__(self, remaining: Callable[[], float | None]) -> None:
        self.remaining = remaining

    def __call__(self, state: RetryCallState) -> bool:
        left = self.remaining()
        return left is not None and left <= state.upcoming_sleep + ANSWER_MARGIN


async def run_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    kind: CallKind,
    settings: RetrySettings,
    remaining: Callable[[], float | None],
    what: str = "call",
    on_retry: Callable[[GatewayError], None] | None = None,
    max_attempts: int = 0,
) -> tuple[T, int]:
    """Runs ``attempt`` until it succeeds or may not be retried; returns its
    result and the number of attempts. ``max_attempts`` is the caller's own
    limit (0: :func:`attempt_limit`'s default for ``kind``). The last failure
    is raised as is, with the attempt count in its metadata."""
    limit = attempt_limit(kind, settings, max_attempts)
    # The first attempt runs without tenacity: most calls succeed at once,
    # and building a retry controller per call costs more than the call's own
    # Python work. Only a failure that may be retried enters the loop below.
    try:
        return await attempt(), 1
    except GatewayError as exc:
        first: GatewayError | None = exc
        if limit == 1 or not retryable(exc, kind, losses_before=0):
            raise
    attempts = 1

    async def once() -> T:
        nonlocal attempts, first
        if first is not None:  # replay the first failure into tenacity's bookkeeping
            error, first = first, None
            raise error
        attempts += 1
        return await attempt()

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "%s: attempt %d failed (%s); retrying in %.3fs",
            what,
            state.attempt_number,
            error,
            state.upcoming_sleep,
        )
        if on_retry is not None and isinstance(error, GatewayError):
            on_retry(error)

    retrying = AsyncRetrying(
        stop=(stop_never if limit is None else stop_after_attempt(limit)) | _Deadline(remaining),
        wait=wait_random_exponential(multiplier=settings.initial_backoff, max=settings.max_backoff),
        retry=_Retryable(kind),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        result: T = await retrying(once)
    except GatewayError as exc:
        if attempts > 1:
            exc.with_metadata(attempts=attempts)
        raise
    return result, attempts
