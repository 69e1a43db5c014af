"""The two pieces of protobuf's wire format that session framing writes by
hand (client and server both): a message built from elements serialized
once, instead of serializing them again inside their container."""

from __future__ import annotations

__all__ = ["length_delimited", "varint"]


def varint(n: int) -> bytes:
    """``n`` (not negative) as a base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """Field ``field`` of wire type 2 (a message, bytes or packed list)."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload
