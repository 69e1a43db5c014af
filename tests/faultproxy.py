"""A TCP proxy that misbehaves on demand: outages between the gateway and a real
database without touching the database server.

The proxy runs its own asyncio loop on a daemon thread, so synchronous tests
(grpc stubs) and async ones drive it the same way::

    with FaultProxy("127.0.0.1", 5432) as proxy:
        dsn = proxy.dsn("postgresql://postgres@127.0.0.1:5432/test")
        ...
        proxy.cut()          # drop every live connection (RST)
        proxy.refuse()       # stop listening: new connections get ECONNREFUSED
        proxy.stall()        # accept and hold connections, forward nothing
        proxy.latency(0.2)   # delay every chunk, both directions
        proxy.restore()      # back to a faithful pipe
        sent = proxy.record()  # from now on, what clients send, one entry per read

Faults apply to live connections as well as new ones (except ``refuse``, which
only concerns new ones; combine it with ``cut`` for an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

CHUNK = 64 * 1024


class _Link:
    """One client connection and its upstream connection."""

    __slots__ = ("client", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy:
    """A TCP proxy in front of ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.accepted_total = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._flowing: asyncio.Event | None = None
        self._latency = 0.0
        self._recording: list[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by the proxy's."""
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- faults (thread-safe) -------------------------------------------------

    def cut(self) -> int:
        """Drops every live connection at once; returns how many."""
        return self._call(self._cut())

    def refuse(self) -> None:
        """Stops listening: new connections are refused by the kernel."""
        self._call(self._stop_listening())

    def stall(self) -> None:
        """Accepts connections but forwards nothing, on new and live connections."""
        self._call(self._set_flowing(False))

    def latency(self, seconds: float) -> None:
        """Delays every forwarded chunk by ``seconds``."""
        self._latency = seconds

    def restore(self) -> None:
        """Listening again, forwarding at once."""
        self._latency = 0.0
        self._call(self._restore())

    def record(self) -> list[bytes]:
        """From now on, every chunk a client sends upstream is appended to the
        list returned, in the order the proxy reads them (a small write of a
        client's arrives as one chunk); a new call starts a new list."""
        self._recording = []
        return self._recording

    @property
    def live_connections(self) -> int:
        return len(self._links)

    # -- inside the proxy's loop ------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _restore(self) -> None:
        await self._set_flowing(True)
        await self._listen()

    async def _cut(self) -> int:
        links, self._links = list(self._links), set()
        for link in links:
            link.abort()
        return len(links)

    async def _close(self) -> None:
        await self._stop_listening()
        await self._cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted_total += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, upstream=True), self._pipe(up_reader, writer)
            )
        finally:
            self._links.discard(link)
            link.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool = False,
    ) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                if upstream and self._recording is not None:
                    self._recording.append(data)
                if self._latency:
                    await asyncio.sleep(self._latency)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        # One side finished: end the other so the pair goes away together.
        writer.transport.abort()
