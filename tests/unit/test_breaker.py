"""The circuit breaker as a state machine, on a fake clock."""

from __future__ import annotations

import pytest

from dbgateway_server.config import BreakerSettings
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.resilience.breaker import CircuitBreaker, CircuitState, Verdict, verdict_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def down() -> GatewayError:
    return GatewayError(Reason.DATABASE_UNAVAILABLE, "connection refused", sent=False)


def sql_error() -> GatewayError:
    return GatewayError(Reason.SQL_ERROR, 'relation "nope" does not exist')


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, changes: list | None = None, **settings) -> CircuitBreaker:
    def on_change(old, new, why):
        if changes is not None:
            changes.append((old, new))

    return CircuitBreaker("orders", BreakerSettings(**settings), clock=clock, on_change=on_change)


def fail(b: CircuitBreaker, times: int = 1, error: BaseException | None = None) -> None:
    for _ in range(times):
        probe = b.allow()
        b.record(error or down(), probe=probe)


def succeed(b: CircuitBreaker) -> None:
    b.record(None, probe=b.allow())


def test_opens_after_consecutive_infrastructure_failures(clock):
    changes: list = []
    b = breaker(clock, changes)
    fail(b, 4)
    assert b.state is CircuitState.CLOSED
    fail(b)
    assert b.state is CircuitState.OPEN
    assert changes == [(CircuitState.CLOSED, CircuitState.OPEN)]
    assert b.opened_total == 1


def test_a_success_resets_the_consecutive_count(clock):
    b = breaker(clock)
    fail(b, 4)
    succeed(b)
    fail(b, 4)
    assert b.state is CircuitState.CLOSED


def test_sql_errors_never_count_and_prove_the_database_answers(clock):
    b = breaker(clock)
    fail(b, 4)
    fail(b, 20, error=sql_error())
    assert b.state is CircuitState.CLOSED
    fail(b, 4)
    assert b.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    "reason", [Reason.STATEMENT_TIMEOUT, Reason.POOL_EXHAUSTED, Reason.CANCELLED]
)
def test_timeouts_and_pool_saturation_say_nothing(clock, reason):
    b = breaker(clock)
    fail(b, 4)
    fail(b, 10, error=GatewayError(reason, "slow"))
    assert b.state is CircuitState.CLOSED
    fail(b)
    assert b.state is CircuitState.OPEN  # the unknowns did not reset the count either


def test_opens_on_failure_rate_over_the_window(clock):
    b = breaker(clock, failure_threshold=100, failure_rate=0.5, min_calls=10, window=10)
    for _ in range(5):
        succeed(b)
        fail(b)
        clock.advance(0.5)
    assert b.state is CircuitState.OPEN


def test_failure_rate_forgets_calls_older_than_the_window(clock):
    b = breaker(clock, failure_threshold=100, failure_rate=0.5, min_calls=10, window=10)
    fail(b, 4)
    clock.advance(11)
    for _ in range(6):
        succeed(b)
    fail(b, 4)
    assert b.state is CircuitState.CLOSED  # 4 of 10 within the window


def test_open_circuit_fails_fast_with_retry_info(clock):
    b = breaker(clock, open_time=5)
    fail(b, 5)
    clock.advance(2)
    with pytest.raises(GatewayError) as info:
        b.allow()
    err = info.value
    assert err.reason is Reason.CIRCUIT_OPEN
    assert err.code.name == "UNAVAILABLE"
    assert err.retry_after == pytest.approx(3.0)
    assert not err.sent
    assert not err.is_infrastructure  # refusing is not a new failure


def test_half_open_lets_exactly_one_probe_through(clock):
    changes: list = []
    b = breaker(clock, changes, open_time=5)
    fail(b, 5)
    clock.advance(5)
    assert b.allow() is True
    assert b.state is CircuitState.HALF_OPEN
    with pytest.raises(GatewayError) as info:
        b.allow()
    assert info.value.reason is Reason.CIRCUIT_OPEN
    assert changes[-1] == (CircuitState.OPEN, CircuitState.HALF_OPEN)


def test_successful_probe_closes(clock):
    changes: list = []
    b = breaker(clock, changes, open_time=5)
    fail(b, 5)
    clock.advance(5)
    b.record(None, probe=b.allow())
    assert b.state is CircuitState.CLOSED
    assert b.allow() is False
    assert [new for _, new in changes] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_failed_probes_double_the_open_time_up_to_the_maximum(clock):
    b = breaker(clock, open_time=5, max_open_time=60)
    fail(b, 5)
    waits = []
    for _ in range(6):
        waits.append(b.retry_after())
        clock.advance(b.retry_after())
        b.record(down(), probe=b.allow())
        assert b.state is CircuitState.OPEN
    assert waits == [5, 10, 20, 40, 60, 60]


