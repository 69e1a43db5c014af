"""A PostgreSQL call of common types costs one round trip to the database: the
session reset travels in the same write as the statement's Bind/Execute/Sync
(backends/pg_wire.py), and the next caller still gets a clean session.

A real gateway reaches a real PostgreSQL through a TCP proxy that records
what the gateway writes; the pool has one connection, so every call reuses
the connection of the call before."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway_server.backends.postgres import (
    RESET_QUERY,
    RESET_STATEMENT_PREFIX,
    RESET_STATEMENTS,
)
from tests.integration.recording import RecordedGateway, recorded_gateway
from tests.support import (
    V,
    call_error,
    create_postgres_database,
    drop_postgres_database,
    pg_fetch,
)

pytestmark = pytest.mark.postgres

#: The pool's own reset: the reset's text, one simple-protocol Query.
POOL_RESET = f"QUERY {RESET_QUERY}"
#: The reset behind a lean statement: each of the reset's statements, prepared
#: on the connection, bound and executed, then one Sync (no Parse).
RESET = "RESET"
#: Frontend messages the gateway sends on a pooled connection, by type byte.
_NAMES = {b"P": "PARSE", b"B": "BIND", b"E": "EXECUTE", b"S": "SYNC", b"D": "DESCRIBE"}
_PREPARED_RESET = ["BIND RESET", "EXECUTE"] * len(RESET_STATEMENTS) + ["SYNC"]


def messages(chunk: bytes) -> list[str]:
    """The frontend messages in one chunk the gateway wrote ([] for a chunk
    that is not a run of them, such as a cancel request); the run of Binds
    and Executes of the reset's prepared statements and its Sync is RESET."""
    found = []
    pos = 0
    while pos + 5 <= len(chunk):
        kind = chunk[pos : pos + 1]
        (length,) = struct.unpack_from("!i", chunk, pos + 1)
        body = chunk[pos + 5 : pos + 1 + length]
        if kind == b"Q":
            found.append("QUERY " + body.rstrip(b"\x00").decode())
        elif kind == b"B" and body.split(b"\x00")[1].startswith(RESET_STATEMENT_PREFIX.encode()):
            found.append("BIND RESET")
        elif kind == b"P" and body.startswith(RESET_STATEMENT_PREFIX.encode()):
            found.append("PARSE RESET")
        elif kind in _NAMES:
            found.append(_NAMES[kind])
        else:
            return []
        pos += 1 + length
    size = len(_PREPARED_RESET)
    for at in range(len(found) - size, -1, -1):
        if found[at : at + size] == _PREPARED_RESET:
            found[at : at + size] = [RESET]
    return found


class Wire(RecordedGateway):
    def writes(self, sent: list[bytes]) -> list[list[str]]:
        return [found for found in map(messages, list(sent)) if found]

    def backend_pid(self) -> int:
        return int(self.query("SELECT pg_backend_pid()")[0][0])


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    dsn = create_postgres_database()
    try:
        with recorded_gateway(Wire, tmp_path_factory.mktemp("pg-wire"), "pg", dsn, 5432) as wire:
            yield wire
    finally:
        drop_postgres_database(dsn)


# (The pool has one connection: a separate reset after a call would be
# written before the next call's statement, so the writes up to a later call
# show it without waiting for it.)


def test_a_point_select_and_the_session_reset_reach_postgres_in_one_write(wire: Wire):
    wire.db.Execute(pb.ExecuteRequest(database="pg", sql="CREATE TABLE items (id int, v text)"))
    wire.db.Execute(pb.ExecuteRequest(database="pg", sql="INSERT INTO items VALUES (1, 'one')"))
    select = "SELECT v FROM items WHERE id = $1"
    assert wire.query(select, V.of(int_value=1)) == [("one",)]  # prepared by asyncpg now
    sent = wire.proxy.record()
    for _ in range(4):
        assert wire.query(select, V.of(int_value=1)) == [("one",)]
    # Each call: the statement and the reset, one write; no reset of its own.
    assert wire.writes(sent)[:4] == [["BIND", "EXECUTE", "SYNC", RESET]] * 4


