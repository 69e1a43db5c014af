"""The drain's bookkeeping, and defaults that fit the orchestrators."""

from __future__ import annotations

import asyncio

import pytest

from dbgateway_server.app import DRAIN_LISTENER_STOP_GRACE, STOP_GRACE
from dbgateway_server.config import ServerConfig
from dbgateway_server.drain import CANCEL_WAIT, Drain
from dbgateway_server.errors import GatewayError, Reason


def test_the_default_grace_fits_inside_docker_stops_ten_seconds():
    # docker stop sends SIGKILL 10 s after SIGTERM (Kubernetes: 30 s): the
    # grace, the cancel of what is left and the final stop must fit, with
    # room to roll back transactions and close the pools.
    # The drain listener's own stop comes last.
    assert ServerConfig().shutdown_grace + CANCEL_WAIT + STOP_GRACE + DRAIN_LISTENER_STOP_GRACE <= 9


async def test_a_new_call_is_refused_with_draining_once_the_drain_began():
    drain = Drain()
    await drain.drain(1.0)
    with pytest.raises(GatewayError) as info, drain.call():
        pass
    assert info.value.reason is Reason.SERVER_DRAINING
    assert info.value.sent is False
    assert info.value.retry_after is not None


async def test_the_drain_waits_for_calls_in_flight_then_stops_the_rest():
    drain = Drain()
    finished = asyncio.Event()
    answers: list[object] = []

    async def call(seconds: float) -> None:
        with drain.call():
            try:
                await asyncio.sleep(seconds)
                answers.append("done")
            except asyncio.CancelledError:
                answers.append(drain.stopped_by_drain())
                raise
            finally:
                finished.set()

    quick = asyncio.create_task(call(0.05))
    stuck = asyncio.create_task(call(60))
    await asyncio.sleep(0)
    assert drain.in_flight == 2
    await drain.drain(0.3)
    assert quick.done()
    assert stuck.cancelled()
    assert answers[0] == "done"
    stopped = answers[1]
    assert isinstance(stopped, GatewayError)
    assert stopped.reason is Reason.SERVER_DRAINING
    assert "shutdown_grace is 0.3s" in stopped.message
    assert drain.in_flight == 0


async def test_a_call_on_an_open_transaction_is_let_in_until_the_grace_ends():
    drain = Drain()
    release = asyncio.Event()

    async def long_call() -> None:
        with drain.call():
            await release.wait()

    running = asyncio.create_task(long_call())
    await asyncio.sleep(0)
    draining = asyncio.create_task(drain.drain(5.0))
    await asyncio.sleep(0)
    with drain.call(continuing=True):  # e.g. the Commit of a handle-based transaction
        pass
    with pytest.raises(GatewayError), drain.call():
        pass
    release.set()
    await draining
    await running
    with pytest.raises(GatewayError), drain.call(continuing=True):
        pass
