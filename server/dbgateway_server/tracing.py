"""OpenTelemetry traces, configured only through the standard ``OTEL_*``
environment variables and off unless they ask for traces.

Tracing is decided once, when the server starts (:func:`start_from_environment`):
while it is off, :data:`tracer` stays None and the call path does nothing but
test it, so a gateway without tracing pays nothing for it. The OpenTelemetry
packages (the ``otel`` extra) are imported only when tracing is on.

What is traced:

- a SERVER span per logical call, started and ended where the call's access
  log line is produced (:class:`~dbgateway_server.observability.Observability`),
  continuing the caller's W3C ``traceparent`` from the request metadata; a
  stream (``Transaction``, ``StreamQuery``) is one span from its first message
  to its last;
- a CLIENT span per statement sent to a database (each attempt of a retried
  call is its own span) with the database semantic conventions
  (:func:`database_span`); the SQL text in ``db.query.text`` is the normalized
  one, so no value, bound or inlined, reaches a span;
- retries and pool waits as events on the server span (:func:`event`).

We trace in our own call path rather than with opentelemetry-instrumentation-grpc:
its grpc.aio server interceptor breaks stream-stream methods such as
``Transaction`` ("'async for' requires an object with __aiter__ method, got
coroutine", open-telemetry/opentelemetry-python-contrib#3066), and an
interceptor sees gRPC calls, not the logical calls a session carries.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: The active tracer, or None while tracing is off (the default).
tracer: Tracer | None = None
_provider: TracerProvider | None = None

#: Metadata keys the W3C trace-context and baggage propagators read.
PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})

#: gRPC codes a server span reports as an error (the OpenTelemetry gRPC
#: conventions: failures of the server, not the caller's mistakes).
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class TracingError(RuntimeError):
    """The ``OTEL_*`` environment asks for something the server cannot do."""


def requested(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an exporter named in
    ``OTEL_TRACES_EXPORTER`` (other than ``none``) or an OTLP endpoint set,
    and the SDK not disabled with ``OTEL_SDK_DISABLED=true``."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[Any] = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporters.append(GrpcExporter())
            elif protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                exporters.append(HttpExporter())
            else:
                raise TracingError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported "
                    "(use grpc or http/protobuf)"
                )
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            raise TracingError(
                f"OTEL_TRACES_EXPORTER: {name!r} is not supported (use otlp, console or none)"
            )
    return exporters


def start_from_environment(env: Mapping[str, str] | None = None) -> bool:
    """Turns tracing on when the environment asks for it; returns whether it
    did. Sampling (``OTEL_TRACES_SAMPLER``), the resource (``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``), batching (``OTEL_BSP_*``), the exporter's
    endpoint, headers and certificates are read by the SDK from the same
    environment."""
    global tracer, _provider
    env = os.environ if env is None else env
    if not requested(env):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingError(
            f"OTEL_* asks for traces but OpenTelemetry is not installed ({exc}); "
            "install the otel extra: pip install 'dbgateway[otel]'"
        ) from None
    from dbgateway import __version__

    resource = Resource.create({"service.version": __version__})
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name the service when set;
    # otherwise it is "dbgateway", not the SDK's "unknown_service".
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "dbgateway"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    tracer = provider.get_tracer("dbgateway_server", __version__)
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans go to %s", env.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def shutdown() -> None:
    """Sends the spans still buffered and stops tracing."""
    global tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    tracer = None
    _provider = None


# -- spans -------------------------------------------------------------------


def start_server_span(
    service: str, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
) -> tuple[Span, object]:
    """Starts the SERVER span of a call, a child of the caller's trace context
    when the metadata carries one, and makes it current; returns it with the
    token :func:`end_server_span` needs. Only called while tracing is on."""
    from opentelemetry import context, propagate, trace

    assert tracer is not None
    carrier = {
        key: value
        for key, value in metadata or ()
        if key in PROPAGATION_KEYS and isinstance(value, str)
    }
    parent = propagate.extract(carrier) if carrier else None
    span = tracer.start_span(
        f"{service}/{method}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_server_span(
    span: Span, token: object, code: Any, reason: str, attributes: Mapping[str, Any]
) -> None:
    """Ends a call's span with its gRPC status and detaches it."""
    from opentelemetry import context
    from opentelemetry.trace import StatusCode

    span.set_attribute("rpc.grpc.status_code", code.value[0])
    for key, value in attributes.items():
        if value not in ("", None):
            span.set_attribute(key, value)
    if reason:
        span.set_attribute("error.type", reason)
    if code.name in _SERVER_ERRORS:
        span.set_status(StatusCode.ERROR, reason or code.name)
    span.end()
    with contextlib.suppress(ValueError, RuntimeError):
        context.detach(token)  # type: ignore[arg-type]


def event(name: str, attributes: Mapping[str, Any]) -> None:
    """Adds an event to the current span (the call's server span)."""
    from opentelemetry import trace

    trace.get_current_span().add_event(name, dict(attributes))


@contextlib.contextmanager
def database_span(operation: str, attributes: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """A CLIENT span (a child of the current one) around one statement sent to
    a database. The block fills the returned dict with what it learns
    (``db.response.status_code``, ``error.type``, rows); the span ends when the
    block does. It is never made current: nothing runs beneath it, and a
    stream's block spans many yields."""
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    assert tracer is not None
    namespace = attributes.get("db.namespace") or ""
    name = f"{operation} {namespace}".strip() if operation else str(namespace or "statement")
    outcome: dict[str, Any] = {}
    span = tracer.start_span(
        name,
        kind=trace.SpanKind.CLIENT,
        attributes={k: v for k, v in attributes.items() if v not in ("", None)},
    )
    try:
        yield outcome
    finally:
        for key, value in outcome.items():
            if value not in ("", None):
                span.set_attribute(key, value)
        if "error.type" in outcome:
            span.set_status(StatusCode.ERROR, str(outcome["error.type"]))
        span.end()
