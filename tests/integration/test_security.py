"""Step 8 — security: TLS and mutual TLS, bearer-token principals with
per-database rights, reads enforced by the database, transactions bound to
their principal, safe defaults, limits, and what the logs may say.

Real certificates (tests/certs.py), a real server, real clients: grpcurl with
-cacert, the Python client and raw gRPC stubs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import dbgateway
from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc as admin_grpc
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.certs import Certificates, make_certificates
from tests.support import BIN, ServerProcess, V, call_error

TOKENS = {
    "writer": "writer-secret-token",
    "reader": "reader-secret-token",
    "ops": "ops-token",
    "limited": "limited-token",
}
ENGINES = ("pg", "mysql", "lite")
PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
#: A parameter value that must never reach a log line unless asked for.
SECRET = "hunter2-do-not-log"
LIMITED_CALLS = 3


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(name: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[name]}")]


def principals_config() -> str:
    rights = {
        "writer": ("write", False),
        "reader": ("read", False),
    }
    out = []
    for name, (right, admin) in rights.items():
        dbs = ", ".join(f'{db} = "{right}"' for db in ENGINES)
        out.append(
            f'[[principals]]\nname = "{name}"\ntoken_sha256 = "{sha(TOKENS[name])}"\n'
            f"databases = {{ {dbs} }}\nadmin = {str(admin).lower()}\n"
        )
    out.append(
        f'[[principals]]\nname = "ops"\ntoken_sha256 = "{sha(TOKENS["ops"])}"\nadmin = true\n'
    )
    out.append(
        f'[[principals]]\nname = "limited"\ntoken_sha256 = "{sha(TOKENS["limited"])}"\n'
        'databases = { lite = "write" }\n'
    )
    return "\n".join(out)


def databases_config(postgres_dsn: str, mysql_dsn: str, sqlite_file: Path) -> str:
    return (
        f'[databases.pg]\ndsn = "{postgres_dsn}"\npool = {{ min_size = 1, max_size = 4 }}\n\n'
        f'[databases.mysql]\ndsn = "{mysql_dsn}"\npool = {{ min_size = 1, max_size = 4 }}\n\n'
        f'[databases.lite]\ndsn = "sqlite://{sqlite_file}"\n\n'
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, postgres_dsn: str, mysql_dsn: str
) -> Iterator[ServerProcess]:
    """TLS, four principals, small limits, every call a "slow query" (so the
    slow-query log is written), and parameters not logged."""
    workdir = tmp_path_factory.mktemp("secure")
    config = (
        "[server]\n"
        f'tls_cert = "{certs.server.cert}"\ntls_key = "{certs.server.key}"\n'
        "max_sql_length = 10000\nmax_parameters = 100\n"
        f"max_concurrent_calls = {LIMITED_CALLS}\n"
        "slow_query_threshold = 0.000001\n\n"
        + databases_config(postgres_dsn, mysql_dsn, workdir / "lite.sqlite3")
        + principals_config()
    )
    proc = ServerProcess(workdir, config=config, tls_ca=certs.ca).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(secure: ServerProcess) -> Iterator[grpc.Channel]:
    with secure.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def db(channel: grpc.Channel) -> pb_grpc.DatabaseServiceStub:
    return pb_grpc.DatabaseServiceStub(channel)


@pytest.fixture(scope="module", autouse=True)
def tables(db: pb_grpc.DatabaseServiceStub) -> None:
    for engine in ENGINES:
        db.Execute(
            pb.ExecuteRequest(database=engine, sql="DROP TABLE IF EXISTS guarded"),
            metadata=bearer("writer"),
        )
        ident = {"pg": "serial", "mysql": "int auto_increment", "lite": "integer"}[engine]
        db.Execute(
            pb.ExecuteRequest(
                database=engine,
                sql=f"CREATE TABLE guarded (id {ident} PRIMARY KEY, body varchar(100))",
            ),
            metadata=bearer("writer"),
        )


def _complete(call, *args, **kwargs):
    result = call(*args, **kwargs)
    if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
        list(result)


def failure(call, *args, **kwargs):
    """The decoded error of a call (unary or streaming) that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        _complete(call, *args, **kwargs)
    return call_error(info.value)


def count(db, engine: str) -> int:
    reply = db.Query(
        pb.QueryRequest(database=engine, sql="SELECT count(*) FROM guarded"),
        metadata=bearer("writer"),
    )
    return int(reply.rows[0].values[0].int_value)


