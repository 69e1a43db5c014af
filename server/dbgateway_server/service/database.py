"""``dbgateway.v1.DatabaseService``."""

from __future__ import annotations

import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc

from ..backends.base import ExecResult, ResultSet
from ..gateway import Gateway
from ..observability import Observability
from .calls import call_options, check_sql, rpc, stats


class DatabaseServicer(pb_grpc.DatabaseServiceServicer):
    def __init__(self, gateway: Gateway, observability: Observability) -> None:
        self._gateway = gateway
        self.observability = observability

    @rpc
    async def Query(
        self, request: pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryResponse:
        check_sql(request.sql)
        options = call_options(request.options, context)
        outcome = await self._gateway.query(request.database, request.sql, request.params, options)
        result = outcome.result
        assert isinstance(result, ResultSet)
        return pb.QueryResponse(
            columns=result.columns,
            rows=result.rows,
            truncated=result.truncated,
            stats=stats(outcome, len(result.rows)),
        )

    @rpc
    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteResponse:
        check_sql(request.sql)
        options = call_options(request.options, context)
        outcome = await self._gateway.execute(
            request.database, request.sql, request.params, options
        )
        result = outcome.result
        assert isinstance(result, ExecResult)
        response = pb.ExecuteResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            stats=stats(outcome, len(result.rows)),
        )
        if result.last_insert_id is not None:
            response.last_insert_id = result.last_insert_id
        return response
