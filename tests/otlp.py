"""A real OTLP/gRPC trace receiver: the collector end of an exporter, kept in
memory so tests can read the spans a gateway sent (and the bench can give a
traced gateway somewhere to send them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One span as the collector received it, attributes decoded."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    start: int
    end: int
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def is_server(self) -> bool:
        return self.kind == trace_pb2.Span.SPAN_KIND_SERVER

    @property
    def is_client(self) -> bool:
        return self.kind == trace_pb2.Span.SPAN_KIND_CLIENT

    @property
    def failed(self) -> bool:
        return self.status_code == trace_pb2.Status.STATUS_CODE_ERROR


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """The OTLP trace service on a free loopback port."""

    def __init__(self, *, keep: bool = True) -> None:
        #: Keep the spans received (tests); otherwise only count them (the bench).
        self.keep = keep
        self.received = 0
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Condition()
        self.exports = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The OTEL_* environment that sends a gateway's spans here, quickly."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "dbgateway-under-test",
            **extra,
        }

    def _take(self, request: Any) -> None:
        if not self.keep:
            count = sum(
                len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
            )
            with self._lock:
                self.exports += 1
                self.received += count
            return
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in s.events
                            ],
                            status_code=s.status.code,
                            start=s.start_time_unix_nano,
                            end=s.end_time_unix_nano,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.exports += 1
            self.received += len(received)
            self._spans.extend(received)
            self._lock.notify_all()

    @property
    def span_count(self) -> int:
        with self._lock:
            return self.received

    def wait_for(
        self,
        trace_id: str,
        done: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 30.0,
    ) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once ``done`` says they are all there."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                spans = [s for s in self._spans if s.trace_id == trace_id]
                if done(spans):
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"spans of trace {trace_id} incomplete after {timeout}s: "
                        + repr([(s.name, s.attributes) for s in spans])
                    )
                self._lock.wait(left)

    def find(
        self, predicate: Callable[[ReceivedSpan], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """The spans ``predicate`` picks, once there is at least one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [s for s in self._spans if predicate(s)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such span after {timeout}s")
                self._lock.wait(left)


@contextmanager
def otlp_receiver(*, keep: bool = True) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(keep=keep)
    receiver._server.start()
    try:
        yield receiver
    finally:
        receiver._server.stop(0)