# -- Authentication ------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(db):
    err = failure(db.Query, pb.QueryRequest(database="lite", sql="SELECT 1"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-token",
        "Bearer ",
        "Basic d3JpdGVyOnB3",
        TOKENS["writer"],
        "Bearer  " + TOKENS["writer"] + "x",
    ],
)
def test_a_wrong_or_malformed_token_is_unauthenticated(db, header):
    err = failure(
        db.Query,
        pb.QueryRequest(database="lite", sql="SELECT 1"),
        metadata=[("authorization", header)],
    )
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_need_no_token(secure, channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="db/lite")).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    listed = subprocess.run(
        [str(BIN / "grpcurl"), "-cacert", str(secure.tls_ca), secure.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "dbgateway.v1.DatabaseService" in listed.stdout


def test_admin_rpcs_need_the_admin_right(channel):
    admin = admin_grpc.AdminServiceStub(channel)
    err = failure(admin.ListDatabases, admin_pb.ListDatabasesRequest(), metadata=bearer("writer"))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    reply = admin.ListDatabases(admin_pb.ListDatabasesRequest(), metadata=bearer("ops"))
    assert {d.name for d in reply.databases} == set(ENGINES)


def test_a_database_not_granted_is_permission_denied(db):
    err = failure(
        db.Query, pb.QueryRequest(database="pg", sql="SELECT 1"), metadata=bearer("limited")
    )
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    err = failure(db.Query, pb.QueryRequest(database="pg", sql="SELECT 1"), metadata=bearer("ops"))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    stream = db.Transaction(
        iter([pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database="pg"))]),
        metadata=bearer("limited"),
    )
    err = failure(list, stream)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED


def test_execute_without_the_write_right_is_permission_denied(db):
    for request, call in (
        (pb.ExecuteRequest(database="lite", sql="SELECT 1"), db.Execute),
        (
            pb.ExecuteBatchRequest(
                database="lite",
                sql="SELECT ?",
                param_sets=[pb.ParamSet(params=[V.of(int_value=1)])],
            ),
            db.ExecuteBatch,
        ),
    ):
        err = failure(call, request, metadata=bearer("reader"))
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# -- "read" is enforced by the database -----------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_read_principal_writing_through_query_is_refused_by_the_database(db, engine):
    before = count(db, engine)
    sql = f"INSERT INTO guarded (body) VALUES ({PLACEHOLDER[engine]}) RETURNING id"
    for call in (db.Query, db.StreamQuery):
        err = failure(
            call,
            pb.QueryRequest(database=engine, sql=sql, params=[V.of(string_value="x")]),
            metadata=bearer("reader"),
        )
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "READ_ONLY"), err
    assert count(db, engine) == before
    # Reads work, and the writer's writes are untouched by the reader's refusals.
    reply = db.Query(
        pb.QueryRequest(database=engine, sql="SELECT count(*) FROM guarded"),
        metadata=bearer("reader"),
    )
    assert reply.rows[0].values[0].int_value == before
    reply = db.Query(
        pb.QueryRequest(database=engine, sql=sql, params=[V.of(string_value="w")]),
        metadata=bearer("writer"),
    )
    assert len(reply.rows) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_read_principal_gets_read_only_transactions(db, engine):
    insert = pb.Statement(
        sql=f"INSERT INTO guarded (body) VALUES ({PLACEHOLDER[engine]})",
        params=[V.of(string_value="t")],
    )
    err = failure(
        db.RunTransaction,
        pb.RunTransactionRequest(database=engine, statements=[insert]),
        metadata=bearer("reader"),
    )
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "READ_ONLY")
    begun = db.BeginTransaction(
        pb.BeginTransactionRequest(database=engine), metadata=bearer("reader")
    )
    err = failure(
        db.Execute,
        pb.ExecuteRequest(
            transaction_id=begun.transaction_id, sql=insert.sql, params=insert.params
        ),
        metadata=bearer("reader"),
    )
    assert err.reason == "READ_ONLY"
    db.Rollback(pb.RollbackRequest(transaction_id=begun.transaction_id), metadata=bearer("reader"))
    replies = list(
        db.Transaction(
            iter(
                [
                    pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database=engine)),
                    pb.TransactionRequest(statement=insert),
                    pb.TransactionRequest(rollback=pb.TransactionRequest.Rollback()),
                ]
            ),
            metadata=bearer("reader"),
        )
    )
    assert replies[1].result.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


# -- Transactions belong to their principal ----------------------------------------


