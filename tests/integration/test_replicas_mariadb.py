"""Read replicas on real MariaDB GTID replication built by the test: routing
by read preference, a stopped SQL thread, a killed replica, and
read-your-writes with GTID tokens. Which server answered is proved by the
database itself: ``@@server_id`` is 1 on the primary and 2 on the replica."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.replication import MariaDBReplication, mariadb_replication, wait_for
from tests.support import ServerProcess, V, call_error

pytestmark = pytest.mark.mysql

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PRIMARY = pb.READ_PREFERENCE_PRIMARY
PREFERRED = pb.READ_PREFERENCE_REPLICA_PREFERRED
REPLICA = pb.READ_PREFERENCE_REPLICA
PRIMARY_ID, REPLICA_ID = 1, 2
REPLICA_WAIT = 0.3


@dataclass
class Replicated:
    cluster: MariaDBReplication
    server: ServerProcess
    db: database_service_pb2_grpc.DatabaseServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub

    def server_id(self, preference: int, **options: object) -> int:
        reply = self.db.Query(
            pb.QueryRequest(
                database="maria",
                sql="SELECT CAST(@@server_id AS SIGNED)",
                options=pb.RequestOptions(read_preference=preference, **options),  # type: ignore[arg-type]
            ),
            timeout=10,
        )
        return reply.rows[0].values[0].int_value

    def endpoint(self, name: str) -> admin_pb.EndpointInfo:
        listing = self.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
        info = next(d for d in listing.databases if d.name == "maria")
        return next(e for e in info.endpoints if e.name == name)

    def status(self, service: str) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

    def count(self, value: str, **options: object) -> tuple[int, int]:
        """How many ``notes`` rows have ``value``, and which server said so."""
        reply = self.db.Query(
            pb.QueryRequest(
                database="maria",
                sql="SELECT count(*), CAST(@@server_id AS SIGNED) FROM notes WHERE body = %s",
                params=[V.of(string_value=value)],
                options=pb.RequestOptions(**options),  # type: ignore[arg-type]
            ),
            timeout=10,
        )
        row = reply.rows[0].values
        return row[0].int_value, row[1].int_value


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """A MariaDB primary + GTID replica of the test's own, and a gateway whose
    database ``maria`` reads from the replica by default (lag bound 5 min)."""
    with mariadb_replication(tmp_path_factory.mktemp("mariadb-replication")) as cluster:
        cluster.primary.fetch(
            "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)", database="app"
        )
        wait_for("the table on the replica", cluster.caught_up)
        config = f"""
