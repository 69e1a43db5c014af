"""AdminService/ListStatements and ResetStatements, and `dbgateway statements`,
on a real server: counts, errors and rows per normalized statement."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc as admin_grpc
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.support import BIN, ServerProcess, V, call_error, unique_name

pytestmark = pytest.mark.postgres

CAPACITY = 5
OPS, APP = "ops-token-1", "app-token-1"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_dsn: str) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("statements")
    config = (
        f"[server]\nstatement_stats = {CAPACITY}\n\n"
        f'[databases.pg]\ndsn = "{postgres_dsn}"\n\n'
        f'[databases.lite]\ndsn = "sqlite://{workdir / "lite.sqlite3"}"\n\n'
        f'[[principals]]\nname = "ops"\ntoken_sha256 = "{_sha(OPS)}"\nadmin = true\n'
        'databases = { pg = "write", lite = "write" }\n\n'
        f'[[principals]]\nname = "app"\ntoken_sha256 = "{_sha(APP)}"\n'
        'databases = { pg = "write", lite = "write" }\n'
    )
    proc = ServerProcess(workdir, config=config).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture
def db(channel):
    stub = database_service_pb2_grpc.DatabaseServiceStub(channel)

    class Authed:
        def __getattr__(self, name):
            method = getattr(stub, name)
            return lambda request: method(request, metadata=_bearer(APP))

    return Authed()


@pytest.fixture
def admin(channel):
    stub = admin_grpc.AdminServiceStub(channel)
    stub.ResetStatements(admin_pb.ResetStatementsRequest(), metadata=_bearer(OPS))
    return stub


def _listed(admin, database: str = "", limit: int = 0) -> admin_pb.ListStatementsResponse:
    return admin.ListStatements(
        admin_pb.ListStatementsRequest(database=database, limit=limit), metadata=_bearer(OPS)
    )


def test_known_sequence_is_counted_exactly_with_literals_folded(db, admin):
    t = unique_name("stats")
    db.Execute(
        pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {t} (id INT PRIMARY KEY, note TEXT)")
    )
    db.Execute(pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {t} VALUES (1, 'a')"))
    db.Execute(pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {t} VALUES (2, 'b'), (3, 'c')"))
    dup = pb.ExecuteRequest(
        database="pg",
        sql=f"INSERT INTO {t} VALUES ($1, $2)",
        params=[V.of(int_value=1), V.of(string_value="x")],
    )
    with pytest.raises(grpc.RpcError) as info:
        db.Execute(dup)
    assert call_error(info.value).reason == "UNIQUE_VIOLATION"
    for n in (1, 2, 9):
        db.Query(pb.QueryRequest(database="pg", sql=f"SELECT note FROM {t} WHERE id = {n}"))
    with pytest.raises(grpc.RpcError):
        db.Query(pb.QueryRequest(database="pg", sql=f"SELECT nope FROM {t} WHERE id = 4"))

    reply = _listed(admin, "pg")
    assert reply.capacity == CAPACITY
    got = {s.text: (s.calls, s.errors, dict(s.errors_by_reason), s.rows) for s in reply.statements}
    assert got == {
        f"CREATE TABLE {t} (id INT PRIMARY KEY, note TEXT)": (1, 0, {}, 0),
        f"INSERT INTO {t} VALUES (?)": (2, 0, {}, 3),
        f"INSERT INTO {t} VALUES ($1, $2)": (1, 1, {"UNIQUE_VIOLATION": 1}, 0),
        f"SELECT note FROM {t} WHERE id = ?": (3, 0, {}, 2),
        f"SELECT nope FROM {t} WHERE id = ?": (1, 1, {"SQL_ERROR": 1}, 0),
    }
    totals = [s.total_time.ToTimedelta() for s in reply.statements]
    assert totals == sorted(totals, reverse=True)
    for s in reply.statements:
        assert s.database == "pg"
        assert s.mean_time.ToNanoseconds() == pytest.approx(
            s.total_time.ToNanoseconds() / s.calls, abs=1
        )
        assert s.p99_time.ToNanoseconds() > 0
        assert s.last_seen.seconds > 0
    assert len(_listed(admin, "pg", limit=2).statements) == 2


def test_least_recently_seen_statements_are_forgotten_beyond_capacity(db, admin):
    for n in range(CAPACITY + 3):
        db.Query(pb.QueryRequest(database="lite", sql=f"SELECT {n} AS c{n}"))
    texts = sorted(s.text for s in _listed(admin).statements)
    assert texts == sorted(f"SELECT ? AS c{n}" for n in range(3, CAPACITY + 3))


def test_reset_forgets_one_database_or_every_one(db, admin):
    db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"))
    db.Query(pb.QueryRequest(database="lite", sql="SELECT 1"))
    removed = admin.ResetStatements(
        admin_pb.ResetStatementsRequest(database="pg"), metadata=_bearer(OPS)
    ).removed
    assert removed == 1
    assert [s.database for s in _listed(admin).statements] == ["lite"]


def test_statements_need_the_admin_right(channel, admin):
    for call, request in (
        (admin.ListStatements, admin_pb.ListStatementsRequest()),
        (admin.ResetStatements, admin_pb.ResetStatementsRequest()),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=_bearer(APP))
        err = call_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_bad_requests_are_refused_with_details(admin):
    with pytest.raises(grpc.RpcError) as info:
        admin.ListStatements(admin_pb.ListStatementsRequest(limit=-1), metadata=_bearer(OPS))
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == "limit"
    with pytest.raises(grpc.RpcError) as info:
        admin.ListStatements(admin_pb.ListStatementsRequest(database="nope"), metadata=_bearer(OPS))
    assert call_error(info.value).reason == "UNKNOWN_DATABASE"


def test_statements_command_prints_the_table(server, db, admin):
    t = unique_name("cli")
    db.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {t} (id INT)"))
    for n in range(3):
        db.Execute(pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {t} VALUES ({n})"))
    out = subprocess.run(
        [str(BIN / "dbgateway"), "statements", "--server", server.address, "--reset"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"DBGATEWAY_TOKEN": OPS, "PATH": "/usr/bin:/bin"},
    ).stdout
    lines = out.splitlines()
    assert lines[0].split() == [
        "DATABASE",
        "CALLS",
        "ERRORS",
        "ROWS",
        "TOTAL",
        "MS",
        "MEAN",
        "MS",
        "P99",
        "MS",
        "STATEMENT",
    ]
    insert = next(line for line in lines if f"INSERT INTO {t} VALUES (?)" in line)
    assert insert.split()[:4] == ["pg", "3", "0", "3"]
    assert _listed(admin).statements == []