def test_another_principals_transaction_is_not_found(db):
    begun = db.BeginTransaction(
        pb.BeginTransactionRequest(database="lite"), metadata=bearer("writer")
    )
    tx = begun.transaction_id
    db.Execute(
        pb.ExecuteRequest(transaction_id=tx, sql="INSERT INTO guarded (body) VALUES ('mine')"),
        metadata=bearer("writer"),
    )
    for call, request in (
        (db.Query, pb.QueryRequest(transaction_id=tx, sql="SELECT 1")),
        (db.Execute, pb.ExecuteRequest(transaction_id=tx, sql="DELETE FROM guarded")),
        (db.StreamQuery, pb.QueryRequest(transaction_id=tx, sql="SELECT 1")),
        (db.Commit, pb.CommitRequest(transaction_id=tx)),
    ):
        err = failure(call, request, metadata=bearer("reader"))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")
    # Another principal's Rollback is a no-op, as for any id it does not have.
    db.Rollback(pb.RollbackRequest(transaction_id=tx), metadata=bearer("reader"))
    db.Commit(pb.CommitRequest(transaction_id=tx), metadata=bearer("writer"))


# -- Limits ---------------------------------------------------------------------------


def test_sql_longer_than_max_sql_length_is_invalid_argument(db):
    err = failure(
        db.Query,
        pb.QueryRequest(database="lite", sql="SELECT 1" + " " * 10_000),
        metadata=bearer("writer"),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_sql_length" in err.message


def test_more_than_max_parameters_is_invalid_argument(db):
    params = [V.of(int_value=i) for i in range(101)]
    err = failure(
        db.Query,
        pb.QueryRequest(database="lite", sql="SELECT ?", params=params),
        metadata=bearer("writer"),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_parameters" in err.message


def test_a_request_beyond_max_request_bytes_is_resource_exhausted(db):
    err = failure(
        db.Query,
        pb.QueryRequest(database="lite", sql="SELECT 1 -- " + "x" * (10 * 1024 * 1024)),
        metadata=bearer("writer"),
    )
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_max_concurrent_calls_bounds_each_principal(db):
    endless = (
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s) "
        "SELECT n, printf('%100s', 'x') AS pad FROM s"
    )
    held = []
    for _ in range(LIMITED_CALLS):
        # A stream whose reader stopped reading stays in flight.
        call = db.StreamQuery(
            pb.QueryRequest(database="lite", sql=endless), metadata=bearer("limited")
        )
        next(call)
        held.append(call)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                db.Query(
                    pb.QueryRequest(database="lite", sql="SELECT 1"),
                    metadata=bearer("limited"),
                    timeout=5,
                )
            except grpc.RpcError as exc:
                err = call_error(exc)
                break
            assert time.monotonic() < deadline, "the limit was never reached"
            time.sleep(0.05)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")
        # Another principal is not affected.
        db.Query(pb.QueryRequest(database="lite", sql="SELECT 1"), metadata=bearer("writer"))
    finally:
        for call in held:
            call.cancel()
    deadline = time.monotonic() + 10
    while True:
        try:
            db.Query(pb.QueryRequest(database="lite", sql="SELECT 1"), metadata=bearer("limited"))
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "slots were not given back"
            time.sleep(0.05)


# -- Logs and metrics ---------------------------------------------------------------------


def test_access_log_names_the_principal_and_parameters_are_never_logged(db, secure):
    db.Query(
        pb.QueryRequest(database="pg", sql="SELECT $1::text", params=[V.of(string_value=SECRET)]),
        metadata=bearer("reader"),
    )
    failure(
        db.Query,
        pb.QueryRequest(database="pg", sql="SELECT $1::int", params=[V.of(string_value=SECRET)]),
        metadata=bearer("writer"),
    )
    failure(
        db.Query,
        pb.QueryRequest(database="pg", sql="SELECT 1"),
        metadata=[("authorization", f"Bearer {SECRET}")],
    )
    deadline = time.monotonic() + 5
    while "principal=reader" not in secure.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = secure.log()
    assert "principal=reader" in log
    assert "principal=writer" in log
    assert "principal=(unauthenticated)" in log
    assert "slow" in log.lower()  # the slow-query log was written, with no values
    assert SECRET not in log
    for token in TOKENS.values():
        assert token not in log


# -- Clients: the Python client and grpcurl ----------------------------------------------------


def test_the_python_client_speaks_tls_with_a_token(secure, certs):
    tls = dbgateway.TLSConfig(ca_file=certs.ca)
    with dbgateway.Client(secure.address, tls=tls, token=TOKENS["reader"]) as client:
        assert client.query("SELECT 40 + 2", database="lite").scalar() == 42
        with pytest.raises(dbgateway.PermissionDenied):
            client.execute("DELETE FROM guarded", database="lite")
    with (
        dbgateway.Client(secure.address, tls=tls, token="wrong") as client,
        pytest.raises(dbgateway.PermissionDenied) as info,
    ):
        client.query("SELECT 1", database="lite")
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_grpcurl_with_cacert_and_a_bearer_token(secure):
    out = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-cacert",
            str(secure.tls_ca),
            "-H",
            f"authorization: Bearer {TOKENS['reader']}",
            "-d",
            '{"database": "lite", "sql": "SELECT 7 AS n"}',
            secure.address,
            "dbgateway.v1.DatabaseService/Query",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"][0]["values"][0] == {"int_value": "7"}


def test_a_plaintext_client_cannot_talk_to_a_tls_server(secure):
    with grpc.insecure_channel(secure.address) as ch:
        err = failure(
            pb_grpc.DatabaseServiceStub(ch).Query,
            pb.QueryRequest(database="lite", sql="SELECT 1"),
            timeout=5,
        )
    assert err.code == grpc.StatusCode.UNAVAILABLE


# -- Mutual TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mutual(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[ServerProcess]:
    """Mutual TLS, no principals, and parameters logged on purpose."""
    workdir = tmp_path_factory.mktemp("mutual")
    config = (
        "[server]\n"
        f'tls_cert = "{certs.server.cert}"\ntls_key = "{certs.server.key}"\n'
        f'tls_client_ca = "{certs.ca}"\n'
        "log_parameters = true\nslow_query_threshold = 0.000001\n\n"
        f'[databases.lite]\ndsn = "sqlite://{workdir / "m.sqlite3"}"\n'
    )
    proc = ServerProcess(workdir, config=config, tls_ca=certs.ca).start()
    yield proc
    proc.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mutual, certs):
    request = pb.QueryRequest(sql="SELECT ?", params=[V.of(string_value=SECRET)])
    with mutual.channel(cert=certs.client.cert, key=certs.client.key) as ch:
        reply = pb_grpc.DatabaseServiceStub(ch).Query(request, timeout=10)
        assert reply.rows[0].values[0].string_value == SECRET
    for cert, key in ((None, None), (certs.stranger.cert, certs.stranger.key)):
        with mutual.channel(cert=cert, key=key) as ch:
            err = failure(pb_grpc.DatabaseServiceStub(ch).Query, request, timeout=5)
        assert err.code == grpc.StatusCode.UNAVAILABLE
    # log_parameters = true puts the values in the slow-query log.
    deadline = time.monotonic() + 5
    while SECRET not in mutual.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert SECRET in mutual.log()


