"""The transaction RPCs of ``dbgateway.v1.DatabaseService``: the interactive
``Transaction`` stream, handle-based ``BeginTransaction`` / ``Commit`` /
``Rollback``, ``RunTransaction`` and ``ExecuteBatch``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from dbgateway.v1 import database_service_pb2 as pb

from ..call import Deadline
from ..errors import GatewayError, Reason, invalid_request
from ..gateway import Gateway
from ..resilience.retry import late_answer
from ..transactions import StatementCall, Transaction
from .calls import (
    Servicer,
    authorize_database,
    call_options,
    check_sql,
    current_scope,
    duration_seconds,
    read_preference,
    rpc,
    rpc_stream,
    statement_error,
    statement_result,
    stats,
    transaction_mode,
)


async def silent_after(
    requests: AsyncIterator[pb.TransactionRequest], idle: float
) -> AsyncIterator[pb.TransactionRequest]:
    """The stream's requests; ABORTED / TRANSACTION_EXPIRED once the client
    has sent nothing for ``idle`` seconds, so that a client that went silent
    does not hold a connection, its transaction and its locks forever."""
    iterator = aiter(requests)
    while True:
        try:
            async with asyncio.timeout(idle):
                request = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise GatewayError(
                Reason.TRANSACTION_EXPIRED,
                f"the Transaction stream sent nothing for {idle:g}s (stream_idle_timeout); "
                "its transaction was rolled back",
            ) from None
        yield request


def _misuse(message: str) -> GatewayError:
    return GatewayError(Reason.INVALID_TRANSACTION_STATE, message)


def _statement(
    statement: pb.Statement, field: str, context: grpc.aio.ServicerContext
) -> StatementCall:
    try:
        check_sql(statement.sql, statement.params)
    except GatewayError as exc:
        raise invalid_request(f"{field}.sql", exc.field_violations[0][1]) from None
    return StatementCall(statement.sql, statement.params, call_options(statement.options, context))


class TransactionRpcs(Servicer):
    """Mixed into the DatabaseService servicer."""

    _gateway: Gateway

    @rpc_stream
    async def Transaction(
        self,
        request_iterator: AsyncIterator[pb.TransactionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.TransactionResponse]:
        tx: Transaction | None = None
        idle = self.observability.config.stream_idle_timeout
        try:
            async for request in silent_after(request_iterator, idle):
                action = request.WhichOneof("action")
                if action == "begin":
                    if tx is not None:
                        raise _misuse("begin: the transaction has already begun")
                    options = request.begin.options
                    if options.HasField("idle_timeout"):
                        raise invalid_request(
                            "begin.options.idle_timeout",
                            "applies to BeginTransaction; the stream's own deadline bounds "
                            "a Transaction stream",
                        )
                    authorize_database(self, request.begin.database)
                    tx = await self._gateway.open_transaction(
                        request.begin.database,
                        transaction_mode(options),
                        Deadline(context.time_remaining()),
                        read_preference(options.read_preference, "begin.options.read_preference"),
                    )
                    yield pb.TransactionResponse(
                        begun=pb.TransactionResponse.Begun(transaction_id=tx.id)
                    )
                    continue
                if action is None:
                    raise invalid_request(
                        "action", "must be one of begin, statement, commit, rollback"
                    )
                if tx is None:
                    raise _misuse(f"{action}: the first message of a stream must be begin")
                if action == "statement":
                    call = _statement(request.statement, "statement", context)
                    try:
                        result = await tx.run(call, write=not call.options.max_rows)
                    except GatewayError as exc:
                        if tx.lost:
                            raise  # nothing more can run: end the stream with it
                        yield pb.TransactionResponse(result=statement_error(exc))
                        continue
                    yield pb.TransactionResponse(result=statement_result(result))
                elif action == "commit":
                    deadline = Deadline(context.time_remaining())
                    await tx.commit(deadline)
                    token = await tx.database.read_token(deadline)
                    yield pb.TransactionResponse(
                        committed=pb.TransactionResponse.Committed(read_token=token)
                    )
                    return
                else:
                    await tx.close()
                    yield pb.TransactionResponse(rolled_back=pb.TransactionResponse.RolledBack())
                    return
            if tx is not None:
                # The caller closed its side without committing.
                await tx.close()
                yield pb.TransactionResponse(rolled_back=pb.TransactionResponse.RolledBack())
        finally:
            # Cancelled, past its deadline, or failed: roll back, return the connection.
            if tx is not None:
                await tx.close()

    @rpc
    async def BeginTransaction(
        self, request: pb.BeginTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.BeginTransactionResponse:
        idle_timeout = None
        if request.options.HasField("idle_timeout"):
            idle_timeout = duration_seconds("options.idle_timeout", request.options.idle_timeout)
        scope = current_scope()
        budget = context.time_remaining()
        # The call's concurrency slot passes to the transaction, so open
        # transactions count toward max_concurrent_calls until they end.
        on_end = scope.slot.keep() if scope.slot is not None else None
        try:
            tx = await self._gateway.begin(
                request.database,
                transaction_mode(request.options),
                Deadline(budget),
                idle_timeout,
                scope.principal.name,
                on_end,
                read_preference(request.options.read_preference, "options.read_preference"),
            )
        except BaseException:
            if on_end is not None:
                on_end()
            raise
        if late_answer(budget, context.time_remaining()):
            # Its caller may give up before the answer arrives, and then
            # nobody knows the transaction's id: it would hold a connection
            # until its idle timeout. Ended here instead.
            await self._gateway.rollback(tx.id, request.database, scope.principal.name)
            raise GatewayError(
                Reason.STATEMENT_TIMEOUT,
                "the transaction began too close to the call's deadline for its "
                "answer to arrive in time; it was rolled back",
            )
        expire_time = timestamp_pb2.Timestamp()
        expire_time.FromDatetime(
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=tx.expires_at() - time.monotonic())
        )
        return pb.BeginTransactionResponse(transaction_id=tx.id, expire_time=expire_time)

    @rpc
    async def Commit(
        self, request: pb.CommitRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitResponse:
        token = await self._gateway.commit(
            request.transaction_id,
            request.database,
            Deadline(context.time_remaining()),
            current_scope().principal.name,
        )
        return pb.CommitResponse(read_token=token)

    @rpc
    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackResponse:
        await self._gateway.rollback(
            request.transaction_id, request.database, current_scope().principal.name
        )
        return pb.RollbackResponse()

    @rpc
    async def RunTransaction(
        self, request: pb.RunTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunTransactionResponse:
        if not request.statements:
            raise invalid_request("statements", "must not be empty")
        calls = [
            _statement(s, f"statements[{i}]", context) for i, s in enumerate(request.statements)
        ]
        deadline = Deadline(context.time_remaining())
        results, attempts = await self._gateway.run_transaction(
            request.database,
            calls,
            transaction_mode(request.options),
            deadline,
            request.max_attempts,
            read_preference(request.options.read_preference, "options.read_preference"),
        )
        return pb.RunTransactionResponse(
            results=[statement_result(r) for r in results],
            attempts=attempts,
            read_token=await self._gateway.read_token(request.database, deadline),
        )

    @rpc
    async def ExecuteBatch(
        self, request: pb.ExecuteBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteBatchResponse:
        check_sql(request.sql)
        for i, param_set in enumerate(request.param_sets):
            try:
                check_sql(request.sql, param_set.params)
            except GatewayError as exc:
                raise invalid_request(
                    f"param_sets[{i}].params", exc.field_violations[0][1]
                ) from None
        options = call_options(request.options, context)
        outcome = await self._gateway.execute_batch(
            request.database,
            request.sql,
            [s.params for s in request.param_sets],
            options,
            request.transaction_id,
            current_scope().principal.name,
        )
        reply = pb.ExecuteBatchResponse(stats=stats(outcome, 0), read_token=outcome.read_token)
        if outcome.rows_affected is not None:
            reply.rows_affected = outcome.rows_affected
        return reply
