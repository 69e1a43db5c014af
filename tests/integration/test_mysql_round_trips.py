"""A MariaDB call costs one round trip to the database: the session reset every
call ends with travels in the same write as the call's statement (or its
COMMIT), and the next caller still gets a session as fresh as a new one.

A real gateway reaches a real MariaDB through a TCP proxy that records what
the gateway writes; the pool has one connection, so every call reuses the
connection of the call before."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.recording import RecordedGateway, recorded_gateway
from tests.support import (
    V,
    call_error,
    create_mysql_database,
    drop_mysql_database,
    mysql_fetch,
)

pytestmark = pytest.mark.mysql

COM_QUERY = 0x03
COM_RESET_CONNECTION = 0x1F
RESET = "RESET_CONNECTION"
SETUP = "QUERY SET NAMES utf8mb4, time_zone = '+00:00', autocommit = 1"


def commands(chunk: bytes) -> list[str]:
    """The MySQL commands in one chunk the gateway wrote, as text."""
    found = []
    pos = 0
    while pos + 4 <= len(chunk):
        length = int.from_bytes(chunk[pos : pos + 3], "little")
        payload = chunk[pos + 4 : pos + 4 + length]
        if chunk[pos + 3] == 0 and payload:  # a command starts at packet number 0
            if payload[0] == COM_QUERY:
                found.append("QUERY " + payload[1:].decode())
            elif payload[0] == COM_RESET_CONNECTION:
                found.append(RESET)
            else:
                found.append(f"COMMAND {payload[0]:#x}")
        pos += 4 + length
    return found


class Wire(RecordedGateway):
    def writes_with(self, sent: list[bytes], text: str) -> list[list[str]]:
        """The gateway's writes (each as its commands) that carried ``text``."""
        return [found for found in map(commands, list(sent)) if any(text in c for c in found)]

    def connection_id(self) -> int:
        return int(self.query("SELECT CONNECTION_ID()")[0][0])


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    dsn = create_mysql_database()
    try:
        workdir = tmp_path_factory.mktemp("mysql-wire")
        with recorded_gateway(Wire, workdir, "mysql", dsn, 3306) as wire:
            yield wire
    finally:
        drop_mysql_database(dsn)


def test_a_point_select_and_the_session_reset_reach_mariadb_in_one_write(wire: Wire):
    wire.db.Execute(pb.ExecuteRequest(database="mysql", sql="CREATE TABLE items (id int, v text)"))
    wire.db.Execute(pb.ExecuteRequest(database="mysql", sql="INSERT INTO items VALUES (1, 'one')"))
    sent = wire.proxy.record()
    select = "SELECT v FROM items WHERE id = 1"
    assert wire.query("SELECT v FROM items WHERE id = %s", V.of(int_value=1)) == [("one",)]
    # The statement, the reset and the session setup: one write, one round trip.
    assert wire.writes_with(sent, select) == [[f"QUERY {select}", RESET, SETUP]]


def test_the_reset_behind_a_statement_hides_its_session_state_from_the_next_caller(wire: Wire):
    sent = wire.proxy.record()
    first = wire.connection_id()
    taken = "SELECT GET_LOCK('dbgw_wire_lock', 0), @dbgw_wire_v := 7"
    assert wire.query(taken) == [(1, 7)]
    assert wire.writes_with(sent, taken) == [[f"QUERY {taken}", RESET, SETUP]]
    # Same connection (a pool of one), yet the lock and the variable are gone.
    assert wire.query(
        "SELECT CONNECTION_ID(), IS_USED_LOCK('dbgw_wire_lock'), @dbgw_wire_v IS NULL"
    ) == [(first, None, 1)]


def test_a_failing_statement_leaves_its_connection_reset_and_in_the_pool(wire: Wire):
    first = wire.connection_id()
    sent = wire.proxy.record()
    # GET_LOCK runs, then the scalar subquery fails the statement.
    failing = "SELECT GET_LOCK('dbgw_wire_failed', 0), (SELECT 1 UNION ALL SELECT 2)"
    with pytest.raises(grpc.RpcError) as raised:
        wire.query(failing)
    error = call_error(raised.value)
    assert error.metadata["vendor_code"] == "1242", error
    assert wire.writes_with(sent, failing) == [[f"QUERY {failing}", RESET, SETUP]]
    held = mysql_fetch(wire.dsn, "SELECT IS_USED_LOCK('dbgw_wire_failed')")
    assert held == [(None,)]
    assert wire.connection_id() == first  # kept, not discarded and replaced


def test_an_error_after_some_rows_leaves_the_connection_reset_and_usable(wire: Wire):
    wire.db.Execute(
        pb.ExecuteRequest(database="mysql", sql="CREATE TABLE five (id int PRIMARY KEY)")
    )
    wire.db.Execute(
        pb.ExecuteRequest(database="mysql", sql="INSERT INTO five VALUES (1), (2), (3), (4), (5)")
    )
    first = wire.connection_id()
    sent = wire.proxy.record()
    # Rows 1-3 leave the server before row 4's subquery fails the statement.
    failing = (
        "SELECT id, GET_LOCK('dbgw_wire_rows', 0), "
        "(SELECT 1 UNION ALL SELECT 2 FROM DUAL WHERE id > 3) FROM five"
    )
    with pytest.raises(grpc.RpcError) as raised:
        wire.query(failing)
    assert call_error(raised.value).metadata["vendor_code"] == "1242"
    assert wire.writes_with(sent, failing) == [[f"QUERY {failing}", RESET, SETUP]]
    assert mysql_fetch(wire.dsn, "SELECT IS_USED_LOCK('dbgw_wire_rows')") == [(None,)]
    assert wire.connection_id() == first
    assert wire.query("SELECT COUNT(*) FROM five") == [(5,)]


def test_commit_carries_the_session_reset(wire: Wire):
    wire.db.Execute(pb.ExecuteRequest(database="mysql", sql="CREATE TABLE ledger (id int)"))
    sent = wire.proxy.record()
    request = pb.RunTransactionRequest(
        database="mysql",
        statements=[pb.Statement(sql="INSERT INTO ledger VALUES (1)")],
    )
    wire.db.RunTransaction(request)
    assert wire.writes_with(sent, "COMMIT") == [["QUERY COMMIT", RESET, SETUP]]
    # Inside the transaction nothing is reset behind a statement.
    assert wire.writes_with(sent, "INSERT INTO ledger") == [["QUERY INSERT INTO ledger VALUES (1)"]]
    assert mysql_fetch(wire.dsn, "SELECT COUNT(*) FROM ledger") == [(1,)]
