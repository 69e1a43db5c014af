"""``SIGHUP`` (or ``dbgateway reload``) reloads the configuration of a running
``dbgateway serve``: databases added, changed and removed, tokens and TLS
certificates rotated, without a restart and without failing the calls that
run meanwhile; a bad file changes nothing."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway_server.security import token_sha256
from tests.certs import make_certificates
from tests.support import BIN, ServerProcess, call_error, pg_fetch

pytestmark = pytest.mark.postgres


def _databases(dsn: str, *, pool_max: int = 4, extra: str = "") -> str:
    return f"""
[databases.pg]
dsn = "{dsn}"
pool = {{ min_size = 1, max_size = {pool_max} }}
{extra}
"""


def reload(proc: ServerProcess, config: str, *, expect: str = "config reloaded") -> None:
    """Writes ``config`` over the server's file, sends SIGHUP and waits for the log line."""
    assert proc.process is not None
    before = proc.log().count(expect)
    (proc.workdir / "dbgateway.toml").write_text(config)
    proc.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while proc.log().count(expect) == before:
        assert time.monotonic() < deadline, f"no {expect!r} in the log:\n{proc.log()}"
        time.sleep(0.05)


@contextmanager
def calls_running(call: Callable[[], object]) -> Iterator[list[BaseException]]:
    """Runs ``call`` over and over in a thread while the block runs; yields
    the failures (which the test expects to stay empty)."""
    failures: list[BaseException] = []
    done = threading.Event()
    count = 0

    def loop() -> None:
        nonlocal count
        while not done.is_set():
            try:
                call()
                count += 1
            except BaseException as exc:
                failures.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        done.set()
        thread.join(10)
    assert count > 0


def _stubs(channel: grpc.Channel):
    return (
        database_service_pb2_grpc.DatabaseServiceStub(channel),
        admin_service_pb2_grpc.AdminServiceStub(channel),
    )


def _pool_max(admin, name: str) -> int:
    listed = admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=10)
    return next(d.pool.max_size for d in listed.databases if d.name == name)


def test_reload_adds_and_changes_databases_while_calls_run(tmp_path, own_dsn):
    proc = ServerProcess(tmp_path, config=_databases(own_dsn)).start()
    try:
        with proc.channel() as channel:
            db, admin = _stubs(channel)
            started = admin.GetServerInfo(admin_pb.GetServerInfoRequest(), timeout=10).start_time
            assert _pool_max(admin, "pg") == 4
            extra = f'[databases.notes]\ndsn = "sqlite://{tmp_path / "notes.sqlite3"}"\n'

            def query() -> None:
                db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)

            with calls_running(query) as failures:
                reload(proc, _databases(own_dsn, pool_max=7, extra=extra))
                reply = db.Query(pb.QueryRequest(database="notes", sql="SELECT 40 + 2"), timeout=10)
                assert reply.rows[0].values[0].int_value == 42
                assert _pool_max(admin, "pg") == 7
                time.sleep(0.3)
            assert failures == []
            info = admin.GetServerInfo(admin_pb.GetServerInfoRequest(), timeout=10)
            assert info.start_time == started
        assert "config reloaded: databases added ['notes'], changed ['pg']" in proc.log()
    finally:
        proc.stop()


def test_a_removed_database_finishes_its_transaction_and_refuses_new_calls(tmp_path, own_dsn):
    pg_fetch(own_dsn, "CREATE TABLE IF NOT EXISTS reload_notes (note text)")
    second = f'[databases.old]\ndsn = "{own_dsn}"\npool = {{ min_size = 1, max_size = 2 }}\n'
    proc = ServerProcess(tmp_path, config=_databases(own_dsn, extra=second)).start()
    try:
        with proc.channel() as channel:
            db, admin = _stubs(channel)
            tx = db.BeginTransaction(pb.BeginTransactionRequest(database="old"), timeout=10)
            db.Execute(
                pb.ExecuteRequest(
                    transaction_id=tx.transaction_id,
                    sql="INSERT INTO reload_notes VALUES ('before the reload')",
                ),
                timeout=10,
            )

            def query() -> None:
                db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)

            with calls_running(query) as failures:
                reload(proc, _databases(own_dsn))
                with pytest.raises(grpc.RpcError) as caught:
                    db.Query(pb.QueryRequest(database="old", sql="SELECT 1"), timeout=10)
                error = call_error(caught.value)
                assert error.code == grpc.StatusCode.UNAVAILABLE
                assert "removed from the configuration" in error.message
                # The open transaction may finish.
                db.Execute(
                    pb.ExecuteRequest(
                        transaction_id=tx.transaction_id,
                        sql="INSERT INTO reload_notes VALUES ('after the reload')",
                    ),
                    timeout=10,
                )
                db.Commit(pb.CommitRequest(transaction_id=tx.transaction_id), timeout=10)
            assert failures == []
            rows = pg_fetch(own_dsn, "SELECT note FROM reload_notes ORDER BY note")
            assert [r["note"] for r in rows] == ["after the reload", "before the reload"]
            # Drained: its pool closes, and the name is unknown from then on.
            deadline = time.monotonic() + 10
            while "database old: drained" not in proc.log():
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
            with pytest.raises(grpc.RpcError) as caught:
                db.Query(pb.QueryRequest(database="old", sql="SELECT 1"), timeout=10)
            assert call_error(caught.value).reason == "UNKNOWN_DATABASE"
            listed = admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=10)
            assert [d.name for d in listed.databases] == ["pg"]
    finally:
        proc.stop()


