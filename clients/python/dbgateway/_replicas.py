"""Read preference and read-your-writes on databases with read replicas.

A committed write on a database with replicas comes back with a
``read_token`` (where it is in the replication stream). A read that passes
it as ``read_after=`` is answered only by a replica that has replayed that
write, or by the primary. :meth:`Client.read_your_writes` carries the tokens
for you: inside the block, every write's token is kept (per database) and
every read sends the latest one::

    with db.read_your_writes():
        db.execute("INSERT INTO notes (body) VALUES ($1)", "hi", database="orders")
        db.query("SELECT body FROM notes", database="orders",
                 read_preference="replica_preferred")   # sees the insert

The tokens live in a context variable, so concurrent tasks and threads each
have their own.
"""

from __future__ import annotations

import contextvars
from enum import StrEnum
from types import TracebackType
from typing import Self

from .v1 import database_service_pb2 as pb

__all__ = ["ReadPreference", "ReadYourWrites"]


class ReadPreference(StrEnum):
    """Where a read runs on a database with replicas (None: the database's default)."""

    PRIMARY = "primary"
    #: A replica within the lag bound, else the primary.
    REPLICA_PREFERRED = "replica_preferred"
    #: A replica, or the call fails with ``Unavailable`` (NO_REPLICA_AVAILABLE).
    REPLICA = "replica"


_PREFERENCES = {
    ReadPreference.PRIMARY: pb.READ_PREFERENCE_PRIMARY,
    ReadPreference.REPLICA_PREFERRED: pb.READ_PREFERENCE_REPLICA_PREFERRED,
    ReadPreference.REPLICA: pb.READ_PREFERENCE_REPLICA,
}


def read_preference_value(preference: ReadPreference | str | None) -> pb.ReadPreference:
    """The proto enum for a preference (``"replica_preferred"`` or the enum)."""
    if preference is None:
        return pb.READ_PREFERENCE_UNSPECIFIED
    try:
        return _PREFERENCES[ReadPreference(str(preference).lower())]
    except ValueError:
        choices = ", ".join(repr(p.value) for p in ReadPreference)
        raise ValueError(f"read_preference must be one of {choices}, got {preference!r}") from None


class ReadYourWrites:
    """The read tokens of one ``read_your_writes()`` block, by database."""

    __slots__ = ("_reset", "tokens")

    def __init__(self) -> None:
        #: database name as the calls name it ("" for the default) -> latest token.
        self.tokens: dict[str, str] = {}
        self._reset: contextvars.Token[ReadYourWrites | None] | None = None

    def __enter__(self) -> Self:
        self._reset = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reset is not None:
            _current.reset(self._reset)
            self._reset = None

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


_current: contextvars.ContextVar[ReadYourWrites | None] = contextvars.ContextVar(
    "dbgateway_read_your_writes", default=None
)


def remember(database: str | None, token: str) -> None:
    """Keeps a committed write's token for the reads of the current block."""
    session = _current.get()
    if session is not None and token:
        session.tokens[database or ""] = token


def read_after(database: str | None, explicit: str | None) -> str:
    """The token a read sends: the caller's own, else the current block's."""
    if explicit:
        return explicit
    session = _current.get()
    return "" if session is None else session.tokens.get(database or "", "")
