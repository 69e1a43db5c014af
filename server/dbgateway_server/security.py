"""Who is calling and what it may do: bearer tokens -> principals -> rights.

Every DatabaseService and AdminService call passes through :class:`Guard`
(from the ``@rpc`` decorators of ``service/calls.py``); health and reflection
do not, so orchestrators and grpcurl can always probe and list.

With no ``[[principals]]`` configured every caller is :data:`ANONYMOUS`, with
every right: the zero-setup loopback default. Otherwise a call needs
``authorization: Bearer <token>`` whose SHA-256 matches a principal's
``token_sha256`` (compared in constant time); rights are per database,
``read`` or ``write``, plus ``admin`` for AdminService.

"read" is not guessed from the SQL: a read principal's statements run in a
read-only transaction, so the database itself refuses a write
(PERMISSION_DENIED / READ_ONLY).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .config import Access, Config
from .errors import GatewayError, Reason

AUTHORIZATION_HEADER = "authorization"
#: The principal of every caller when no principals are configured.
ANONYMOUS_NAME = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    #: Database name -> right; ``None`` means every database, with write.
    databases: Mapping[str, Access] | None = field(default_factory=dict)
    admin: bool = False
    #: PostgreSQL role its calls run as; empty: the DSN's own.
    postgres_role: str = ""

    def access(self, database: str) -> Access | None:
        if self.databases is None:
            return Access.WRITE
        return self.databases.get(database)


ANONYMOUS = Principal(ANONYMOUS_NAME, databases=None, admin=True)


def token_sha256(token: str) -> str:
    """The hex digest a principal's ``token_sha256`` holds."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(Reason.UNAUTHENTICATED, message)


def _denied(message: str, **metadata: str) -> GatewayError:
    return GatewayError(Reason.PERMISSION_DENIED, message, metadata=metadata)


class Guard:
    """Authentication, authorization and per-principal concurrency."""

    __slots__ = ("_by_digest", "_in_flight", "max_concurrent_calls", "principals")

    def __init__(self, config: Config) -> None:
        self._in_flight: dict[str, int] = {}
        self.update(config)

    def update(self, config: Config) -> None:
        """Takes the principals and limits of a (re)loaded configuration. A
        token removed from it is refused from the next call on; calls already
        authenticated finish."""
        self.principals = tuple(
            Principal(p.name, dict(p.databases), p.admin, p.postgres_role)
            for p in config.principals
        )
        self._by_digest = [
            (p.token_sha256.encode("ascii"), principal)
            for p, principal in zip(config.principals, self.principals, strict=True)
        ]
        self.max_concurrent_calls = config.server.max_concurrent_calls

    @property
    def enabled(self) -> bool:
        return bool(self.principals)

    def principal_names(self) -> list[str]:
        """Every name a principal label can take (bounded by the config)."""
        return [p.name for p in self.principals] or [ANONYMOUS_NAME]

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The caller named by the bearer token in ``metadata``: UNAUTHENTICATED
        when it is missing or matches no principal."""
        if not self.enabled:
            return ANONYMOUS
        values = [v for k, v in metadata or () if k == AUTHORIZATION_HEADER]
        if not values:
            raise _unauthenticated("missing authorization metadata: send 'Bearer <token>'")
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("authorization must be 'Bearer <token>'")
        digest = token_sha256(token.strip()).encode("ascii")
        found: Principal | None = None
        # Compare against every principal, so the time taken says nothing
        # about which digest (if any) came close.
        for expected, principal in self._by_digest:
            if hmac.compare_digest(digest, expected):
                found = principal
        if found is None:
            raise _unauthenticated("the bearer token is not valid")
        return found

    def require_admin(self, principal: Principal) -> None:
        if not principal.admin:
            raise _denied(
                f"principal {principal.name!r} has no admin right (AdminService)",
                principal=principal.name,
            )

    def access(self, principal: Principal, database: str, *, write: bool = False) -> Access:
        """The principal's right on ``database`` (an existing database's own
        name); PERMISSION_DENIED when it has none, or only read and ``write``
        is asked for."""
        access = principal.access(database)
        if access is None:
            raise _denied(
                f"principal {principal.name!r} has no access to database {database!r}",
                principal=principal.name,
                database=database,
            )
        if write and access is not Access.WRITE:
            raise _denied(
                f"principal {principal.name!r} may only read database {database!r}",
                principal=principal.name,
                database=database,
            )
        return access

    @contextlib.contextmanager
    def call_slot(self, principal: Principal) -> Iterator[CallSlot]:
        """Holds one of the principal's ``max_concurrent_calls`` slots for
        the duration of a call (or, once :meth:`CallSlot.keep` is called,
        until what kept it lets go); RESOURCE_EXHAUSTED / TOO_MANY_CALLS
        when none is free."""
        slot = self.take_slot(principal)
        try:
            yield slot
        finally:
            slot.done()

    def take_slot(self, principal: Principal) -> CallSlot:
        """:meth:`call_slot` without the block: the caller calls
        :meth:`CallSlot.done` when the call ends."""
        name = principal.name
        count = self._in_flight.get(name, 0)
        if count >= self.max_concurrent_calls:
            raise GatewayError(
                Reason.TOO_MANY_CALLS,
                f"principal {name!r} already has {count} calls, streams or open "
                f"transactions (max_concurrent_calls = {self.max_concurrent_calls})",
                metadata={"principal": name},
                retry_after=0.1,
            )
        self._in_flight[name] = count + 1
        return CallSlot(self, name)

    def _free(self, name: str) -> None:
        left = self._in_flight[name] - 1
        if left:
            self._in_flight[name] = left
        else:
            del self._in_flight[name]


class CallSlot:
    """One of a principal's ``max_concurrent_calls``, taken by a call."""

    __slots__ = ("_guard", "_held", "_name", "kept")

    def __init__(self, guard: Guard, name: str) -> None:
        self._guard = guard
        self._name = name
        self._held = True
        #: Handed on past the call (an open handle-based transaction holds it).
        self.kept = False

    def keep(self) -> Callable[[], None]:
        """Keeps the slot taken after the call ends, until the returned
        function is called (once is enough; later calls do nothing)."""
        self.kept = True
        return self.release

    def done(self) -> None:
        """The call that took the slot ended: the slot is free unless kept."""
        if not self.kept:
            self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._guard._free(self._name)
