"""The drain: what happens to calls between SIGTERM and exit.

gRPC stops taking new calls when the server stops; a call that still reaches
a servicer once the drain began (it was accepted just before) is refused at
once with UNAVAILABLE / SERVER_DRAINING and ``not_run = "true"`` in its
ErrorInfo (nothing reached a database, so any caller may send it again,
elsewhere, write or not), unless it continues an open transaction. New
connections meanwhile reach the drain listener (see ``app.py``), which gives
every call that same refusal. Calls already running get the grace period;
those still running when it ends are cancelled (on the database too) and
answered UNAVAILABLE / SERVER_DRAINING without ``not_run`` (they may have
run), not gRPC's bare "Cancelling all calls".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from .errors import GatewayError, Reason

log = logging.getLogger(__name__)

#: What a refused caller is told to wait before trying again (another replica).
RETRY_AFTER = 0.1
#: How long calls cancelled at the end of the grace period get to answer.
CANCEL_WAIT = 1.0
#: ErrorInfo metadata key of a refusal: the call never ran, so a client may
#: send it again (to this server once it is back, or to another) even when it
#: writes.
NOT_RUN = "not_run"


def refusal() -> GatewayError:
    """The answer to a call that arrives while the server drains: it did not run."""
    return GatewayError(
        Reason.SERVER_DRAINING,
        "the server is shutting down and takes no new calls; try again "
        "(another replica will answer)",
        metadata={NOT_RUN: "true"},
        retry_after=RETRY_AFTER,
        sent=False,
    )


class Drain:
    """The calls in flight, and whether the server still takes new ones."""

    __slots__ = ("_calls", "_grace", "_idle", "_stopped", "_stopped_all")

    def __init__(self) -> None:
        self._calls: set[asyncio.Task[object]] = set()
        #: Calls cancelled because the grace period ended.
        self._stopped: set[asyncio.Task[object]] = set()
        self._idle: asyncio.Event | None = None
        self._grace = 0.0
        #: The grace period is over: nothing is let in any more.
        self._stopped_all = False

    @property
    def draining(self) -> bool:
        return self._idle is not None

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def admit(self, *, continuing: bool = False) -> asyncio.Task[object] | None:
        """Admits the current call, or refuses it with SERVER_DRAINING. A call that
        ``continuing`` work begun before the drain (a statement or the commit
        of an open transaction) is let in until the grace period ends, so
        that transaction can still finish. What it returns goes to
        :meth:`leave` when the call ends."""
        if self.draining and not (continuing and not self._stopped_all):
            raise refusal()
        task = asyncio.current_task()
        if task is not None:  # calls always run in a task
            self._calls.add(task)
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        """The call :meth:`admit` let in has ended."""
        if task is None:
            return
        self._calls.discard(task)
        if self._idle is not None and not self._calls:
            self._idle.set()

    @contextlib.contextmanager
    def call(self, *, continuing: bool = False) -> Iterator[None]:
        """:meth:`admit` and :meth:`leave` around a block."""
        task = self.admit(continuing=continuing)
        try:
            yield
        finally:
            self.leave(task)

    def stopped_by_drain(self) -> GatewayError | None:
        """The error for the current call when the drain cancelled it."""
        task = asyncio.current_task()
        if task is None or task not in self._stopped:
            return None
        return GatewayError(
            Reason.SERVER_DRAINING,
            f"the server shut down before the call finished (shutdown_grace is {self._grace:g}s)",
            retry_after=RETRY_AFTER,
        )

    async def drain(self, grace: float) -> None:
        """Stops taking calls, waits up to ``grace`` seconds for those in
        flight, then cancels the rest and lets them answer."""
        self._grace = grace
        self._idle = asyncio.Event()
        if not self._calls:
            self._stopped_all = True
            return
        log.info("draining: %d call(s) in flight", len(self._calls))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._stopped_all = True
        left = list(self._calls)
        if not left:
            return
        log.warning("drain: cancelling %d call(s) still running after %gs", len(left), grace)
        self._stopped.update(left)
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=CANCEL_WAIT)
