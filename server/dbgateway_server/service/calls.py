"""What every servicer method shares: turning failures into gRPC statuses,
and request options into core call options."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from dbgateway.v1 import database_service_pb2 as pb

from ..errors import GatewayError, Reason, invalid_request, to_rpc_status
from ..gateway import CallOptions, Deadline, Outcome
from ..observability import REQUEST_ID_HEADER, Call, Observability

log = logging.getLogger("dbgateway_server.service")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]

#: Longest SQL text accepted (bytes of UTF-8).
MAX_SQL_LENGTH = 1_000_000


def request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:128]
    return uuid.uuid4().hex


async def abort(context: grpc.aio.ServicerContext, error: GatewayError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))


def begin_call(
    observability: Observability, method: str, request: Any, context: grpc.aio.ServicerContext
) -> Call:
    """Starts observing a call from what any statement request carries
    (``database``, ``sql``, ``params``, ``options.tag``; absent ones stay empty)."""
    return observability.begin(
        method,
        request_id=request_id(context),
        database=getattr(request, "database", None),
        tag=getattr(getattr(request, "options", None), "tag", ""),
        sql=getattr(request, "sql", ""),
        params=len(getattr(request, "params", ())),
    )


def record_response(call: Call, response: Any) -> None:
    """Takes rows and attempts from a response's ``stats``, when it has them."""
    stats = getattr(response, "stats", None)
    if stats is not None:
        call.rows = getattr(stats, "rows", 0)
        call.attempts = getattr(stats, "attempts", 0) or 1


def rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Wraps a servicer method: a GatewayError becomes its status with details;
    anything unexpected is logged with a request id and answered INTERNAL with
    that id, never with a traceback. Every call is observed (metrics, access
    log, slow-query log) and its request id echoed in ``x-request-id``; the
    servicer provides ``self.observability``."""
    method = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        observability: Observability = self.observability
        call = begin_call(observability, method, request, context)
        try:
            await context.send_initial_metadata(((REQUEST_ID_HEADER, call.request_id),))
            response = await handler(self, request, context)
            record_response(call, response)
            return response
        except GatewayError as exc:
            call.failed(exc.code, exc.reason)
            await abort(context, exc)
        except asyncio.CancelledError:
            call.failed(grpc.StatusCode.CANCELLED)
            raise
        except grpc.aio.AbortError:
            call.failed(grpc.StatusCode.UNKNOWN)
            raise
        except Exception:
            rid = call.request_id
            log.exception("unexpected error in %s (request id %s)", method, rid)
            error = GatewayError(
                Reason.INTERNAL,
                f"internal error; the server log has the details under request id {rid}",
                metadata={"request_id": rid},
            )
            call.failed(error.code, error.reason)
            await abort(context, error)
        finally:
            observability.end(call)
        raise AssertionError("abort returned")  # pragma: no cover

    return wrapper


def call_options(options: pb.RequestOptions, context: grpc.aio.ServicerContext) -> CallOptions:
    timeout: float | None = None
    if options.HasField("timeout"):
        t = options.timeout
        if t.seconds < 0 or t.nanos < 0 or (t.seconds == 0 and t.nanos == 0):
            raise invalid_request("options.timeout", "must be positive")
        timeout = t.seconds + t.nanos / 1e9
    return CallOptions(
        deadline=Deadline.sooner(context.time_remaining(), timeout),
        max_rows=options.max_rows,
        idempotent=options.idempotent,
        tag=options.tag,
    )


def check_sql(sql: str) -> None:
    if not sql.strip():
        raise invalid_request("sql", "must not be empty")
    if len(sql) > MAX_SQL_LENGTH:
        raise invalid_request("sql", f"longer than {MAX_SQL_LENGTH} characters")


def stats(outcome: Outcome, rows: int) -> pb.ExecutionStats:
    elapsed = duration_pb2.Duration()
    elapsed.FromNanoseconds(int(outcome.elapsed * 1e9))
    return pb.ExecutionStats(elapsed=elapsed, rows=rows, attempts=outcome.attempts)
