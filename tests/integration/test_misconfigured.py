"""A database the gateway cannot log in to (unknown role, wrong password,
missing database): the cause reaches callers, ListDatabases, the CLI and the
start-up log, instead of a bare "circuit open"."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.test_client_cli import dbgateway
from tests.support import ServerProcess, call_error, unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

WRONG_PASSWORD = "not-the-Passw0rd"
ROLE = unique_name("dbgw_no_role")
MISSING = unique_name("dbgw_missing")

#: database name -> (dsn, the cause's code in ErrorInfo metadata, a word of its message)
BROKEN = {
    "norole": (f"postgresql://{ROLE}@127.0.0.1:5432/test", ("cause_sqlstate", "28000"), ROLE),
    "nodb": (
        f"postgresql://postgres@127.0.0.1:5432/{MISSING}",
        ("cause_sqlstate", "3D000"),
        MISSING,
    ),
    "badpw": (
        f"mysql://root:{WRONG_PASSWORD}@127.0.0.1:3306/test",
        ("cause_vendor_code", "1045"),
        "Access denied",
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("misconfigured")
    config = (
        "".join(f'[databases.{name}]\ndsn = "{dsn}"\n\n' for name, (dsn, _, _) in BROKEN.items())
        + f'[databases.lite]\ndsn = "sqlite://{workdir / "lite.sqlite3"}"\n'
    )
    server = ServerProcess(workdir, config=config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as channel:
        yield channel


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_caller_is_told_why_the_circuit_is_open(channel: grpc.Channel, name: str):
    db = database_service_pb2_grpc.DatabaseServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        db.Query(pb.QueryRequest(database=name, sql="SELECT 1"), timeout=10)
    err = call_error(info.value)
    _, (key, code), word = BROKEN[name]
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == "CIRCUIT_OPEN"
    assert err.metadata["cause_reason"] == "DATABASE_UNAVAILABLE"
    assert err.metadata[key] == code
    assert word in err.metadata["cause"]
    assert word in err.message
    assert WRONG_PASSWORD not in err.message
    assert WRONG_PASSWORD not in str(err.metadata)


def test_list_databases_shows_each_cause(channel: grpc.Channel):
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    reply = admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
    infos = {d.name: d for d in reply.databases}
    for name, (_, (key, code), word) in BROKEN.items():
        cause = infos[name].circuit_cause
        assert infos[name].circuit_state == admin_pb.CIRCUIT_STATE_OPEN
        assert cause.reason == "DATABASE_UNAVAILABLE"
        assert (cause.sqlstate if key == "cause_sqlstate" else cause.vendor_code) == code
        assert word in cause.message
    assert not infos["lite"].HasField("circuit_cause")


def test_dbgateway_databases_prints_the_causes(server: ServerProcess):
    result = dbgateway("databases", server=server)
    assert result.returncode == 0, result.stderr
    assert "norole: circuit not closed because of DATABASE_UNAVAILABLE (28000): " in result.stdout
    assert "nodb: circuit not closed because of DATABASE_UNAVAILABLE (3D000): " in result.stdout
    assert (
        "badpw: circuit not closed because of DATABASE_UNAVAILABLE (28000, 1045): " in result.stdout
    )
    assert "lite: circuit" not in result.stdout


def test_dbgateway_query_fails_at_once_with_the_cause(server: ServerProcess):
    before = server.log().count("method=Query principal=anonymous database=norole")
    started = time.monotonic()
    result = dbgateway("query", "-d", "norole", "SELECT 1", server=server)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "UNAVAILABLE CIRCUIT_OPEN" in result.stderr
    assert "(28000)" in result.stderr
    assert ROLE in result.stderr
    # One call, no sleeping out RetryInfo (the library's default would retry).
    deadline = time.monotonic() + 5
    while server.log().count("database=norole") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log().count("method=Query principal=anonymous database=norole") == before + 1
    assert elapsed < 10, elapsed


def test_the_start_up_log_says_loudly_what_to_fix(server: ServerProcess):
    log = server.log()
    lines = [
        line for line in log.splitlines() if " ERROR " in line and "refused the gateway" in line
    ]
    assert len(lines) == 3, log
    by_name = {name: next(line for line in lines if f"database {name} " in line) for name in BROKEN}
    assert "check the user and password" in by_name["norole"]
    assert "check the database name" in by_name["nodb"]
    assert "check the user and password" in by_name["badpw"]
    assert WRONG_PASSWORD not in log
