"""Client configuration: TLS, retry policy, keepalive, and the channel options
and gRPC service config they become."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["ClientConfig", "KeepaliveConfig", "RetryPolicy", "TLSConfig"]

#: The largest message the server accepts (its grpc.max_receive_message_length).
SERVER_MAX_RECEIVE_BYTES = 4 * 1024 * 1024
#: The server allows client pings no more often than this (its
#: grpc.http2.min_recv_ping_interval_without_data_ms); pinging faster gets the
#: connection closed with ENHANCE_YOUR_CALM.
SERVER_MIN_PING_INTERVAL = 10.0

#: The read-only methods gRPC may retry by itself: nothing was written, so a
#: second attempt is always safe. Writes are retried by the client only when
#: safe (see RetryPolicy).
_READ_METHODS = (
    {"service": "dbgateway.v1.DatabaseService", "method": "Query"},
    {"service": "dbgateway.v1.DatabaseService", "method": "StreamQuery"},
    {"service": "grpc.health.v1.Health", "method": "Check"},
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS towards the gateway.

    ``ca_file`` is the PEM bundle that signed the server's certificate (the
    system roots when omitted); ``cert_file`` and ``key_file`` together are the
    client's own certificate for mutual TLS; ``server_name`` overrides the name
    checked against the server certificate.
    """

    ca_file: Path | str | None = None
    cert_file: Path | str | None = None
    key_file: Path | str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLSConfig: cert_file and key_file go together (mutual TLS)")

    def credentials(self) -> Any:
        import grpc

        def read(path: Path | str | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of UNAVAILABLE, the one code that means "not done, try again".

    The channel's own gRPC retry (with retry throttling, so a struggling server
    is not stormed) re-sends reads with exponential backoff from
    ``initial_backoff`` to ``max_backoff``. gRPC cannot read the server's
    ``RetryInfo``, so when a call still fails UNAVAILABLE and the server said
    how long to wait (its circuit breaker is open), the client waits at least
    that long, within the call's deadline, and tries again, up to
    ``max_attempts`` calls in all. A write is retried by the client only when
    the caller marked it ``idempotent`` or the server reports that it never
    reached the database (``CIRCUIT_OPEN``). A call a shutting-down server
    refused before running it (``SERVER_DRAINING`` with ``not_run``) is sent
    again after the same backoff, write or not, up to 8 tries in all, since
    a channel may reach the draining server again until its drain ends. No
    other code is ever retried.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    #: gRPC retry throttling: retries stop while tokens < max_tokens / 2; each
    #: failure costs 1 token, each success gives back token_ratio.
    throttle_max_tokens: int = 10
    throttle_token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 5:
            raise ValueError("RetryPolicy.max_attempts must be 1..5 (gRPC's own limit is 5)")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("RetryPolicy: need 0 < initial_backoff <= max_backoff")
        if self.backoff_multiplier < 1:
            raise ValueError("RetryPolicy.backoff_multiplier must be at least 1")
        if not 0 < self.throttle_max_tokens <= 1000 or self.throttle_token_ratio <= 0:
            raise ValueError("RetryPolicy: throttle_max_tokens 1..1000, token_ratio > 0")

    def backoff(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        growth = self.backoff_multiplier ** (attempt - 1)
        return min(self.initial_backoff * growth, self.max_backoff)

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config (retry and throttling) for the channel."""
        method_config: dict[str, Any] = {"name": list(_READ_METHODS)}
        if self.max_attempts > 1:
            method_config["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff}s",
                "maxBackoff": f"{self.max_backoff}s",
                "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        return {
            "methodConfig": [method_config],
            "retryThrottling": {
                "maxTokens": self.throttle_max_tokens,
                "tokenRatio": self.throttle_token_ratio,
            },
        }


@dataclass(frozen=True, slots=True)
class KeepaliveConfig:
    """HTTP/2 keepalive pings, so an idle channel notices a dead peer (and
    NATs and load balancers keep it open). ``time`` must not be shorter than
    the 10 s the server allows between pings."""

    time: float = 30.0
    timeout: float = 10.0
    permit_without_calls: bool = True

    def __post_init__(self) -> None:
        if self.time < SERVER_MIN_PING_INTERVAL:
            raise ValueError(
                f"KeepaliveConfig.time must be at least {SERVER_MIN_PING_INTERVAL:g} s: "
                "the server closes connections that ping more often"
            )
        if self.timeout <= 0:
            raise ValueError("KeepaliveConfig.timeout must be positive")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything about the channel except where it goes.

    ``max_send_bytes`` defaults to what the server accepts, so an oversized
    request fails at once on the client with a clear error;
    ``max_receive_bytes`` bounds a single response (use ``stream`` for larger
    reads).
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    keepalive: KeepaliveConfig = field(default_factory=KeepaliveConfig)
    max_send_bytes: int = SERVER_MAX_RECEIVE_BYTES
    max_receive_bytes: int = 64 * 1024 * 1024
    user_agent: str = f"dbgateway-python/{__version__}"

    def __post_init__(self) -> None:
        if self.max_send_bytes <= 0 or self.max_receive_bytes <= 0:
            raise ValueError("ClientConfig: message size limits must be positive")

    def channel_options(self) -> list[tuple[str, Any]]:
        """Options for ``grpc.(aio.)(secure|insecure)_channel``."""
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(self.retry.service_config())),
            ("grpc.keepalive_time_ms", int(self.keepalive.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive.permit_without_calls)),
            # Keep pinging an idle connection (the default stops after two).
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            ("grpc.primary_user_agent", self.user_agent),
        ]
