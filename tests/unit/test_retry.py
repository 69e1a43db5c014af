"""What the retry policy retries, and that it stays within the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from dbgateway_server.config import RetrySettings
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.resilience.retry import (
    CallKind,
    attempt_limit,
    late_answer,
    retryable,
    run_with_retries,
)

READ, WRITE, IDEMPOTENT, TX = (
    CallKind.READ,
    CallKind.WRITE,
    CallKind.IDEMPOTENT_WRITE,
    CallKind.TRANSACTION,
)


def refused() -> GatewayError:
    return GatewayError(Reason.DATABASE_UNAVAILABLE, "connection refused", sent=False)


def lost() -> GatewayError:
    return GatewayError(Reason.DATABASE_UNAVAILABLE, "connection lost during query")


@pytest.mark.parametrize("kind", list(CallKind))
def test_failures_before_sending_are_retried_for_every_call(kind):
    assert retryable(refused(), kind, losses_before=0)
    assert retryable(refused(), kind, losses_before=1)


def test_a_read_that_lost_its_connection_is_retried_once():
    assert retryable(lost(), READ, losses_before=0)
    assert not retryable(lost(), READ, losses_before=1)


def test_a_write_that_lost_its_connection_is_not_retried():
    assert not retryable(lost(), WRITE, losses_before=0)


def test_an_idempotent_write_that_lost_its_connection_is_retried_once():
    assert retryable(lost(), IDEMPOTENT, losses_before=0)
    assert not retryable(lost(), IDEMPOTENT, losses_before=1)


@pytest.mark.parametrize("kind", list(CallKind))
def test_nothing_is_retried_after_commit_was_sent(kind):
    error = GatewayError(Reason.COMMIT_OUTCOME_UNKNOWN, "connection lost during COMMIT")
    assert not retryable(error, kind, losses_before=0)


@pytest.mark.parametrize(
    "reason",
    [
        Reason.SQL_ERROR,
        Reason.UNIQUE_VIOLATION,
        Reason.STATEMENT_TIMEOUT,
        Reason.POOL_EXHAUSTED,
        Reason.CIRCUIT_OPEN,
        Reason.PERMISSION_DENIED,
    ],
)
@pytest.mark.parametrize("kind", [READ, WRITE, IDEMPOTENT])
def test_answers_and_local_refusals_are_not_retried(reason, kind):
    assert not retryable(GatewayError(reason, "no", sent=False), kind, losses_before=0)


@pytest.mark.parametrize("reason", [Reason.SERIALIZATION_FAILURE, Reason.DEADLOCK])
def test_whole_transactions_are_retried_on_conflicts_but_statements_are_not(reason):
    assert retryable(GatewayError(reason, "conflict"), TX, losses_before=0)
    assert not retryable(GatewayError(reason, "conflict"), READ, losses_before=0)
    assert not retryable(lost(), TX, losses_before=0)


def test_cancellation_and_bugs_are_not_retried():
    assert not retryable(asyncio.CancelledError(), READ, losses_before=0)
    assert not retryable(RuntimeError("bug"), READ, losses_before=0)


FAST = RetrySettings(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)


class Script:
    """An attempt that fails with the given errors, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_runner_reports_attempts():
    attempt = Script(refused(), refused())
    result, attempts = await run_with_retries(
        attempt, kind=WRITE, settings=FAST, remaining=lambda: None
    )
    assert (result, attempts) == ("ok", 3)


async def test_runner_gives_up_after_max_attempts_and_says_how_many():
    attempt = Script(refused(), refused(), refused(), refused())
    with pytest.raises(GatewayError) as info:
        await run_with_retries(attempt, kind=READ, settings=FAST, remaining=lambda: None)
    assert attempt.calls == 3
    assert info.value.metadata["attempts"] == "3"


async def test_runner_does_not_retry_a_lost_write():
    attempt = Script(lost())
    with pytest.raises(GatewayError):
        await run_with_retries(attempt, kind=WRITE, settings=FAST, remaining=lambda: None)
    assert attempt.calls == 1


async def test_runner_retries_a_lost_read_only_once():
    attempt = Script(lost(), lost())
    with pytest.raises(GatewayError):
        await run_with_retries(attempt, kind=READ, settings=FAST, remaining=lambda: None)
    assert attempt.calls == 2


async def test_runner_never_waits_past_the_deadline():
    slow = RetrySettings(max_attempts=10, initial_backoff=1.0, max_backoff=1.0)
    deadline = time.monotonic() + 0.05
    attempt = Script(*(refused() for _ in range(10)))
    started = time.monotonic()
    with pytest.raises(GatewayError):
        await run_with_retries(
            attempt, kind=READ, settings=slow, remaining=lambda: deadline - time.monotonic()
        )
    assert time.monotonic() - started < 1.0


def conflict() -> GatewayError:
    return GatewayError(Reason.SERIALIZATION_FAILURE, "could not serialize access")


async def test_a_transaction_is_retried_past_max_attempts_until_its_deadline():
    attempt = Script(*(conflict() for _ in range(20)))
    result, attempts = await run_with_retries(
        attempt, kind=CallKind.TRANSACTION, settings=FAST, remaining=lambda: 30.0
    )
    assert (result, attempts) == ("ok", 21)  # [retry] max_attempts (3) is for statements


async def test_a_transaction_stops_retrying_at_its_deadline():
    attempt = Script(*(conflict() for _ in range(10_000)))
    deadline = time.monotonic() + 0.2
    with pytest.raises(GatewayError) as info:
        await run_with_retries(
            attempt,
            kind=CallKind.TRANSACTION,
            settings=FAST,
            remaining=lambda: deadline - time.monotonic(),
        )
    assert info.value.reason is Reason.SERIALIZATION_FAILURE
    assert int(info.value.metadata["attempts"]) == attempt.calls > 3


async def test_an_explicit_max_attempts_limits_a_transaction():
    attempt = Script(*(conflict() for _ in range(10)))
    with pytest.raises(GatewayError) as info:
        await run_with_retries(
            attempt,
            kind=CallKind.TRANSACTION,
            settings=FAST,
            remaining=lambda: 30.0,
            max_attempts=5,
        )
    assert attempt.calls == 5
    assert info.value.metadata["attempts"] == "5"


def test_transactions_default_to_no_attempt_limit_statements_to_the_settings():
    assert attempt_limit(CallKind.TRANSACTION, FAST) is None
    assert attempt_limit(CallKind.READ, FAST) == 3
    assert attempt_limit(CallKind.TRANSACTION, FAST, 7) == 7


async def test_no_retry_starts_in_the_last_moments_before_the_deadline():
    # 30 ms left (less than the answer margin), backoff of at most 1 ms: the
    # caller gets the failure now, not an attempt that would end at its
    # deadline and lose the race to it.
    attempt = Script(*(refused() for _ in range(3)))
    with pytest.raises(GatewayError) as info:
        await run_with_retries(attempt, kind=READ, settings=FAST, remaining=lambda: 0.03)
    assert info.value.reason is Reason.DATABASE_UNAVAILABLE
    assert attempt.calls == 1


@pytest.mark.parametrize(
    ("budget", "remaining", "late"),
    [
        (None, None, False),  # no deadline
        (5.0, 0.2, False),
        (5.0, 0.04, True),  # in the last 50 ms
        (0.1, 0.03, False),  # a short budget: its last quarter
        (0.1, 0.02, True),
        (0.004, 0.0005, True),
    ],
)
def test_an_answer_in_the_last_moments_of_its_budget_is_late(budget, remaining, late):
    assert late_answer(budget, remaining) is late
