"""Read replicas on real PostgreSQL streaming replication built by the test:
routing by read preference, lag-aware fallback, outages of the replica, and
read-your-writes tokens. Which server answered is proved by the database
itself: ``pg_is_in_recovery()`` is true only on the replica."""

from __future__ import annotations

import collections
import concurrent.futures
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.replication import PostgresReplication, postgres_replication, wait_for
from tests.support import BIN, ServerProcess, V, call_error

pytestmark = pytest.mark.postgres

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PRIMARY = pb.READ_PREFERENCE_PRIMARY
PREFERRED = pb.READ_PREFERENCE_REPLICA_PREFERRED
REPLICA = pb.READ_PREFERENCE_REPLICA
#: ``lagged``: a replica more than this far behind takes no reads.
MAX_LAG = 1.0
#: ``ryw``: how long a read_after read waits for the replica.
REPLICA_WAIT = 0.3


@dataclass
class Replicated:
    cluster: PostgresReplication
    server: ServerProcess
    db: database_service_pb2_grpc.DatabaseServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub

    def on_replica(self, database: str, preference: int, **options: object) -> bool:
        """Where a read with ``preference`` ran: True on the replica."""
        reply = self.db.Query(
            pb.QueryRequest(
                database=database,
                sql="SELECT pg_is_in_recovery()",
                options=pb.RequestOptions(read_preference=preference, **options),  # type: ignore[arg-type]
            ),
            timeout=10,
        )
        return reply.rows[0].values[0].bool_value

    def endpoint(self, database: str, name: str) -> admin_pb.EndpointInfo:
        listing = self.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
        info = next(d for d in listing.databases if d.name == database)
        return next(e for e in info.endpoints if e.name == name)

    def status(self, service: str) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

    def insert(self, database: str, value: str) -> pb.ExecuteResponse:
        return self.db.Execute(
            pb.ExecuteRequest(
                database=database,
                sql="INSERT INTO notes (body) VALUES ($1)",
                params=[V.of(string_value=value)],
            ),
            timeout=10,
        )

    def count(self, database: str, value: str, **options: object) -> tuple[int, bool]:
        """How many ``notes`` rows have ``value``, and whether the replica said so."""
        reply = self.db.Query(
            pb.QueryRequest(
                database=database,
                sql="SELECT count(*), pg_is_in_recovery() FROM notes WHERE body = $1",
                params=[V.of(string_value=value)],
                options=pb.RequestOptions(**options),  # type: ignore[arg-type]
            ),
            timeout=10,
        )
        row = reply.rows[0].values
        return row[0].int_value, row[1].bool_value