[databases.maria]
dsn = "{cluster.primary.dsn}"
replicas = ["{cluster.replica.dsn}"]
read_preference = "replica_preferred"
max_replica_lag = "5m"
replica_wait = "{int(REPLICA_WAIT * 1000)}ms"
connect_timeout = 1
pool = {{ min_size = 1, max_size = 6, acquire_timeout = 3 }}
breaker = {{ open_time = 1, max_open_time = 2 }}
"""
        server = ServerProcess(tmp_path_factory.mktemp("replicas-mariadb"), config=config)
        server.start()
        try:
            with server.channel() as channel:
                yield Replicated(
                    cluster,
                    server,
                    database_service_pb2_grpc.DatabaseServiceStub(channel),
                    admin_service_pb2_grpc.AdminServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
        finally:
            server.stop()


def test_reads_follow_the_read_preference_and_writes_go_to_the_primary(
    replicated: Replicated,
) -> None:
    assert replicated.server_id(pb.READ_PREFERENCE_UNSPECIFIED) == REPLICA_ID
    assert replicated.server_id(REPLICA) == REPLICA_ID
    assert replicated.server_id(PRIMARY) == PRIMARY_ID
    written = replicated.db.Execute(
        pb.ExecuteRequest(
            database="maria",
            sql="INSERT INTO notes (body) VALUES (CONCAT('from ', @@server_id))",
            options=pb.RequestOptions(read_preference=REPLICA),
        ),
        timeout=10,
    )
    assert written.rows_affected == 1
    assert replicated.count("from 1", read_preference=PRIMARY) == (1, PRIMARY_ID)


def test_a_read_only_transaction_with_replica_runs_there_and_the_database_refuses_writes(
    replicated: Replicated,
) -> None:
    db = replicated.db
    begun = db.BeginTransaction(
        pb.BeginTransactionRequest(
            database="maria",
            options=pb.TransactionOptions(read_only=True, read_preference=REPLICA),
        ),
        timeout=10,
    )
    try:
        reply = db.Query(
            pb.QueryRequest(
                sql="SELECT CAST(@@server_id AS SIGNED)", transaction_id=begun.transaction_id
            ),
            timeout=10,
        )
        assert reply.rows[0].values[0].int_value == REPLICA_ID
        with pytest.raises(grpc.RpcError) as info:
            db.Execute(
                pb.ExecuteRequest(
                    sql="INSERT INTO notes (body) VALUES ('nope')",
                    transaction_id=begun.transaction_id,
                ),
                timeout=10,
            )
        # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
        assert call_error(info.value).metadata.get("vendor_code") == "1792"
    finally:
        db.Rollback(pb.RollbackRequest(transaction_id=begun.transaction_id), timeout=10)


def test_a_stopped_sql_thread_sends_reads_to_the_primary_until_it_runs_again(
    replicated: Replicated,
) -> None:
    cluster = replicated.cluster
    cluster.stop_sql_thread()
    try:
        # Seconds_Behind_Master is NULL: replication is broken, the replica unusable.
        wait_for(
            "reads to leave the replica",
            lambda: replicated.server_id(PREFERRED) == PRIMARY_ID,
            timeout=10,
        )
        replica = replicated.endpoint("replica-1")
        assert not replica.serving
        assert not replica.HasField("lag")  # unknown
        with pytest.raises(grpc.RpcError) as info:
            replicated.server_id(REPLICA)
        error = call_error(info.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "NO_REPLICA_AVAILABLE")
        assert replicated.status("db/maria/replicas") == NOT_SERVING
    finally:
        cluster.start_sql_thread()
    wait_for(
        "reads to return to the replica",
        lambda: replicated.server_id(PREFERRED) == REPLICA_ID,
        timeout=10,
    )
    assert replicated.endpoint("replica-1").HasField("lag")
    assert replicated.status("db/maria/replicas") == SERVING


def test_read_after_a_gtid_token_sees_the_write_while_the_replica_is_behind(
    replicated: Replicated,
) -> None:
    cluster = replicated.cluster
    # A delayed replica: usable (Seconds_Behind_Master stays within the bound) but stale.
    cluster.replica.fetch("STOP SLAVE")
    cluster.replica.fetch("CHANGE MASTER TO MASTER_DELAY = 60")
    cluster.replica.fetch("START SLAVE")
    try:
        # While the slave threads were stopped its lag was unknown; wait until
        # the monitor has measured it again.
        wait_for("the replica to be usable", lambda: replicated.endpoint("replica-1").serving)
        written = replicated.db.Execute(
            pb.ExecuteRequest(
                database="maria",
                sql="INSERT INTO notes (body) VALUES (%s)",
                params=[V.of(string_value="mine")],
            ),
            timeout=10,
        )
        assert written.read_token.startswith("0-1-")  # domain 0, server 1: a GTID
        assert replicated.count("mine", read_preference=REPLICA) == (0, REPLICA_ID)
        started = time.monotonic()
        assert replicated.count("mine", read_preference=REPLICA, read_after=written.read_token) == (
            1,
            PRIMARY_ID,
        )
        assert time.monotonic() - started >= REPLICA_WAIT
    finally:
        cluster.replica.fetch("STOP SLAVE")
        cluster.replica.fetch("CHANGE MASTER TO MASTER_DELAY = 0")
        cluster.replica.fetch("START SLAVE")
    wait_for("the replica to catch up", cluster.caught_up)
    # Its lag was unknown while the SQL thread stopped; the monitor sees it again.
    wait_for("the replica to be usable", lambda: replicated.endpoint("replica-1").serving)
    assert replicated.count("mine", read_preference=REPLICA, read_after=written.read_token) == (
        1,
        REPLICA_ID,
    )


def test_a_read_token_that_is_not_a_gtid_is_refused_as_invalid(replicated: Replicated) -> None:
    wait_for("the replica to be usable", lambda: replicated.endpoint("replica-1").serving)
    for token in ("abc", "0-1", "0-1-2;SELECT 1", "0/3000148"):
        with pytest.raises(grpc.RpcError) as info:
            replicated.count("x", read_preference=REPLICA, read_after=token)
        error = call_error(info.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, token
        assert error.field_violations[0][0] == "options.read_after"
    assert replicated.server_id(REPLICA) == REPLICA_ID  # and it keeps serving


def test_a_killed_replica_leaves_replica_preferred_reads_answering_and_recovers(
    replicated: Replicated,
) -> None:
    cluster = replicated.cluster
    cluster.replica.kill()
    try:
        for _ in range(20):
            assert replicated.server_id(PREFERRED) == PRIMARY_ID
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            replicated.server_id(REPLICA)
        assert time.monotonic() - started < 2.0
        assert call_error(info.value).reason == "NO_REPLICA_AVAILABLE"
    finally:
        cluster.replica.start()
    wait_for(
        "reads to return to the restarted replica",
        lambda: replicated.server_id(REPLICA) == REPLICA_ID,
        timeout=20,
    )
    assert replicated.status("db/maria/replicas") == SERVING