def test_a_statement_of_another_type_still_gets_the_pools_reset(wire: Wire):
    wire.query("SELECT '10.0.0.1'::inet")
    wire.query("SELECT 2")
    sent = wire.proxy.record()
    assert wire.query("SELECT '10.0.0.1'::inet") == [("10.0.0.1",)]
    assert wire.query("SELECT 2") == [(2,)]
    assert wire.writes(sent)[:3] == [
        ["BIND", "EXECUTE", "SYNC"],
        [POOL_RESET],
        ["BIND", "EXECUTE", "SYNC", RESET],
    ]


def test_the_reset_behind_a_statement_hides_its_session_state_from_the_next_caller(wire: Wire):
    first = wire.backend_pid()
    taken = (
        "SELECT pg_try_advisory_lock(7171), set_config('search_path', 'nowhere', false),"
        " set_config('TimeZone', 'Asia/Tokyo', false)"
    )
    assert wire.query(taken) == [(True, "nowhere", "Asia/Tokyo")]
    # Same connection (a pool of one), yet the lock and the settings are gone.
    check = (
        "SELECT pg_backend_pid(), current_setting('search_path'), current_setting('TimeZone'),"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND pid = pg_backend_pid())::int4"
    )
    pid, path, zone, locks = wire.query(check)[0]
    assert (pid, locks) == (first, 0)
    assert path != "nowhere"
    assert zone != "Asia/Tokyo"


def test_a_failing_statement_is_reported_and_its_connection_kept_clean(wire: Wire):
    first = wire.backend_pid()
    failing = "SELECT pg_try_advisory_lock(7272), 1 / $1::int4"
    wire.query(failing, V.of(int_value=1))  # prepared
    sent = wire.proxy.record()
    with pytest.raises(grpc.RpcError) as raised:
        wire.query(failing, V.of(int_value=0))
    assert call_error(raised.value).metadata["sqlstate"] == "22012"
    held = pg_fetch(wire.dsn, "SELECT count(*) FROM pg_locks WHERE objid = 7272")
    assert held == [(0,)]
    assert wire.backend_pid() == first  # kept, not discarded and replaced
    assert wire.writes(sent)[:2] == [["BIND", "EXECUTE", "SYNC", RESET]] * 2


def test_a_new_connection_prepares_the_reset_in_one_round_trip(wire: Wire):
    assert wire.query("SELECT 2") == [(2,)]
    sent = wire.proxy.record()
    wire.proxy.cut()  # the pool's one connection is lost: the next call opens another
    deadline = time.monotonic() + 10
    while True:
        try:
            assert wire.query("SELECT 3") == [(3,)]
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
    writes = wire.writes(sent)
    reset_writes = [w for w in writes if "PARSE RESET" in w or RESET in w or POOL_RESET in w]
    # Its reset's statements: their Parses and a Sync, and the reset run
    # once behind them, in one write (one round trip), and no reset from text.
    assert reset_writes[0] == ["PARSE RESET"] * len(RESET_STATEMENTS) + ["SYNC", RESET]
    assert [w for w in writes if POOL_RESET in w] == []
    # The call that follows uses them.
    assert ["BIND", "EXECUTE", "SYNC", RESET] in writes


def test_a_lean_statement_cut_off_by_its_deadline_is_cancelled_and_the_pool_recovers(wire: Wire):
    marker = uuid.uuid4().hex
    sql = f"SELECT 1 FROM pg_sleep(20) WHERE '{marker}' <> ''"
    request = pb.QueryRequest(database="pg", sql=sql)
    request.options.timeout.FromNanoseconds(300_000_000)
    with pytest.raises(grpc.RpcError) as raised:
        wire.db.Query(request, timeout=10)
    assert call_error(raised.value).reason == "STATEMENT_TIMEOUT"
    assert wire.query("SELECT 2") == [(2,)]
    running = pg_fetch(
        wire.dsn,
        "SELECT pid FROM pg_stat_activity WHERE state = 'active'"
        f" AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()",
    )
    assert running == []
