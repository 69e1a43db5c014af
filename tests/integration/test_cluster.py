"""Handle-based transactions behind a round-robin balancer: three real
``dbgateway serve`` replicas with ``[cluster] peers`` naming each other (and
one process with ``--workers 3``) forward every call on a transaction to the
replica that began it, so a caller needs no stickiness."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from dbgateway_server.cluster import Owner, TransactionIds
from tests.certs import make_certificates
from tests.support import BIN, ServerProcess, V, call_error, pg_fetch

pytestmark = pytest.mark.postgres

SECRET = "a-cluster-secret-for-the-tests-only"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replica_config(dsn: str, port: int, peers: list[int]) -> str:
    listed = ", ".join(f'"127.0.0.1:{p}"' for p in peers)
    return f"""
[server]
listen = "127.0.0.1:{port}"

[cluster]
peers = [{listed}]
secret = "${{CLUSTER_SECRET}}"

[databases.pg]
dsn = "{dsn}"
pool = {{ min_size = 1, max_size = 4 }}
"""


def start_cluster(root: Path, dsn: str, size: int) -> list[ServerProcess]:
    ports = [free_port() for _ in range(size)]
    replicas: list[ServerProcess] = []
    try:
        for index, port in enumerate(ports):
            replicas.append(
                ServerProcess(
                    root / f"replica-{index}",
                    config=_replica_config(dsn, port, ports),
                    start_command=[str(BIN / "dbgateway"), "serve"],
                    env={"CLUSTER_SECRET": SECRET},
                ).start()
            )
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


@pytest.fixture(scope="module")
def table(own_dsn: str) -> str:
    pg_fetch(own_dsn, "CREATE TABLE IF NOT EXISTS ledger (id serial PRIMARY KEY, note text)")
    return own_dsn


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, table: str) -> Iterator[list[ServerProcess]]:
    replicas = start_cluster(tmp_path_factory.mktemp("cluster"), table, 3)
    yield replicas
    for replica in replicas:
        replica.stop()


def round_robin(replicas: list[ServerProcess]) -> grpc.Channel:
    """One channel over every replica, picking the next one for each call
    (what a Kubernetes Service with client-side balancing does)."""
    target = "ipv4:" + ",".join(r.address for r in replicas)
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
    return grpc.insecure_channel(target, options=[("grpc.service_config", config)])


def _forwarded_calls(replica: ServerProcess) -> int:
    return replica.log().count("forwarded_to=")


def _count(dsn: str, note: str) -> int:
    return int(pg_fetch(dsn, f"SELECT count(*) AS n FROM ledger WHERE note = '{note}'")[0]["n"])


def test_a_transaction_answers_wherever_its_calls_land(cluster, table):
    before = sum(_forwarded_calls(r) for r in cluster)
    with round_robin(cluster) as channel:
        stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
        tx = stub.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
        for i in range(10):
            written = stub.Execute(
                pb.ExecuteRequest(
                    transaction_id=tx.transaction_id,
                    sql="INSERT INTO ledger (note) VALUES ($1)",
                    params=[V.of(string_value="round-robin")],
                ),
                timeout=10,
            )
            assert written.rows_affected == 1
            seen = stub.Query(
                pb.QueryRequest(
                    transaction_id=tx.transaction_id,
                    sql="SELECT count(*) FROM ledger WHERE note = 'round-robin'",
                ),
                timeout=10,
            )
            # The transaction's own writes, seen through whichever replica answered.
            assert seen.rows[0].values[0].int_value == i + 1
        # Nobody else sees them before the commit.
        assert _count(table, "round-robin") == 0
        stub.Commit(pb.CommitRequest(transaction_id=tx.transaction_id), timeout=10)
    assert _count(table, "round-robin") == 10
    forwarded = [_forwarded_calls(r) for r in cluster]
    # Two replicas of three did not own it: they forwarded about 2/3 of the 21 calls.
    assert sum(forwarded) - before >= 10
    assert sum(1 for r in cluster if _forwarded_calls(r) > 0) >= 2


def _grpcurl(replica: ServerProcess, method: str, body: dict[str, object]) -> dict[str, object]:
    done = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-d",
            json.dumps(body),
            replica.address,
            f"dbgateway.v1.DatabaseService/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_grpcurl_against_each_replica_in_turn(cluster, table):
    begun = _grpcurl(cluster[0], "BeginTransaction", {"database": "pg"})
    tx = begun["transaction_id"]
    for replica in (cluster[1], cluster[2], cluster[0]):
        _grpcurl(
            replica,
            "Execute",
            {
                "transaction_id": tx,
                "sql": "INSERT INTO ledger (note) VALUES ($1)",
                "params": [{"string_value": "grpcurl"}],
            },
        )
    assert _count(table, "grpcurl") == 0
    _grpcurl(cluster[2], "Commit", {"transaction_id": tx})
    assert _count(table, "grpcurl") == 3
    # Once committed, it is gone wherever it is asked for.
    with cluster[1].channel() as channel:
        stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Query(pb.QueryRequest(transaction_id=tx, sql="SELECT 1"), timeout=10)
    assert call_error(caught.value).reason == "TRANSACTION_NOT_FOUND"


def test_stream_query_on_a_transaction_is_forwarded_too(cluster, table):
    with cluster[0].channel() as first, cluster[1].channel() as second:
        owner = database_service_pb2_grpc.DatabaseServiceStub(first)
        other = database_service_pb2_grpc.DatabaseServiceStub(second)
        tx = owner.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
        other.Execute(
            pb.ExecuteRequest(
                transaction_id=tx.transaction_id,
                sql="INSERT INTO ledger (note) SELECT 'streamed' FROM generate_series(1, 500)",
            ),
            timeout=10,
        )
        messages = list(
            other.StreamQuery(
                pb.QueryRequest(
                    transaction_id=tx.transaction_id,
                    sql="SELECT id FROM ledger WHERE note = 'streamed'",
                ),
                timeout=10,
            )
        )
        rows = sum(len(m.rows) for m in messages)
        assert rows == 500
        assert messages[-1].stats.rows == 500
        other.Rollback(pb.RollbackRequest(transaction_id=tx.transaction_id), timeout=10)
    assert _count(table, "streamed") == 0


def test_errors_of_the_owner_reach_the_caller_unchanged(cluster):
    with cluster[0].channel() as first, cluster[2].channel() as third:
        owner = database_service_pb2_grpc.DatabaseServiceStub(first)
        other = database_service_pb2_grpc.DatabaseServiceStub(third)
        tx = owner.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            other.Query(
                pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT * FROM missing"),
                timeout=10,
            )
        error = call_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "SQL_ERROR"
        assert error.metadata["sqlstate"] == "42P01"
        assert 'relation "missing" does not exist' in error.message
        other.Rollback(pb.RollbackRequest(transaction_id=tx.transaction_id), timeout=10)


def test_the_owner_gone_gives_owner_unavailable_and_nothing_is_committed(tmp_path, table):
    replicas = start_cluster(tmp_path, table, 2)
    try:
        owner, other = replicas
        with owner.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            tx = stub.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
            stub.Execute(
                pb.ExecuteRequest(
                    transaction_id=tx.transaction_id,
                    sql="INSERT INTO ledger (note) VALUES ('orphaned')",
                ),
                timeout=10,
            )
        assert owner.process is not None
        owner.process.send_signal(signal.SIGKILL)
        owner.process.wait(10)
        with other.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            for call in (
                lambda: stub.Query(
                    pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT 1"), timeout=10
                ),
                lambda: stub.Commit(pb.CommitRequest(transaction_id=tx.transaction_id), timeout=10),
            ):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                error = call_error(caught.value)
                assert error.code == grpc.StatusCode.UNAVAILABLE
                assert error.reason == "TRANSACTION_OWNER_UNAVAILABLE"
                assert time.monotonic() - started < 5
            # The surviving replica keeps serving everything else.
            reply = stub.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=10)
            assert reply.rows[0].values[0].int_value == 1
        assert _count(table, "orphaned") == 0
        database = table.rsplit("/", 1)[1]
        deadline = time.monotonic() + 10
        while True:
            idle = pg_fetch(
                table,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                f"AND datname = '{database}'",
            )[0]["n"]
            if idle == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert idle == 0
    finally:
        for replica in replicas:
            replica.stop()


class ConnectionCounter:
    """A listening socket that counts who connects to it: the address a
    forged id names."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _parts(transaction_id: str) -> list[str]:
    parts = transaction_id.split(".")
    assert len(parts) == 3
    return parts


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_a_draining_owner_gives_owner_unavailable_not_a_refusal_to_resend(tmp_path, table):
    replicas = start_cluster(tmp_path, table, 2)
    try:
        owner, other = replicas
        assert owner.process is not None
        with owner.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            tx = stub.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
            # A call in flight keeps the owner draining (and its port answering).
            slow = threading.Thread(
                target=stub.Query,
                args=(pb.QueryRequest(database="pg", sql="SELECT pg_sleep(3)"),),
                kwargs={"timeout": 20},
            )
            slow.start()
            deadline = time.monotonic() + 10
            while "pg_sleep" not in str(
                pg_fetch(table, "SELECT query FROM pg_stat_activity WHERE state = 'active'")
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            owner.process.send_signal(signal.SIGTERM)
            while "drain: answering new calls" not in owner.log():
                assert time.monotonic() < deadline, owner.log()
                time.sleep(0.02)
            with other.channel() as other_channel:
                forwarded = database_service_pb2_grpc.DatabaseServiceStub(other_channel)
                with pytest.raises(grpc.RpcError) as caught:
                    forwarded.Query(
                        pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT 1"),
                        timeout=10,
                    )
            error = call_error(caught.value)
            assert error.code == grpc.StatusCode.UNAVAILABLE
            assert error.reason == "TRANSACTION_OWNER_UNAVAILABLE"
            assert "not_run" not in error.metadata
            slow.join(20)
        assert owner.process.wait(20) == 0
    finally:
        for replica in replicas:
            replica.stop()


def test_forged_ids_are_not_found_and_nothing_is_dialled(cluster):
    trap = ConnectionCounter()
    try:
        with cluster[0].channel() as first, cluster[1].channel() as second:
            owner = database_service_pb2_grpc.DatabaseServiceStub(first)
            other = database_service_pb2_grpc.DatabaseServiceStub(second)
            tx = owner.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
            random_part, owner_part, signature = _parts(tx.transaction_id)
            elsewhere = f"127.0.0.1:{trap.port}"
            flipped = ("A" if random_part[0] != "A" else "B") + random_part[1:]
            forged = {
                "changed owner": f"{random_part}.{_b64(elsewhere)}.{signature}",
                "changed bytes": f"{flipped}.{owner_part}.{signature}",
                "known owner, wrong signature": f"{random_part}.{owner_part}.{'x' * len(signature)}",
                # Signed with the real secret, yet naming an address outside
                # the peer list: still never dialled.
                "unlisted owner": TransactionIds(SECRET, Owner(elsewhere)).new(),
                "not an id at all": "0123456789abcdef",
            }
            for what, transaction_id in forged.items():
                for stub in (owner, other):
                    with pytest.raises(grpc.RpcError) as caught:
                        stub.Query(
                            pb.QueryRequest(transaction_id=transaction_id, sql="SELECT 1"),
                            timeout=10,
                        )
                    error = call_error(caught.value)
                    assert error.code == grpc.StatusCode.NOT_FOUND, what
                    assert error.reason == "TRANSACTION_NOT_FOUND", what
            # A client cannot pose as a peer either.
            with pytest.raises(grpc.RpcError) as caught:
                other.Query(
                    pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT 1"),
                    metadata=(("x-dbgateway-forwarded", "1.bogus"),),
                    timeout=10,
                )
            assert call_error(caught.value).reason == "UNAUTHENTICATED"
            # The real id still works from anywhere.
            other.Query(
                pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT 1"), timeout=10
            )
            other.Rollback(pb.RollbackRequest(transaction_id=tx.transaction_id), timeout=10)
        time.sleep(0.5)
        assert trap.accepted == 0
    finally:
        trap.close()


def test_workers_forward_transactions_to_each_other(tmp_path, table):
    config = f"""
[databases.pg]
dsn = "{table}"
pool = {{ min_size = 1, max_size = 6 }}
"""
    proc = ServerProcess(tmp_path, config=config, args=["--workers", "3"]).start()
    try:
        assert proc.process is not None
        begin_channel = grpc.insecure_channel(
            proc.address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        with begin_channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(begin_channel)
            tx = stub.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
        workers_seen: set[str] = set()
        for i in range(20):
            # A new connection each time: the kernel spreads them over the workers.
            with grpc.insecure_channel(
                proc.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
                if i % 2 == 0:
                    stub.Execute(
                        pb.ExecuteRequest(
                            transaction_id=tx.transaction_id,
                            sql="INSERT INTO ledger (note) VALUES ('workers')",
                        ),
                        timeout=10,
                    )
                else:
                    reply = stub.Query(
                        pb.QueryRequest(
                            transaction_id=tx.transaction_id,
                            sql="SELECT pg_backend_pid()",
                        ),
                        timeout=10,
                    )
                    workers_seen.add(str(reply.rows[0].values[0].int_value))
        # One transaction, one connection: every call ran on the same backend.
        assert len(workers_seen) == 1
        assert _count(table, "workers") == 0
        with grpc.insecure_channel(
            proc.address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            stub.Commit(pb.CommitRequest(transaction_id=tx.transaction_id), timeout=10)
        assert _count(table, "workers") == 10
        assert "forwarded_to=unix:" in proc.log()
    finally:
        proc.stop()


def test_forwarding_between_replicas_speaks_their_tls(tmp_path, table):
    certificates = make_certificates(tmp_path / "certs")
    ports = [free_port(), free_port()]
    replicas: list[ServerProcess] = []
    tls = (
        f'tls_cert = "{certificates.server.cert}"\n'
        f'tls_key = "{certificates.server.key}"\n'
        f'tls_client_ca = "{certificates.ca}"\n'
    )
    # Mutual TLS between peers: each shows a client certificate of the same CA.
    peer_tls = (
        f'tls_cert = "{certificates.client.cert}"\n'
        f'tls_key = "{certificates.client.key}"\n'
        f'tls_ca = "{certificates.ca}"\n'
    )
    try:
        for index, port in enumerate(ports):
            config = (
                _replica_config(table, port, ports)
                .replace(f'listen = "127.0.0.1:{port}"\n', f'listen = "127.0.0.1:{port}"\n{tls}')
                .replace("[cluster]\n", f"[cluster]\n{peer_tls}")
            )
            replicas.append(
                ServerProcess(
                    tmp_path / f"replica-{index}",
                    config=config,
                    start_command=[str(BIN / "dbgateway"), "serve"],
                    env={"CLUSTER_SECRET": SECRET},
                    tls_ca=certificates.ca,
                ).start()
            )
        client = certificates.client
        with (
            replicas[0].channel(cert=client.cert, key=client.key) as first,
            replicas[1].channel(cert=client.cert, key=client.key) as second,
        ):
            owner = database_service_pb2_grpc.DatabaseServiceStub(first)
            other = database_service_pb2_grpc.DatabaseServiceStub(second)
            tx = owner.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
            reply = other.Query(
                pb.QueryRequest(transaction_id=tx.transaction_id, sql="SELECT 7"), timeout=10
            )
            assert reply.rows[0].values[0].int_value == 7
            other.Commit(pb.CommitRequest(transaction_id=tx.transaction_id), timeout=10)
        assert "forwarded_to=127.0.0.1:" in replicas[1].log()
    finally:
        for replica in replicas:
            replica.stop()
