"""``dbgateway.v1.DatabaseService``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc

from ..backends.base import ExecResult, ResultSet
from ..call import current_call
from ..errors import GatewayError, Reason
from ..gateway import Gateway
from ..observability import Observability
from ..security import Guard
from .calls import call_options, check_sql, current_scope, elapsed_since, rpc, stats
from .session import SessionRegistry
from .subscriptions import SubscriptionRpcs
from .transactions import TransactionRpcs


class DatabaseServicer(TransactionRpcs, SubscriptionRpcs, pb_grpc.DatabaseServiceServicer):
    def __init__(self, gateway: Gateway, observability: Observability, guard: Guard) -> None:
        self._gateway = gateway
        self.observability = observability
        self.guard = guard
        #: The open Session streams, which a drain ends.
        self.sessions = SessionRegistry(observability.metrics)

    async def Session(
        self,
        request_iterator: AsyncIterator[pb.SessionRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Many logical calls on one stream; each runs through the servicer
        method of its unary RPC (see :mod:`.session`)."""
        await self.sessions.serve(self, context, self.observability.config, self.guard)

    @rpc
    async def Query(
        self, request: pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryResponse:
        check_sql(request.sql, request.params)
        options = call_options(request.options, context, columnar_ok=True)
        outcome = await self._gateway.query(
            request.database,
            request.sql,
            request.params,
            options,
            request.transaction_id,
            current_scope().principal.name,
        )
        result = outcome.result
        assert isinstance(result, ResultSet)
        return pb.QueryResponse(
            columns=result.columns,
            rows=result.rows,
            truncated=result.truncated,
            stats=stats(outcome, result.row_count),
            column_batches=result.batches,
        )

    @rpc
    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteResponse:
        check_sql(request.sql, request.params)
        options = call_options(request.options, context)
        outcome = await self._gateway.execute(
            request.database,
            request.sql,
            request.params,
            options,
            request.transaction_id,
            current_scope().principal.name,
        )
        result = outcome.result
        assert isinstance(result, ExecResult)
        response = pb.ExecuteResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            stats=stats(outcome, len(result.rows)),
            read_token=outcome.read_token,
        )
        if result.last_insert_id is not None:
            response.last_insert_id = result.last_insert_id
        return response

    @rpc
    async def StreamQuery(
        self, request: pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> None:
        check_sql(request.sql, request.params)
        options = call_options(request.options, context, columnar_ok=True)
        # Each write waits until gRPC has taken the message (flow control), so
        # a slow reader holds back the next fetch; a cancel lands in an await
        # inside the block, whose exit stops the query on the database. A
        # reader that takes nothing for stream_idle_timeout is ended the same
        # way, so that it cannot hold a connection and its locks forever.
        idle = self.observability.config.stream_idle_timeout

        async def write(message: pb.StreamQueryResponse) -> None:
            try:
                async with asyncio.timeout(idle):
                    await context.write(message)
            except TimeoutError:
                raise GatewayError(
                    Reason.STREAM_STALLED,
                    f"the client took no message for {idle:g}s (stream_idle_timeout); "
                    "the query was stopped",
                ) from None

        async with self._gateway.stream(
            request.database,
            request.sql,
            request.params,
            options,
            request.transaction_id,
            current_scope().principal.name,
        ) as result:
            try:
                await write(pb.StreamQueryResponse(columns=result.columns))
                if options.columnar:
                    async for batch in result.batches(v2=options.columns_v2):
                        await write(pb.StreamQueryResponse(column_batch=batch))
                else:
                    async for chunk in result.chunks():
                        await write(pb.StreamQueryResponse(rows=chunk))
            finally:
                # The access log and rows_returned count what was sent, also
                # when the stream ends early.
                call = current_call()
                if call is not None:
                    call.rows = result.rows
        await write(
            pb.StreamQueryResponse(
                truncated=result.truncated,
                stats=pb.ExecutionStats(
                    elapsed=elapsed_since(result.started), rows=result.rows, attempts=1
                ),
            )
        )
