"""Carries the caller's OpenTelemetry trace context to the gateway.

When ``opentelemetry-api`` is installed (the ``otel`` extra) and a span is
current, every call sends it as W3C ``traceparent`` / ``tracestate`` (and
``baggage``) metadata through the globally configured propagator, so the
gateway's spans join the caller's trace. Without the package, or without a
current span, the metadata is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable

Metadata = tuple[tuple[str, str], ...]


def _untraced(metadata: Metadata) -> Metadata:
    return metadata


def _tracing_available() -> Callable[[Metadata], Metadata]:
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return _untraced

    def traced(metadata: Metadata) -> Metadata:
        if not trace.get_current_span().get_span_context().is_valid:
            return metadata
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return (*metadata, *carrier.items()) if carrier else metadata

    return traced


#: ``metadata`` plus the current trace context, when there is one. Decided at
#: import: without OpenTelemetry installed it is the identity.
with_trace_context: Callable[[Metadata], Metadata] = _tracing_available()
