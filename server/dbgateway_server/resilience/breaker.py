"""The circuit breaker of one database endpoint.

A small state machine::

            N consecutive failures,           open time elapsed,
            or failure rate over window       a probe is let through
    CLOSED ────────────────────────► OPEN ──────────────────────────► HALF_OPEN
       ▲                              ▲                                   │
       │                              └──── probe failed (open time x2) ──┤
       └─────────────────────────────────── probe succeeded ──────────────┘

Only infrastructure failures count (:attr:`GatewayError.is_infrastructure`: the
database could not be reached); an SQL error is an answer, so it proves the
database is up. While open every call fails at once with UNAVAILABLE /
CIRCUIT_OPEN and a ``RetryInfo`` saying when the next probe is due, without
touching the network: a database that is down must not cost each caller a
connect timeout, and must not be hammered while it restarts.

Probes are ordinary calls that :meth:`CircuitBreaker.allow` lets through in
half-open state; the core also sends one in the background so the breaker
closes by itself when nobody is calling.

The clock is injected (monotonic seconds) so the state machine is tested with
a fake one.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from ..config import BreakerSettings
from ..errors import GatewayError, Reason

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    """What one call's outcome says about the database's availability."""

    SUCCESS = "success"  # the database answered (rows, or an SQL error)
    FAILURE = "failure"  # the database could not be reached
    UNKNOWN = "unknown"  # says nothing: timeout, pool saturated, cancelled, our own bug


#: Outcomes that neither prove nor disprove that the database is reachable.
_NO_VERDICT = frozenset(
    {
        Reason.STATEMENT_TIMEOUT,  # a slow query is not an outage
        Reason.CANCELLED,
        Reason.POOL_EXHAUSTED,  # nothing was sent
        Reason.CIRCUIT_OPEN,
        Reason.INTERNAL,
    }
)


def verdict_of(error: BaseException | None) -> Verdict:
    """Classifies a call's outcome (``None``: it succeeded) for the breaker."""
    if error is None:
        return Verdict.SUCCESS
    if not isinstance(error, GatewayError):
        return Verdict.UNKNOWN
    if error.is_infrastructure:
        return Verdict.FAILURE
    if error.reason in _NO_VERDICT or not error.sent:
        return Verdict.UNKNOWN
    return Verdict.SUCCESS


#: Called with (old state, new state, why) on every change.
StateListener = Callable[[CircuitState, CircuitState, str], None]


class CircuitBreaker:
    """Closed / open / half-open for one database endpoint."""

    __slots__ = (
        "_clock",
        "_consecutive",
        "_listener",
        "_open_time",
        "_outcomes",
        "_probes",
        "_retry_at",
        "_settings",
        "_state",
        "changes_total",
        "name",
        "opened_total",
    )

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._listener = on_change
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        # (time, failed) of recent calls while closed, for the failure rate.
        self._outcomes: collections.deque[tuple[float, bool]] = collections.deque()
        self._open_time = settings.open_time
        self._retry_at = 0.0
        self._probes = 0  # probes in flight while half-open
        self.changes_total = 0
        self.opened_total = 0

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    def retry_after(self) -> float:
        """Seconds until the next probe is due (0 when one may go now, or closed)."""
        if self._state is CircuitState.CLOSED:
            return 0.0
        return max(self._retry_at - self._clock(), 0.0)

    def allow(self) -> bool:
        """Admits a call, returning True when the call is a half-open probe;
        raises UNAVAILABLE / CIRCUIT_OPEN when it may not go."""
        if self._state is CircuitState.CLOSED:
            return False
        if self._state is CircuitState.OPEN:
            if self._clock() < self._retry_at:
                raise self.refusal()
            self._change(CircuitState.HALF_OPEN, "open time elapsed; probing")
        if self._probes < self._settings.half_open_probes:
            self._probes += 1
            return True
        raise self.refusal()

    def record(self, error: BaseException | None, *, probe: bool) -> None:
        """Reports the outcome of a call :meth:`allow` admitted."""
        verdict = verdict_of(error)
        if probe:
            self._probes = max(self._probes - 1, 0)
            if self._state is not CircuitState.HALF_OPEN:
                return
            if verdict is Verdict.SUCCESS:
                self._close("a probe succeeded")
            elif verdict is Verdict.FAILURE:
                self._open_time = min(self._open_time * 2, self._settings.max_open_time)
                self._open(f"a probe failed: {_describe(error)}")
            return
        if self._state is not CircuitState.CLOSED or verdict is Verdict.UNKNOWN:
            # Calls admitted before the circuit opened say nothing new.
            return
        now = self._clock()
        failed = verdict is Verdict.FAILURE
        self._outcomes.append((now, failed))
        horizon = now - self._settings.window
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()
        if not failed:
            self._consecutive = 0
            return
        self._consecutive += 1
        s = self._settings
        if self._consecutive >= s.failure_threshold:
            self._open(f"{self._consecutive} consecutive failures, last: {_describe(error)}")
            return
        calls = len(self._outcomes)
        failures = sum(1 for _, f in self._outcomes if f)
        if calls >= s.min_calls and failures / calls >= s.failure_rate:
            self._open(
                f"{failures} of {calls} calls failed in {s.window:g}s, last: {_describe(error)}"
            )

    def trip(self, why: str) -> None:
        """Opens the circuit now (e.g. the database was unreachable at start)."""
        if self._state is not CircuitState.OPEN:
            self._open(why)

    # -- transitions --------------------------------------------------------------

    def _open(self, why: str) -> None:
        self._retry_at = self._clock() + self._open_time
        self._consecutive = 0
        self._outcomes.clear()
        self.opened_total += 1
        self._change(CircuitState.OPEN, f"{why}; next probe in {self._open_time:g}s")

    def _close(self, why: str) -> None:
        self._open_time = self._settings.open_time
        self._consecutive = 0
        self._outcomes.clear()
        self._change(CircuitState.CLOSED, why)

    def _change(self, state: CircuitState, why: str) -> None:
        old, self._state = self._state, state
        self.changes_total += 1
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit of database %s: %s -> %s (%s)", self.name, old, state, why)
        if self._listener is not None:
            self._listener(old, state, why)

    def refusal(self) -> GatewayError:
        """The UNAVAILABLE / CIRCUIT_OPEN answer, with the wait until the next probe."""
        wait = self.retry_after()
        return GatewayError(
            Reason.CIRCUIT_OPEN,
            f"database {self.name!r} is unavailable: its circuit is {self._state.value}; "
            f"next probe in {wait:.3g}s",
            metadata={"database": self.name, "circuit_state": self._state.value},
            # While a probe is in flight there is no schedule: suggest a short wait.
            retry_after=wait if wait > 0 else min(self._settings.open_time, 1.0),
            sent=False,
        )


def _describe(error: BaseException | None) -> str:
    if isinstance(error, GatewayError):
        return f"{error.reason.value}: {error.message}"
    return repr(error)
