"""Handle-based transactions across gateway replicas and worker processes.

A handle-based transaction holds a database connection in the one process
that began it. Behind a round-robin load balancer (or with ``--workers N``,
where the kernel spreads connections over the workers) the next call carrying
its id may reach any process, so every id names its owner and any other
process forwards the call there and returns the owner's answer.

An id is ``RANDOM.OWNER.SIGNATURE``: 192 random bits, the owner
(``HOST:PORT`` of the replica as its peers dial it, plus ``~i`` for worker
``i``) and an HMAC-SHA256 of both under the cluster secret. A caller cannot
forge an owner without the secret, so the gateway never dials an address a
caller chose: an id whose signature is wrong, or whose owner is not a known
peer, is NOT_FOUND and nothing is dialled. An owner that cannot be reached
gives UNAVAILABLE / TRANSACTION_OWNER_UNAVAILABLE for every call on it: the
transaction died with that process, and its database rolls it back when the
connection drops.

A forwarded call carries the caller's own metadata (its bearer token above
all, so the owner authorizes the same principal), the caller's remaining
deadline, and an ``x-dbgateway-forwarded`` header signed with the secret, by
which peers recognise each other. A call is forwarded at most once between
replicas and once more to a worker of the owning replica, so a stale or
inconsistent peer list can never make calls bounce.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2

from dbgateway.v1 import database_service_pb2 as pb

from .config import MAX_MESSAGE_BYTES, Config
from .errors import ERROR_DOMAIN, GatewayError, Reason

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-dbgateway-forwarded"
#: Environment variable through which ``--workers N`` hands its workers their shared secret.
WORKER_SECRET_ENV = "DBGATEWAY_WORKER_SECRET"
#: How long a ``dns:///`` peer list is trusted before it is resolved again.
DNS_TTL = 5.0
_SERVICE = pb.DESCRIPTOR.services_by_name["DatabaseService"]
_SIGNATURE_BYTES = 18
#: Metadata a forwarded call must not repeat: gRPC's own, and the hop header.
_HOP_HEADERS = frozenset({FORWARDED_HEADER, "user-agent", "te", "content-type"})
_RELAYED_TRAILERS = ("grpc-status-details-bin", "grpc-retry-pushback-ms")


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that holds a transaction: a replica (``node``, empty in a
    cluster of one) and, with ``--workers N``, one of its workers."""

    node: str = ""
    worker: int | None = None

    def encode(self) -> str:
        return self.node if self.worker is None else f"{self.node}~{self.worker}"

    @classmethod
    def decode(cls, text: str) -> Owner | None:
        node, sep, worker = text.rpartition("~")
        if not sep:
            return cls(text)
        return cls(node, int(worker)) if worker.isdigit() else None

    def __str__(self) -> str:
        where = self.node or "this replica"
        return where if self.worker is None else f"{where}, worker {self.worker}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TransactionIds:
    """Issues this process's transaction ids and reads any peer's."""

    __slots__ = ("_key", "owner")

    def __init__(self, secret: str | bytes, owner: Owner) -> None:
        self._key = secret.encode("utf-8") if isinstance(secret, str) else secret
        self.owner = owner

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).digest()
        return _b64(digest[:_SIGNATURE_BYTES])

    def new(self) -> str:
        """A fresh, unguessable id owned by this process."""
        body = f"{secrets.token_urlsafe(24)}.{_b64(self.owner.encode().encode('utf-8'))}"
        return f"{body}.{self._sign(body)}"

    def owner_of(self, transaction_id: str) -> Owner | None:
        """The owner an id names, or None when it is not an id signed with
        this cluster's secret (malformed, altered, or from elsewhere)."""
        random_part, _, rest = transaction_id.partition(".")
        owner_part, _, signature = rest.partition(".")
        if not (random_part and signature):
            return None
        body = f"{random_part}.{owner_part}"
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        try:
            return Owner.decode(_unb64(owner_part).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None

    def hop(self, hops: int, transaction_id: str) -> str:
        """The ``x-dbgateway-forwarded`` value of a call forwarded ``hops`` times."""
        return f"{hops}.{self._sign(f'forwarded:{hops}:{transaction_id}')}"

    def hops(self, value: str, transaction_id: str) -> int | None:
        """How often a call was forwarded, from its header; None when the
        header was not signed by a peer."""
        count, _, _ = value.partition(".")
        if not count.isdigit():
            return None
        if not hmac.compare_digest(self.hop(int(count), transaction_id), value):
            return None
        return int(count)


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class ForwardedFailure(Exception):
    """The owner answered a forwarded call with an error: the caller gets
    exactly that status (code, message, details)."""

    def __init__(self, status: _Status, reason: str) -> None:
        super().__init__(status.details)
        self.status = status
        self.reason = reason


def _owner_answer(error: grpc.aio.AioRpcError) -> ForwardedFailure | None:
    """The owner's own error, when ``error`` carries a dbgateway ErrorInfo (a
    transport failure on the way carries none)."""
    trailers = tuple(
        (key, value) for key, value in error.trailing_metadata() or () if key in _RELAYED_TRAILERS
    )
    for key, value in trailers:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return ForwardedFailure(
                    _Status(error.code(), error.details() or "", trailers), info.reason
                )
    return None


class Forwarding:
    """Decides where a call on a transaction id is served, and forwards it."""

    def __init__(
        self,
        ids: TransactionIds,
        *,
        peers: Sequence[str] = (),
        dns_name: str = "",
        workers: Mapping[int, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
        max_request_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.ids = ids
        self._peers = frozenset(peers)
        self._dns_name = dns_name
        self._resolved: frozenset[str] = frozenset()
        self._resolved_at = -DNS_TTL
        self._workers = dict(workers or {})
        self._credentials = credentials
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", max_request_bytes),
        ]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def for_process(
        cls, config: Config, worker: tuple[int, int] | None, worker_dir: str
    ) -> Forwarding:
        """The forwarding of one server process: a replica of ``[cluster]``
        (if configured), and worker ``i`` of ``N`` (if ``worker``)."""
        cluster = config.cluster
        index = worker[0] if worker is not None else None
        sockets: dict[int, str] = {}
        if worker is not None and worker_dir:
            sockets = {i: worker_socket(worker_dir, i) for i in range(worker[1])}
        if cluster is not None:
            secret: str = cluster.secret
        else:
            secret = os.environ.get(WORKER_SECRET_ENV, "") or secrets.token_urlsafe(32)
        ids = TransactionIds(secret, Owner(cluster.advertise if cluster else "", index))
        credentials = None
        server = config.server
        if server.tls and cluster is not None:
            ca_file = cluster.tls_ca or server.tls_client_ca
            # Under mutual TLS a peer is a client like any other: it shows its
            # [cluster] certificate, or the server's own.
            cert_file, key_file = (
                (cluster.tls_cert or server.tls_cert, cluster.tls_key or server.tls_key)
                if server.tls_client_ca
                else ("", "")
            )
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(ca_file).read_bytes() if ca_file else None,
                private_key=Path(key_file).read_bytes() if key_file else None,
                certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
            )
        return cls(
            ids,
            peers=() if cluster is None or cluster.dns_name else cluster.peers,
            dns_name=cluster.dns_name if cluster else "",
            workers=sockets,
            credentials=credentials,
            server_name=cluster.tls_server_name if cluster else "",
            max_request_bytes=server.max_request_bytes,
        )

    def new_transaction_id(self) -> str:
        return self.ids.new()

    async def _known(self, node: str) -> bool:
        if node in self._peers:
            return True
        if not self._dns_name:
            return False
        now = time.monotonic()
        if now - self._resolved_at >= DNS_TTL:
            host, _, port = self._dns_name.rpartition(":")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, int(port))
            except OSError as exc:
                log.warning("cannot resolve cluster peers %s: %s", self._dns_name, exc)
                infos = []
            hosts = {str(info[4][0]) for info in infos}
            self._resolved = frozenset(
                f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in hosts
            )
            self._resolved_at = now
        return node in self._resolved

    async def route(
        self,
        transaction_id: str,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        *,
        method: str,
    ) -> tuple[str, int] | None:
        """Where a call on ``transaction_id`` is served: None for here, else
        the address to forward it to and how often it will have been forwarded.
        NOT_FOUND for an id no peer of this cluster issued."""
        hops = 0
        for key, value in metadata or ():
            if key == FORWARDED_HEADER:
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                counted = self.ids.hops(text, transaction_id)
                if counted is None:
                    raise GatewayError(
                        Reason.UNAUTHENTICATED,
                        f"{FORWARDED_HEADER} is not signed with this cluster's secret",
                    )
                hops = counted
        owner = self.ids.owner_of(transaction_id)
        me = self.ids.owner
        if owner is None:
            raise _not_found(transaction_id, "it was not issued by this gateway cluster")
        if owner.node != me.node:
            if hops > 0:
                # A peer sent it here, but it is not ours: the peers disagree
                # about who is who; answering beats bouncing.
                raise _not_found(transaction_id, f"its owner {owner} is not this replica")
            if not await self._known(owner.node):
                raise _not_found(transaction_id, f"its owner {owner.node} is not a known peer")
            return owner.node, hops + 1
        if owner.worker != me.worker:
            target = self._workers.get(owner.worker) if owner.worker is not None else None
            if target is None or hops > 1:
                raise _not_found(transaction_id, f"its owner ({owner}) is not a process here")
            return target, hops + 1
        return None

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            if self._credentials is not None and not target.startswith("unix:"):
                channel = grpc.aio.secure_channel(target, self._credentials, self._options)
            else:
                channel = grpc.aio.insecure_channel(target, self._options)
            self._channels[target] = channel
        return channel

    def _call_metadata(
        self, context: grpc.aio.ServicerContext, transaction_id: str, hops: int
    ) -> list[tuple[str, str | bytes]]:
        kept = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key not in _HOP_HEADERS and not key.startswith((":", "grpc-"))
        ]
        kept.append((FORWARDED_HEADER, self.ids.hop(hops, transaction_id)))
        return kept

    def _failure(self, error: grpc.aio.AioRpcError, target: str, transaction_id: str) -> Exception:
        answer = _owner_answer(error)
        # An owner that is shutting down takes no call on its transactions
        # over a new connection (its drain listener answers): as lost as one
        # that is gone, and sending the call again would not help.
        draining = answer is not None and answer.reason == Reason.SERVER_DRAINING.value
        if answer is not None and not draining:
            return answer
        if draining or error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
            return GatewayError(
                Reason.TRANSACTION_OWNER_UNAVAILABLE,
                f"the gateway process that holds transaction {transaction_id[:8]}... "
                f"({target}) cannot be reached: {error.details()}; the transaction is lost "
                "and its database rolls it back",
                metadata={"owner": target},
            )
        return ForwardedFailure(_Status(error.code(), error.details() or "", ()), "")

    async def serve(
        self,
        target: tuple[str, int],
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """Forwards a call whose servicer answers by return value (unary) or by
        ``context.write`` (server streaming): the same, with the owner's answer."""
        if not _SERVICE.methods_by_name[method].server_streaming:
            return await self.unary(target, method, request, context)
        async for message in self.stream(target, method, request, context):
            await context.write(message)
        return None

    async def unary(
        self,
        target: tuple[str, int],
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """The owner's answer to ``request`` (a ``DatabaseService`` unary call)."""
        address, hops = target
        transaction_id = request.transaction_id
        multicallable = self._channel(address).unary_unary(
            f"/{_SERVICE.full_name}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=_response_type(method).FromString,
        )
        try:
            return await multicallable(
                request,
                timeout=context.time_remaining(),
                metadata=self._call_metadata(context, transaction_id, hops),
            )
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc, address, transaction_id) from None

    async def stream(
        self,
        target: tuple[str, int],
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        """The owner's messages for ``request`` (a server-streaming call)."""
        address, hops = target
        transaction_id = request.transaction_id
        multicallable = self._channel(address).unary_stream(
            f"/{_SERVICE.full_name}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=_response_type(method).FromString,
        )
        call = multicallable(
            request,
            timeout=context.time_remaining(),
            metadata=self._call_metadata(context, transaction_id, hops),
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc, address, transaction_id) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


def worker_socket(directory: str, index: int) -> str:
    """The private address worker ``index`` serves forwarded calls on."""
    return f"unix:{directory}/worker-{index}.sock"


def _response_type(method: str) -> Any:
    return getattr(pb, _SERVICE.methods_by_name[method].output_type.name)


def _not_found(transaction_id: str, why: str) -> GatewayError:
    return GatewayError(
        Reason.TRANSACTION_NOT_FOUND,
        f"no open transaction {transaction_id[:8]}... ({why})",
    )
