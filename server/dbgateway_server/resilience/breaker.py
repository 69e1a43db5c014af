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
database is up. A call counts once, however many attempts it made. A call that
timed out says nothing by itself (a slow query is not an outage), so the core
checks the database with a short ping of its own and, if that stalls too,
counts every call that timed out meanwhile as a failure
(:meth:`CircuitBreaker.record_stalls`). While open every call fails at once with UNAVAILABLE /
CIRCUIT_OPEN and a ``RetryInfo`` saying when the next probe is due, without
touching the network: a database that is down must not cost each caller a
connect timeout, and must not be hammered while it restarts.

While the circuit is open the core probes the database in the background
every ``probe_interval`` seconds (a fresh connection and a ping, bounded by
``probe_timeout``): probes are cheap, so a database that is back serves again
within a few seconds, whatever the open time. The open time, doubled after
every failed half-open probe, only governs when real traffic may be let
through as a probe when no background prober runs.

The cause of the opening (the last failure: its reason, SQLSTATE or vendor
code, and message) travels with every refusal, so callers and operators see
why, not only that, the database is unavailable.

The clock is injected (monotonic seconds) so the state machine is tested with
a fake one.
"""

from __future__ import annotations

import collections
import logging
import re
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
    UNKNOWN = "unknown"  # says nothing: cancelled, circuit open, our own bug
    #: The call ran out of time: a slow query, or a database that stopped
    #: answering; only a check of the database itself can tell which.
    TIMEOUT = "timeout"


#: Outcomes that neither prove nor disprove that the database is reachable.
_NO_VERDICT = frozenset({Reason.CANCELLED, Reason.CIRCUIT_OPEN, Reason.INTERNAL})

#: Outcomes of a call that ran out of time waiting on the database: a
#: statement that did not finish, or a connection the pool could not get (new
#: connections hang when the database stalls).
_TIMED_OUT = frozenset({Reason.STATEMENT_TIMEOUT, Reason.POOL_EXHAUSTED})

#: ErrorInfo metadata keys that carry the cause of an open circuit.
CAUSE_REASON = "cause_reason"
CAUSE_SQLSTATE = "cause_sqlstate"
CAUSE_VENDOR_CODE = "cause_vendor_code"
CAUSE_MESSAGE = "cause"
#: A cause's message is cut to this many characters.
MAX_CAUSE_LENGTH = 300

#: Passwords as they appear in DSNs and driver messages: ``user:secret@host``
#: and ``password=secret``.
_USERINFO_SECRET = re.compile(r"(//[^:/@\s]+:)[^@/\s]+(@)")
_SETTING_SECRET = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;,]+)")


def redact(message: str) -> str:
    """``message`` without anything that looks like a password (DSN userinfo,
    ``password=`` settings): a cause is shown to every caller."""
    message = _USERINFO_SECRET.sub(r"\1***\2", message)
    return _SETTING_SECRET.sub(r"\1***", message)


def verdict_of(error: BaseException | None) -> Verdict:
    """Classifies a call's outcome (``None``: it succeeded) for the breaker."""
    if error is None:
        return Verdict.SUCCESS
    if isinstance(error, TimeoutError):
        return Verdict.TIMEOUT
    if not isinstance(error, GatewayError):
        return Verdict.UNKNOWN
    if error.is_infrastructure:
        return Verdict.FAILURE
    if error.reason in _TIMED_OUT:
        return Verdict.TIMEOUT
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
        "_failures",
        "_last_failure",
        "_listener",
        "_next_background_probe",
        "_open_time",
        "_opened_at",
        "_outcomes",
        "_probes",
        "_retry_at",
        "_settings",
        "_state",
        "changes_total",
        "name",
        "opened_total",
        "probing_in_background",
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
        #: How many of ``_outcomes`` are failures (kept as they come and go).
        self._failures = 0
        self._open_time = settings.open_time
        self._retry_at = 0.0
        self._probes = 0  # probes in flight while half-open
        self._opened_at = 0.0
        self._last_failure: GatewayError | None = None
        self._next_background_probe = 0.0
        #: Set by the core while its background prober runs: refusals then
        #: announce the prober's schedule, not the open time.
        self.probing_in_background = False
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

    @property
    def last_failure(self) -> GatewayError | None:
        """The failure that opened the circuit, or the latest one since (None
        while closed)."""
        return self._last_failure if self._state is not CircuitState.CLOSED else None

    def cause(self) -> dict[str, str]:
        """The cause of the open circuit as ErrorInfo metadata (empty while closed)."""
        error = self.last_failure
        if error is None:
            return {}
        cause = {
            CAUSE_REASON: error.reason.value,
            CAUSE_MESSAGE: redact(error.message)[:MAX_CAUSE_LENGTH],
        }
        if "sqlstate" in error.metadata:
            cause[CAUSE_SQLSTATE] = error.metadata["sqlstate"]
        if "vendor_code" in error.metadata:
            cause[CAUSE_VENDOR_CODE] = error.metadata["vendor_code"]
        return cause

    def describe_cause(self) -> str:
        """The cause in one line, e.g. ``DATABASE_UNAVAILABLE (28P01): ...``."""
        cause = self.cause()
        if not cause:
            return ""
        codes = ", ".join(c for c in (cause.get(CAUSE_SQLSTATE), cause.get(CAUSE_VENDOR_CODE)) if c)
        where = f" ({codes})" if codes else ""
        return f"{cause[CAUSE_REASON]}{where}: {cause[CAUSE_MESSAGE]}"

    def record(self, error: BaseException | None, *, probe: bool) -> Verdict:
        """Reports the outcome of a call :meth:`allow` admitted; returns its
        verdict (a TIMEOUT is for the caller to check, see :meth:`record_stalls`)."""
        verdict = verdict_of(error)
        if verdict is Verdict.FAILURE and isinstance(error, GatewayError):
            self._remember(error)
        if probe:
            self._probes = max(self._probes - 1, 0)
            if self._state is not CircuitState.HALF_OPEN:
                return verdict
            if verdict is Verdict.SUCCESS:
                self._close("a probe succeeded")
            elif verdict is Verdict.FAILURE:
                self._open_time = min(self._open_time * 2, self._settings.max_open_time)
                self._open(f"a probe failed: {_describe(error)}")
            return verdict
        if self._state is not CircuitState.CLOSED or verdict in (Verdict.UNKNOWN, Verdict.TIMEOUT):
            # Calls admitted before the circuit opened say nothing new.
            return verdict
        self._count(error, failed=verdict is Verdict.FAILURE)
        return verdict

    def record_stalls(self, error: GatewayError, calls: int) -> None:
        """Counts ``calls`` calls that timed out as failures: the database did
        not answer a check of its own either (``error`` says how)."""
        self._remember(error)
        for _ in range(calls):
            if self._state is not CircuitState.CLOSED:
                return
            self._count(error, failed=True)

    def background_probe_wait(self) -> float:
        """Seconds until the background prober should probe again."""
        return max(self._next_background_probe - self._clock(), 0.0)

    def record_background_probe(self, error: GatewayError | None) -> None:
        """The outcome of a background probe (a fresh connection and a ping):
        a success closes the circuit at once; a failure schedules the next
        probe ``probe_interval`` from now and becomes the cause."""
        if self._state is CircuitState.CLOSED:
            return
        if verdict_of(error) is Verdict.SUCCESS:
            self._close("a background probe succeeded")
            return
        if error is not None:
            self._remember(error)
        self._next_background_probe = self._clock() + self._settings.probe_interval

    def _remember(self, error: GatewayError) -> None:
        self._last_failure = error

    def _count(self, error: BaseException | None, *, failed: bool) -> None:
        now = self._clock()
        outcomes = self._outcomes
        outcomes.append((now, failed))
        self._failures += failed
        horizon = now - self._settings.window
        while outcomes and outcomes[0][0] < horizon:
            self._failures -= outcomes.popleft()[1]
        if not failed:
            self._consecutive = 0
            return
        self._consecutive += 1
        s = self._settings
        if self._consecutive >= s.failure_threshold:
            self._open(f"{self._consecutive} consecutive failures, last: {_describe(error)}")
            return
        calls = len(self._outcomes)
        failures = self._failures
        if calls >= s.min_calls and failures / calls >= s.failure_rate:
            self._open(
                f"{failures} of {calls} calls failed in {s.window:g}s, last: {_describe(error)}"
            )

    def trip(self, why: str, error: GatewayError | None = None) -> None:
        """Opens the circuit now (e.g. the database was unreachable at start);
        ``error`` is the cause callers are told."""
        if error is not None:
            self._remember(error)
        if self._state is not CircuitState.OPEN:
            self._open(why)

    # -- transitions --------------------------------------------------------------

    def _open(self, why: str) -> None:
        now = self._clock()
        self._opened_at = now
        self._retry_at = now + self._open_time
        self._next_background_probe = now + self._settings.probe_interval
        self._consecutive = 0
        self._outcomes.clear()
        self._failures = 0
        self.opened_total += 1
        self._change(CircuitState.OPEN, f"{why}; next probe in {self._open_time:g}s")

    def _close(self, why: str) -> None:
        self._open_time = self._settings.open_time
        self._consecutive = 0
        self._outcomes.clear()
        self._failures = 0
        self._last_failure = None
        self._change(CircuitState.CLOSED, why)

    def _change(self, state: CircuitState, why: str) -> None:
        old, self._state = self._state, state
        self.changes_total += 1
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit of database %s: %s -> %s (%s)", self.name, old, state, why)
        if self._listener is not None:
            self._listener(old, state, why)

    def refusal(self) -> GatewayError:
        """The UNAVAILABLE / CIRCUIT_OPEN answer, with its cause and the wait
        until the next probe."""
        wait = self.retry_after()
        if self.probing_in_background:
            wait = min(wait, self.background_probe_wait())
        cause = self.describe_cause()
        because = f" (last error: {cause})" if cause else ""
        return GatewayError(
            Reason.CIRCUIT_OPEN,
            f"database {self.name!r} is unavailable: its circuit is {self._state.value}"
            f"{because}; next probe in {wait:.3g}s",
            metadata={"database": self.name, "circuit_state": self._state.value, **self.cause()},
            # While a probe is in flight there is no schedule: suggest a short wait.
            retry_after=wait if wait > 0 else min(self._settings.open_time, 1.0),
            sent=False,
        )


def _describe(error: BaseException | None) -> str:
    if isinstance(error, GatewayError):
        return f"{error.reason.value}: {error.message}"
    return repr(error)
