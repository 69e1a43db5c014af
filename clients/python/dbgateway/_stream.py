"""``stream()``: the rows of a ``StreamQuery`` call, decoded one at a time.

The server sends the columns first, then the rows in chunks, then the stats
(with ``truncated``). The client holds one chunk at a time, so a result of any
size streams in constant memory. Closing the stream early (``break`` out of a
``with`` block, or :meth:`RowStream.close`) cancels the call, which stops the
query on the database.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, Self

import grpc
import grpc.aio

from ._errors import DbGatewayError, from_rpc_error
from ._result import Column, Row, columns_of
from ._values import from_column_batch, from_row
from .v1 import database_service_pb2 as pb

__all__ = ["AsyncRowStream", "RowStream"]


def no_columns_error() -> DbGatewayError:
    return DbGatewayError(grpc.StatusCode.UNKNOWN, "StreamQuery ended before sending its columns")


class _StreamState:
    """What a stream has learned so far: columns, then ``truncated``."""

    __slots__ = ("column_info", "truncated")

    def __init__(self) -> None:
        self.column_info: tuple[Column, ...] | None = None
        self.truncated = False

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The column names; None until the first row was asked for."""
        return None if self.column_info is None else tuple(c.name for c in self.column_info)

    def _start(self, first: pb.StreamQueryResponse) -> list[str]:
        self.column_info = columns_of(first.columns)
        return [c.db_type for c in self.column_info]


class AsyncRowStream(_StreamState):
    """An async iterator of row tuples from ``AsyncClient.stream``.

    ``columns`` (names) is known once the first row was asked for;
    ``truncated`` is set, once the rows are exhausted, when ``max_rows`` cut
    the result short. ``async with`` it (or call :meth:`aclose`) to stop a
    stream before its end at once.
    """

    __slots__ = ("_rows",)

    def __init__(self, start: Callable[[], Awaitable[tuple[Any, pb.StreamQueryResponse]]]) -> None:
        super().__init__()
        self._rows = self._generate(start)

    async def _generate(
        self, start: Callable[[], Awaitable[tuple[Any, pb.StreamQueryResponse]]]
    ) -> AsyncGenerator[Row]:
        call, first = await start()
        try:
            types = self._start(first)
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                for row in message.rows:
                    yield from_row(row.values, types)
                if message.HasField("column_batch"):
                    for row in from_column_batch(message.column_batch, types):
                        yield row
                if message.HasField("stats"):
                    self.truncated = message.truncated
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Row:
        return await self._rows.__anext__()

    async def aclose(self) -> None:
        """Stops the stream (cancelling the call if it is still running)."""
        await self._rows.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RowStream(_StreamState):
    """An iterator of row tuples from ``Client.stream`` (see
    :class:`AsyncRowStream`); ``with`` it or call :meth:`close` to stop early."""

    __slots__ = ("_rows",)

    def __init__(self, start: Callable[[], tuple[Any, pb.StreamQueryResponse]]) -> None:
        super().__init__()
        self._rows = self._generate(start)

    def _generate(self, start: Callable[[], tuple[Any, pb.StreamQueryResponse]]) -> Generator[Row]:
        call, first = start()
        try:
            types = self._start(first)
            for message in call:
                for row in message.rows:
                    yield from_row(row.values, types)
                if message.HasField("column_batch"):
                    for row in from_column_batch(message.column_batch, types):
                        yield row
                if message.HasField("stats"):
                    self.truncated = message.truncated
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Row:
        return next(self._rows)

    def close(self) -> None:
        """Stops the stream (cancelling the call if it is still running)."""
        self._rows.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
