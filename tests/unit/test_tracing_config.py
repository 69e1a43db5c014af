"""When the OTEL_* environment turns tracing on, and what it refuses."""

from __future__ import annotations

import pytest

from dbgateway_server import tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "orders"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_the_environment_asks_for_traces(env, on):
    assert tracing.requested(env) is on


def test_off_environment_leaves_the_tracer_unset():
    assert tracing.start_from_environment({}) is False
    assert tracing.tracer is None


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_unsupported_exporter_settings_fail_at_start_naming_the_variable(env, key):
    with pytest.raises(tracing.TracingError, match=key):
        tracing.start_from_environment(env)
    tracing.shutdown()
    assert tracing.tracer is None