def test_open_time_starts_over_after_closing(clock):
    b = breaker(clock, open_time=5)
    fail(b, 5)
    clock.advance(5)
    b.record(down(), probe=b.allow())
    clock.advance(10)
    b.record(None, probe=b.allow())
    fail(b, 5)
    assert b.retry_after() == 5


def test_a_probe_without_verdict_frees_the_slot(clock):
    b = breaker(clock, open_time=5)
    fail(b, 5)
    clock.advance(5)
    b.record(GatewayError(Reason.STATEMENT_TIMEOUT, "slow"), probe=b.allow())
    assert b.state is CircuitState.HALF_OPEN
    assert b.allow() is True


def test_late_results_of_calls_admitted_while_closed_are_ignored(clock):
    b = breaker(clock, open_time=5)
    fail(b, 5)
    b.record(None, probe=False)  # a slow call that started before the outage
    assert b.state is CircuitState.OPEN
    clock.advance(5)
    assert b.allow() is True
    b.record(down(), probe=False)
    assert b.state is CircuitState.HALF_OPEN


def test_trip_opens_at_once(clock):
    b = breaker(clock, open_time=5)
    b.trip("unreachable at start")
    assert b.state is CircuitState.OPEN
    assert b.retry_after() == 5


def test_verdicts():
    assert verdict_of(None) is Verdict.SUCCESS
    assert verdict_of(down()) is Verdict.FAILURE
    assert verdict_of(sql_error()) is Verdict.SUCCESS
    assert verdict_of(GatewayError(Reason.UNIQUE_VIOLATION, "dup")) is Verdict.SUCCESS
    assert verdict_of(GatewayError(Reason.POOL_EXHAUSTED, "full", sent=False)) is Verdict.TIMEOUT
    assert verdict_of(GatewayError(Reason.STATEMENT_TIMEOUT, "slow")) is Verdict.TIMEOUT
    assert verdict_of(TimeoutError()) is Verdict.TIMEOUT
    assert verdict_of(GatewayError(Reason.CANCELLED, "gone")) is Verdict.UNKNOWN
    assert verdict_of(RuntimeError("bug")) is Verdict.UNKNOWN


def wrong_password() -> GatewayError:
    return GatewayError(
        Reason.DATABASE_UNAVAILABLE,
        'cannot connect to PostgreSQL: password authentication failed for user "app"',
        metadata={"sqlstate": "28P01", "engine": "postgresql"},
        sent=False,
    )


def test_a_refusal_carries_the_cause_of_the_open_circuit(clock):
    b = breaker(clock)
    fail(b, 5, error=wrong_password())
    err = b.refusal()
    assert err.reason is Reason.CIRCUIT_OPEN
    assert err.metadata["cause_reason"] == "DATABASE_UNAVAILABLE"
    assert err.metadata["cause_sqlstate"] == "28P01"
    assert "password authentication failed" in err.metadata["cause"]
    assert "DATABASE_UNAVAILABLE (28P01): cannot connect" in err.message


def test_the_cause_is_forgotten_when_the_circuit_closes(clock):
    b = breaker(clock)
    b.trip("unreachable at start", wrong_password())
    assert b.cause()["cause_sqlstate"] == "28P01"
    b.record_background_probe(None)
    assert b.state is CircuitState.CLOSED
    assert b.cause() == {}
    assert "cause" not in b.refusal().metadata


def test_a_cause_never_shows_a_password(clock):
    b = breaker(clock)
    leaky = GatewayError(
        Reason.DATABASE_UNAVAILABLE,
        "could not reach postgresql://app:s3cret@db:5432/orders?password=hunter2",
    )
    b.trip("down", leaky)
    cause = b.cause()["cause"]
    assert "s3cret" not in cause
    assert "hunter2" not in cause
    assert "postgresql://app:***@db:5432/orders" in cause


def test_a_call_that_timed_out_says_nothing_until_a_check_stalls(clock):
    b = breaker(clock)
    slow = GatewayError(Reason.STATEMENT_TIMEOUT, "statement cancelled")
    for _ in range(10):
        assert b.record(slow, probe=b.allow()) is Verdict.TIMEOUT
    assert b.state is CircuitState.CLOSED
    stalled = GatewayError(Reason.DATABASE_UNAVAILABLE, "no answer to a check within 2s")
    b.record_stalls(stalled, calls=5)
    assert b.state is CircuitState.OPEN
    assert b.cause()["cause"] == "no answer to a check within 2s"


def test_background_probes_run_every_probe_interval_whatever_the_open_time(clock):
    b = breaker(clock, open_time=5, max_open_time=60, probe_interval=1)
    fail(b, 5)
    b.probing_in_background = True
    for _ in range(20):
        assert b.background_probe_wait() == pytest.approx(1.0)
        clock.advance(1.0)
        b.record_background_probe(down())
    assert b.state is CircuitState.OPEN
    # Callers are told when the next background probe is due, not the open time.
    assert b.refusal().retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    b.record_background_probe(None)
    assert b.state is CircuitState.CLOSED