def test_grpcurl_with_a_client_certificate(mutual, certs):
    base = [str(BIN / "grpcurl"), "-cacert", str(certs.ca)]
    call = ["-d", '{"sql": "SELECT 1"}', mutual.address, "dbgateway.v1.DatabaseService/Query"]
    ok = subprocess.run(
        [*base, "-cert", str(certs.client.cert), "-key", str(certs.client.key), *call],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*base, *call], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0


# -- Safe defaults ---------------------------------------------------------------------------


def test_listening_beyond_loopback_unprotected_refuses_to_start(tmp_path):
    out = subprocess.run(
        [str(BIN / "dbgateway"), "serve", "--listen", "0.0.0.0:0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "allow_insecure = true" in out.stderr
    assert "0.0.0.0:0" in out.stderr


def test_allow_insecure_is_the_deliberate_way_out(tmp_path):
    config = f'[server]\nallow_insecure = true\n[databases.lite]\ndsn = "sqlite://{tmp_path / "x.sqlite3"}"\n'
    proc = ServerProcess(tmp_path, config=config, args=["--listen", "0.0.0.0:0"]).start()
    try:
        with proc.channel() as ch:
            reply = pb_grpc.DatabaseServiceStub(ch).Query(
                pb.QueryRequest(sql="SELECT 1"), timeout=10
            )
        assert reply.rows[0].values[0].int_value == 1
    finally:
        proc.stop()


def test_tls_and_principals_together_may_listen_beyond_loopback(tmp_path, certs):
    config = (
        f'[server]\ntls_cert = "{certs.server.cert}"\ntls_key = "{certs.server.key}"\n'
        f'[databases.lite]\ndsn = "sqlite://{tmp_path / "x.sqlite3"}"\n'
        + f'[[principals]]\nname = "svc"\ntoken_sha256 = "{sha("t")}"\ndatabases = {{ lite = "read" }}\n'
    )
    proc = ServerProcess(
        tmp_path, config=config, args=["--listen", "0.0.0.0:0"], tls_ca=certs.ca
    ).start()
    proc.stop()
