"""The two messages of ``grpc.health.v1.Health/Check``, by hand.

The client depends only on grpcio, protobuf and grpcio-status; the generated
health stubs live in grpcio-health-checking, a server-side dependency. The
messages are one field each, so their wire format is written out here.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CHECK_METHOD", "HealthStatus", "decode_response", "encode_request"]

CHECK_METHOD = "/grpc.health.v1.Health/Check"


class HealthStatus(StrEnum):
    """``HealthCheckResponse.ServingStatus``."""

    UNKNOWN = "UNKNOWN"
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"


_BY_NUMBER = {0: HealthStatus.UNKNOWN, 1: HealthStatus.SERVING, 2: HealthStatus.NOT_SERVING,
              3: HealthStatus.SERVICE_UNKNOWN}  # fmt: skip


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint in HealthCheckResponse")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def encode_request(service: str) -> bytes:
    """``HealthCheckRequest{service = 1}``."""
    if not service:
        return b""
    raw = service.encode()
    return b"\x0a" + _varint(len(raw)) + raw


def decode_response(data: bytes) -> HealthStatus:
    """``HealthCheckResponse{status = 1}``; unknown fields are skipped."""
    pos, status = 0, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
            if number == 1:
                status = value
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} in HealthCheckResponse")
    return _BY_NUMBER.get(status, HealthStatus.UNKNOWN)