def _config(cluster: PostgresReplication) -> str:
    primary, replica = cluster.primary.dsn, cluster.replica.dsn
    common = (
        f'dsn = "{primary}"\nreplicas = ["{replica}"]\nconnect_timeout = 1\n'
        "pool = { min_size = 1, max_size = 10, acquire_timeout = 3 }\n"
        "breaker = { open_time = 1, max_open_time = 2 }\n"
    )
    return (
        f'[databases.lagged]\n{common}read_preference = "replica_preferred"\n'
        f'max_replica_lag = "{int(MAX_LAG * 1000)}ms"\n\n'
        f'[databases.ryw]\n{common}max_replica_lag = "5m"\n'
        f'replica_wait = "{int(REPLICA_WAIT * 1000)}ms"\n'
    )


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """A PostgreSQL primary + streaming replica of the test's own, and a
    gateway with two databases on them: ``lagged`` (replica_preferred by
    default, max_replica_lag 1 s) and ``ryw`` (primary by default, lag bound
    5 min, replica_wait 300 ms)."""
    with postgres_replication() as cluster:
        cluster.fetch(cluster.primary, "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        wait_for("the table on the replica", cluster.caught_up)
        server = ServerProcess(tmp_path_factory.mktemp("replicas-pg"), config=_config(cluster))
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


def test_replica_preferred_reads_run_on_the_replica(replicated: Replicated) -> None:
    assert replicated.on_replica("lagged", PREFERRED)
    assert replicated.on_replica("lagged", REPLICA)
    # The database's default for lagged is replica_preferred ...
    assert replicated.on_replica("lagged", pb.READ_PREFERENCE_UNSPECIFIED)
    # ... and for ryw it is primary.
    assert not replicated.on_replica("ryw", pb.READ_PREFERENCE_UNSPECIFIED)
    assert not replicated.on_replica("lagged", PRIMARY)


def test_writes_run_on_the_primary_whatever_the_read_preference(replicated: Replicated) -> None:
    reply = replicated.db.Execute(
        pb.ExecuteRequest(
            database="lagged",
            sql="INSERT INTO notes (body) VALUES ('write') RETURNING pg_is_in_recovery()",
            options=pb.RequestOptions(read_preference=REPLICA),
        ),
        timeout=10,
    )
    assert reply.rows_affected == 1
    assert reply.rows[0].values[0].bool_value is False


def test_stream_query_follows_the_read_preference(replicated: Replicated) -> None:
    def streamed(preference: int) -> bool:
        messages = list(
            replicated.db.StreamQuery(
                pb.QueryRequest(
                    database="lagged",
                    sql="SELECT pg_is_in_recovery() FROM generate_series(1, 3)",
                    options=pb.RequestOptions(read_preference=preference),
                ),
                timeout=10,
            )
        )
        values = {r.values[0].bool_value for m in messages for r in m.rows}
        assert len(values) == 1
        return values.pop()

    assert streamed(REPLICA) is True
    assert streamed(PRIMARY) is False


def test_a_read_only_handle_transaction_with_replica_runs_there_and_the_database_refuses_writes(
    replicated: Replicated,
) -> None:
    db = replicated.db
    begun = db.BeginTransaction(
        pb.BeginTransactionRequest(
            database="ryw",
            options=pb.TransactionOptions(read_only=True, read_preference=REPLICA),
        ),
        timeout=10,
    )
    try:
        for _ in range(3):  # every call carrying its id stays on the replica
            reply = db.Query(
                pb.QueryRequest(
                    sql="SELECT pg_is_in_recovery()", transaction_id=begun.transaction_id
                ),
                timeout=10,
            )
            assert reply.rows[0].values[0].bool_value is True
        with pytest.raises(grpc.RpcError) as info:
            db.Execute(
                pb.ExecuteRequest(
                    sql="INSERT INTO notes (body) VALUES ('nope')",
                    transaction_id=begun.transaction_id,
                ),
                timeout=10,
            )
        error = call_error(info.value)
        assert error.metadata.get("sqlstate") == "25006"  # read_only_sql_transaction
        # The configured database, and the endpoint that refused it.
        assert (error.metadata["database"], error.metadata["endpoint"]) == ("ryw", "replica-1")
    finally:
        db.Rollback(pb.RollbackRequest(transaction_id=begun.transaction_id), timeout=10)


def test_a_read_only_run_transaction_with_replica_runs_on_the_replica(
    replicated: Replicated,
) -> None:
    def run(read_only: bool) -> bool:
        reply = replicated.db.RunTransaction(
            pb.RunTransactionRequest(
                database="ryw",
                statements=[pb.Statement(sql="SELECT pg_is_in_recovery()")],
                options=pb.TransactionOptions(read_only=read_only, read_preference=REPLICA),
            ),
            timeout=10,
        )
        return reply.results[0].rows[0].values[0].bool_value

    assert run(read_only=True) is True
    assert run(read_only=False) is False  # read-write: the primary, whatever it asks


def test_a_read_write_transaction_runs_on_the_primary_whatever_it_asks(
    replicated: Replicated,
) -> None:
    def requests() -> Iterator[pb.TransactionRequest]:
        yield pb.TransactionRequest(
            begin=pb.TransactionRequest.Begin(
                database="lagged", options=pb.TransactionOptions(read_preference=REPLICA)
            )
        )
        yield pb.TransactionRequest(statement=pb.Statement(sql="SELECT pg_is_in_recovery()"))
        yield pb.TransactionRequest(commit=pb.TransactionRequest.Commit())

    replies = list(replicated.db.Transaction(requests(), timeout=10))
    assert replies[1].result.rows[0].values[0].bool_value is False
    assert replies[2].HasField("committed")


def test_a_read_only_stream_transaction_with_replica_runs_on_the_replica(
    replicated: Replicated,
) -> None:
    def requests() -> Iterator[pb.TransactionRequest]:
        yield pb.TransactionRequest(
            begin=pb.TransactionRequest.Begin(
                database="lagged",
                options=pb.TransactionOptions(read_only=True, read_preference=REPLICA),
            )
        )
        yield pb.TransactionRequest(statement=pb.Statement(sql="SELECT pg_is_in_recovery()"))
        yield pb.TransactionRequest(
            statement=pb.Statement(sql="INSERT INTO notes (body) VALUES ('refused')")
        )
        yield pb.TransactionRequest(rollback=pb.TransactionRequest.Rollback())

    replies = list(replicated.db.Transaction(requests(), timeout=10))
    assert replies[1].result.rows[0].values[0].bool_value is True
    assert replies[2].result.HasField("error")


def test_list_databases_shows_each_endpoint_without_credentials(replicated: Replicated) -> None:
    listing = replicated.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
    info = next(d for d in listing.databases if d.name == "lagged")
    primary, replica = info.endpoints
    assert (primary.name, primary.role) == ("primary", admin_pb.ENDPOINT_ROLE_PRIMARY)
    assert (replica.name, replica.role) == ("replica-1", admin_pb.ENDPOINT_ROLE_REPLICA)
    assert primary.address == f"127.0.0.1:{replicated.cluster.primary.port}"
    assert replica.address == f"127.0.0.1:{replicated.cluster.replica.port}"
    assert replica.serving
    assert replica.circuit_state == admin_pb.CIRCUIT_STATE_CLOSED
    assert replica.HasField("lag")
    assert replica.lag.ToTimedelta().total_seconds() < MAX_LAG
    assert replica.pool.max_size == 10
    assert "postgres@" not in str(listing)
    assert replicated.status("db/lagged/replicas") == SERVING


def test_a_lagging_replica_is_left_for_the_primary_and_used_again_once_it_catches_up(
    replicated: Replicated,
) -> None:
    cluster = replicated.cluster
    cluster.pause_replay()
    try:
        replicated.insert("lagged", "while paused")
        # Past max_replica_lag (measured by the monitor), reads go to the primary.
        wait_for(
            "reads to leave the lagging replica",
            lambda: not replicated.on_replica("lagged", PREFERRED),
            timeout=MAX_LAG + 10,
        )
        assert replicated.count("lagged", "while paused") == (1, False)
        replica = replicated.endpoint("lagged", "replica-1")
        assert not replica.serving
        assert replica.lag.ToTimedelta().total_seconds() > MAX_LAG
        assert replica.circuit_state == admin_pb.CIRCUIT_STATE_CLOSED  # lag, not an outage
        # REPLICA has nowhere to go.
        with pytest.raises(grpc.RpcError) as info:
            replicated.on_replica("lagged", REPLICA)
        error = call_error(info.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "NO_REPLICA_AVAILABLE",
        )
        assert "lag" in error.message
        assert replicated.status("db/lagged/replicas") == NOT_SERVING
        assert replicated.status("db/lagged") == SERVING
    finally:
        cluster.resume_replay()
    wait_for(
        "reads to return to the replica",
        lambda: replicated.on_replica("lagged", PREFERRED),
        timeout=10,
    )
    assert replicated.count("lagged", "while paused") == (1, True)
    assert replicated.status("db/lagged/replicas") == SERVING


def test_read_after_a_write_sees_it_even_while_the_replica_lags(replicated: Replicated) -> None:
    cluster = replicated.cluster
    wait_for("the replica to catch up", cluster.caught_up)
    wait_for("the replica to be usable", lambda: replicated.endpoint("ryw", "replica-1").serving)
    cluster.pause_replay()
    try:
        written = replicated.insert("ryw", "my own write")
        assert written.read_token
        # Without the token, the replica's stale answer ...
        assert replicated.count("ryw", "my own write", read_preference=REPLICA) == (0, True)
        # ... with it, the write, from the primary once replica_wait has passed.
        started = time.monotonic()
        seen = replicated.count(
            "ryw", "my own write", read_preference=REPLICA, read_after=written.read_token
        )
        assert seen == (1, False)
        assert time.monotonic() - started >= REPLICA_WAIT
    finally:
        cluster.resume_replay()
    wait_for("the replica to catch up", cluster.caught_up)
    # Once replayed, the same token is served by the replica.
    assert replicated.count(
        "ryw", "my own write", read_preference=PREFERRED, read_after=written.read_token
    ) == (1, True)


def test_every_committed_write_kind_returns_a_read_token_that_the_replica_reaches(
    replicated: Replicated,
) -> None:
    db = replicated.db
    tokens = [replicated.insert("ryw", "execute").read_token]
    tokens.append(
        db.ExecuteBatch(
            pb.ExecuteBatchRequest(
                database="ryw",
                sql="INSERT INTO notes (body) VALUES ($1)",
                param_sets=[pb.ParamSet(params=[V.of(string_value="batch")])],
            ),
            timeout=10,
        ).read_token
    )
    tokens.append(
        db.RunTransaction(
            pb.RunTransactionRequest(
                database="ryw",
                statements=[pb.Statement(sql="INSERT INTO notes (body) VALUES ('run')")],
            ),
            timeout=10,
        ).read_token
    )
    begun = db.BeginTransaction(pb.BeginTransactionRequest(database="ryw"), timeout=10)
    db.Execute(
        pb.ExecuteRequest(
            sql="INSERT INTO notes (body) VALUES ('handle')", transaction_id=begun.transaction_id
        ),
        timeout=10,
    )
    tokens.append(
        db.Commit(pb.CommitRequest(transaction_id=begun.transaction_id), timeout=10).read_token
    )
    assert all(tokens), tokens
    wait_for("the replica to catch up", replicated.cluster.caught_up)
    for token, body in zip(tokens, ("execute", "batch", "run", "handle"), strict=True):
        assert replicated.count("ryw", body, read_preference=REPLICA, read_after=token) == (
            1,
            True,
        )


def test_a_read_token_that_is_not_one_is_refused_as_invalid(replicated: Replicated) -> None:
    with pytest.raises(grpc.RpcError) as info:
        replicated.count("ryw", "x", read_preference=REPLICA, read_after="not a token")
    error = call_error(info.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("options.read_after", "not a read_token of this PostgreSQL database") in (
        error.field_violations
    )


def test_an_unknown_read_preference_is_refused_as_invalid(replicated: Replicated) -> None:
    with pytest.raises(grpc.RpcError) as info:
        replicated.on_replica("lagged", 99)
    error = call_error(info.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == [("options.read_preference", "unknown read preference 99")]
    with pytest.raises(grpc.RpcError) as info:
        replicated.count("ryw", "x", read_preference=REPLICA, read_after="0/1" * 2000)
    assert call_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_reload_adds_replicas_to_a_database_and_takes_them_away(replicated: Replicated) -> None:
    from tests.integration.test_reload import reload

    cluster, server = replicated.cluster, replicated.server
    original = _config(cluster)
    plain = f'[databases.added]\ndsn = "{cluster.primary.dsn}"\n'
    reload(server, original + plain)
    assert not replicated.on_replica("added", PREFERRED)  # no replicas: the primary
    with_replica = plain + f'replicas = ["{cluster.replica.dsn}"]\n'
    try:
        reload(server, original + with_replica)
        wait_for(
            "db/added/replicas SERVING",
            lambda: replicated.status("db/added/replicas") == SERVING,
            timeout=10,
        )
        assert replicated.on_replica("added", PREFERRED)
        reload(server, original + plain)
        assert not replicated.on_replica("added", PREFERRED)
        assert replicated.status("db/added/replicas") == NOT_SERVING
    finally:
        reload(server, original)


def test_a_killed_replica_leaves_replica_preferred_reads_answering_and_recovers(
    replicated: Replicated,
) -> None:
    cluster = replicated.cluster
    cluster.replica.kill()
    try:
        # Not one error for REPLICA_PREFERRED, from the first read after the kill.
        for _ in range(20):
            assert replicated.on_replica("lagged", PREFERRED) is False
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            replicated.on_replica("lagged", REPLICA)
        assert time.monotonic() - started < 2.0  # fails fast, no waiting on the dead replica
        error = call_error(info.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "NO_REPLICA_AVAILABLE")
        wait_for(
            "db/lagged/replicas NOT_SERVING",
            lambda: replicated.status("db/lagged/replicas") == NOT_SERVING,
            timeout=10,
        )
        assert replicated.status("db/lagged") == SERVING
    finally:
        cluster.replica.start()
    # Recovers by itself within the breaker's probe interval (open_time 1 s, at most 2 s).
    wait_for(
        "reads to return to the restarted replica",
        lambda: replicated.on_replica("lagged", REPLICA),
        timeout=15,
    )
    assert replicated.status("db/lagged/replicas") == SERVING
    assert replicated.endpoint("lagged", "replica-1").serving


LOAD_SECONDS = 20.0
LOAD_READERS = 6
LOAD_WRITERS = 2


@pytest.mark.slow
def test_mixed_load_survives_a_replica_killed_and_restarted(replicated: Replicated) -> None:
    """Reads (REPLICA_PREFERRED) and writes for 20 s while the replica is
    killed and restarted: no read fails, every acknowledged write is there,
    and the pools are back within their limits with nothing left in use."""
    cluster = replicated.cluster
    wait_for("the replica to be used", lambda: replicated.on_replica("lagged", REPLICA))
    stop = threading.Event()
    read_errors: list[str] = []
    reads_on: collections.Counter[bool] = collections.Counter()
    written: list[str] = []
    write_errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                reads_on[replicated.on_replica("lagged", PREFERRED)] += 1
            except grpc.RpcError as exc:
                error = call_error(exc)
                read_errors.append(f"{error.code.name} {error.reason}: {error.message}")

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            body = f"load-{n}-{i}"
            i += 1
            try:
                replicated.insert("lagged", body)
            except grpc.RpcError as exc:
                write_errors.append(f"{body}: {call_error(exc).reason}")
                continue
            written.append(body)

    with concurrent.futures.ThreadPoolExecutor(LOAD_READERS + LOAD_WRITERS) as pool:
        futures = [pool.submit(reader) for _ in range(LOAD_READERS)]
        futures += [pool.submit(writer, n) for n in range(LOAD_WRITERS)]
        try:
            time.sleep(LOAD_SECONDS / 4)
            cluster.replica.kill()
            time.sleep(LOAD_SECONDS / 4)
        finally:
            cluster.replica.start()
            time.sleep(LOAD_SECONDS / 2)
            stop.set()
        for future in futures:
            future.result()

    total = sum(reads_on.values()) + len(written)
    assert total >= 500, f"only {total} calls in {LOAD_SECONDS}s"
    assert read_errors == []
    assert write_errors == []  # the primary stayed up: every write was acknowledged
    assert reads_on[True] > 0  # the replica took reads before the kill and after the restart
    assert reads_on[False] > 0  # and the primary while it was down
    rows = cluster.fetch(
        cluster.primary, "SELECT count(*) FROM notes WHERE body = ANY($1::text[])", written
    )
    assert rows[0][0] == len(written)  # no acknowledged write lost
    listing = replicated.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
    for endpoint in next(d for d in listing.databases if d.name == "lagged").endpoints:
        wait_for(
            f"{endpoint.name}'s connections to be back in its pool",
            lambda name=endpoint.name: replicated.endpoint("lagged", name).pool.in_use == 0,
            timeout=5,
        )
        pool_stats = replicated.endpoint("lagged", endpoint.name).pool
        assert pool_stats.size <= pool_stats.max_size
        assert pool_stats.waiting == 0


def test_the_python_client_carries_read_tokens_for_you(replicated: Replicated) -> None:
    import dbgateway

    cluster = replicated.cluster
    wait_for("the replica to catch up", cluster.caught_up)
    wait_for("the replica to be usable", lambda: replicated.endpoint("ryw", "replica-1").serving)
    sql = "SELECT count(*), pg_is_in_recovery() FROM notes WHERE body = $1"
    with dbgateway.Client(replicated.server.address) as client:
        cluster.pause_replay()
        try:
            with client.read_your_writes():
                written = client.execute(
                    "INSERT INTO notes (body) VALUES ($1)", "client write", database="ryw"
                )
                assert written.read_token
                seen = client.query(sql, "client write", database="ryw", read_preference="replica")
                assert seen.rows == [(1, False)]  # from the primary: the replica lags
            # Outside the block, no token: the replica's stale answer.
            stale = client.query(sql, "client write", database="ryw", read_preference="replica")
            assert stale.rows == [(0, True)]
            # An explicit token works anywhere.
            explicit = client.query(
                sql,
                "client write",
                database="ryw",
                read_preference=dbgateway.ReadPreference.REPLICA,
                read_after=written.read_token,
            )
            assert explicit.rows == [(1, False)]
        finally:
            cluster.resume_replay()


async def test_the_async_client_keeps_the_token_of_a_committed_transaction(
    replicated: Replicated,
) -> None:
    import dbgateway

    sql = "SELECT count(*) FROM notes WHERE body = $1"
    async with dbgateway.AsyncClient(replicated.server.address) as client:
        async with client.read_your_writes() as session:
            async with client.transaction(database="ryw") as tx:
                await tx.execute("INSERT INTO notes (body) VALUES ($1)", "async write")
            assert tx.read_token
            assert session.tokens == {"ryw": tx.read_token}
            seen = await client.query(
                sql, "async write", database="ryw", read_preference="replica_preferred"
            )
            assert seen.rows == [(1,)]
        with pytest.raises(ValueError, match="read_preference must be one of"):
            await client.query(sql, "x", database="ryw", read_preference="nearest")


def test_the_databases_command_lists_the_endpoints(replicated: Replicated) -> None:
    result = subprocess.run(
        [str(BIN / "dbgateway"), "databases", "--server", replicated.server.address],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [line.split() for line in result.stdout.splitlines()]
    endpoints = [row for row in rows if row and row[0] == "lagged" and len(row) >= 7]
    assert [row[1:4] for row in endpoints[-2:]] == [
        ["primary", "primary", f"127.0.0.1:{replicated.cluster.primary.port}"],
        ["replica-1", "replica", f"127.0.0.1:{replicated.cluster.replica.port}"],
    ]
    assert "postgres@" not in result.stdout