def _principals(token: str) -> str:
    return f"""
[[principals]]
name = "app"
token_sha256 = "{token_sha256(token)}"
admin = true
databases = {{ pg = "write" }}
"""


def test_reload_rotates_a_token(tmp_path, own_dsn):
    proc = ServerProcess(tmp_path, config=_databases(own_dsn) + _principals("old-token")).start()
    try:
        with proc.channel() as channel:
            db, _ = _stubs(channel)

            def query(token: str) -> None:
                db.Query(
                    pb.QueryRequest(database="pg", sql="SELECT 1"),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )

            query("old-token")
            reload(proc, _databases(own_dsn) + _principals("new-token"))
            query("new-token")
            with pytest.raises(grpc.RpcError) as caught:
                query("old-token")
            assert call_error(caught.value).reason == "UNAUTHENTICATED"
    finally:
        proc.stop()


def _tls(certificates) -> str:
    return (
        f'[server]\ntls_cert = "{certificates.server.cert}"\n'
        f'tls_key = "{certificates.server.key}"\n'
    )


def _handshake(proc: ServerProcess, ca: Path) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with grpc.secure_channel(proc.address, credentials) as channel:
        db, _ = _stubs(channel)
        db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)


def test_reload_rotates_the_tls_certificate_for_new_handshakes(tmp_path, own_dsn):
    first = make_certificates(tmp_path / "first")
    second = make_certificates(tmp_path / "second")
    proc = ServerProcess(
        tmp_path / "server", config=_tls(first) + _databases(own_dsn), tls_ca=first.ca
    ).start()
    try:
        _handshake(proc, first.ca)
        # A channel opened before the rotation keeps its connection and its calls.
        with proc.channel() as kept:
            db, _ = _stubs(kept)
            db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)
            reload(proc, _tls(second) + _databases(own_dsn), expect="TLS certificate rotated")
            db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)
        _handshake(proc, second.ca)
        with pytest.raises(grpc.RpcError) as caught:
            _handshake(proc, first.ca)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.stop()


def test_a_bad_file_is_rejected_in_one_line_and_the_old_config_keeps_serving(tmp_path, own_dsn):
    proc = ServerProcess(tmp_path, config=_databases(own_dsn)).start()
    try:
        reload(
            proc,
            _databases(own_dsn, pool_max=0),
            expect="config reload rejected",
        )
        line = next(line for line in proc.log().splitlines() if "config reload rejected" in line)
        assert "databases.pg.pool.max_size" in line
        with proc.channel() as channel:
            db, admin = _stubs(channel)
            db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)
            assert _pool_max(admin, "pg") == 4
        assert proc.process is not None
        assert proc.process.poll() is None
    finally:
        proc.stop()


def test_dbgateway_reload_and_workers_reload_every_worker(tmp_path, own_dsn):
    proc = ServerProcess(tmp_path, config=_databases(own_dsn), args=["--workers", "2"]).start()
    try:
        assert proc.process is not None
        (proc.workdir / "dbgateway.toml").write_text(_databases(own_dsn, pool_max=6))
        done = subprocess.run(
            [str(BIN / "dbgateway"), "reload", "--pid", str(proc.process.pid)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert f"sent SIGHUP to {proc.process.pid}" in done.stdout
        deadline = time.monotonic() + 20
        while proc.log().count("config reloaded") < 2:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.05)
        with grpc.insecure_channel(proc.address) as channel:
            _, admin = _stubs(channel)
            # Each worker has its share of the new pool (6 / 2).
            assert _pool_max(admin, "pg") == 3
    finally:
        proc.stop()
