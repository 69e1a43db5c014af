"""The Session stream on all three engines: many calls on one stream, each
answered once with its own result; an error, a cancel or a timeout touches
only its own call; flow control bounds what the server holds for a client
that does not read; a drain loses no call and answers none twice."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

import dbgateway
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.integration.polling import eventually
from tests.support import ServerProcess, V, mysql_fetch, pg_fetch, unique_name

ENGINES = ["pg", "mysql", "lite"]
PLACEHOLDER = {"pg": "$1::int", "mysql": "%s", "lite": "?"}
SLEEP = {"pg": "SELECT pg_sleep(20), '{marker}'", "mysql": "SELECT SLEEP(20), '{marker}'"}
#: A statement that runs until stopped, on SQLite (which has no sleep).
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
ANSWER_WITHIN = 1.5  # generous: the machine is shared


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def query_call(call_id: int, database: str, sql: str, *params: Any, timeout: float | None = None):
    call = pb.SessionCall(
        id=call_id,
        query=pb.QueryRequest(database=database, sql=sql, params=[V.of(**p) for p in params]),
    )
    if timeout is not None:
        call.timeout.CopyFrom(duration(timeout))
    return call


class OpenSession:
    """A raw Session stream: send messages when the test says, read results
    as they come."""

    def __init__(self, stub: pb_grpc.DatabaseServiceStub) -> None:
        self._outbox: queue.SimpleQueue[pb.SessionRequest | None] = queue.SimpleQueue()
        self.responses = stub.Session(iter(self._outbox.get, None), timeout=60)

    def send(self, *calls: pb.SessionCall, cancel: tuple[int, ...] = ()) -> None:
        self._outbox.put(pb.SessionRequest(calls=calls, cancel=cancel))

    def results(self, count: int) -> dict[int, pb.SessionResult]:
        """The next ``count`` results by id; fails on an id answered twice."""
        got: dict[int, pb.SessionResult] = {}
        while len(got) < count:
            for result in next(self.responses).results:
                assert result.id not in got, f"id {result.id} answered twice"
                got[result.id] = result
        return got

    def close(self) -> None:
        self._outbox.put(None)
        assert list(self.responses) == []  # half-close: the server ends with OK


@pytest.fixture
def session(db) -> Iterator[OpenSession]:
    s = OpenSession(db)
    yield s
    s.responses.cancel()


def running(database: str, dsn: str, marker: str) -> list[Any]:
    if database == "pg":
        return pg_fetch(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
            f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()",
        )
    return mysql_fetch(
        dsn,
        "SELECT id FROM information_schema.processlist "
        f"WHERE info LIKE '%{marker}%' AND info NOT LIKE '%processlist%'",
    )


@pytest.mark.parametrize("database", ENGINES)
def test_many_calls_on_one_session_each_get_their_own_result(session, database):
    placeholder = PLACEHOLDER[database]
    calls = [
        query_call(i, database, f"SELECT {placeholder} AS n", {"int_value": i * 7})
        for i in range(1, 201)
    ]
    bad = query_call(500, database, "SELEC broken")
    session.send(*calls[:100], bad)
    session.send(*calls[100:])
    got = session.results(201)
    assert set(got) == {*range(1, 201), 500}
    for i in range(1, 201):
        assert got[i].WhichOneof("result") == "query", got[i]
        assert got[i].query.rows[0].values[0].int_value == i * 7
        assert got[i].query.columns[0].name == "n"
    # The error is the one call's own; the others are untouched.
    assert got[500].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    session.close()


@pytest.mark.parametrize("database", ENGINES)
def test_a_slow_call_does_not_hold_back_the_ones_after_it(session, database):
    slow = {
        "pg": "SELECT pg_sleep(1), 0",
        "mysql": "SELECT SLEEP(1), 0",
        "lite": FOREVER,
    }[database]
    session.send(query_call(1, database, slow, timeout=1.0), query_call(2, database, "SELECT 2"))
    first = next(session.responses).results
    assert [r.id for r in first] == [2]
    (late,) = session.results(1).values()
    assert late.id == 1


@pytest.mark.parametrize("database", ["pg", "mysql"])
def test_a_cancelled_call_stops_its_query_within_a_second(
    session, database, postgres_dsn, mysql_dsn
):
    dsn = postgres_dsn if database == "pg" else mysql_dsn
    marker = uuid.uuid4().hex
    session.send(query_call(1, database, SLEEP[database].format(marker=marker)))
    assert eventually(lambda: bool(running(database, dsn, marker)), within=5)
    cancelled = time.monotonic()
    session.send(query_call(2, database, "SELECT 2"), cancel=(1,))
    got = session.results(2)
    assert got[1].error.code == grpc.StatusCode.CANCELLED.value[0]
    assert got[2].query.rows[0].values[0].int_value == 2
    assert eventually(lambda: not running(database, dsn, marker), within=1.0)
    assert time.monotonic() - cancelled < 1.0 + ANSWER_WITHIN
    session.close()


@pytest.mark.parametrize("database", ENGINES)
def test_a_calls_timeout_holds_and_leaves_the_session_usable(session, database):
    sql = FOREVER if database == "lite" else SLEEP[database].format(marker=uuid.uuid4().hex)
    started = time.monotonic()
    session.send(query_call(1, database, sql, timeout=0.5))
    (result,) = session.results(1).values()
    assert time.monotonic() - started < 0.5 + ANSWER_WITHIN
    assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    session.send(query_call(2, database, "SELECT 2"))
    assert session.results(1)[2].query.rows[0].values[0].int_value == 2
    session.close()


def test_a_call_without_a_known_kind_or_with_a_reused_id_is_refused_in_band(session):
    marker = uuid.uuid4().hex
    session.send(
        pb.SessionCall(id=1),
        query_call(2, "pg", f"SELECT pg_sleep(0.5), '{marker}'"),
        query_call(2, "pg", "SELECT 1"),
    )
    got: list[pb.SessionResult] = []
    while len(got) < 3:
        got.extend(next(session.responses).results)
    errors = [r for r in got if r.WhichOneof("result") == "error"]
    assert sorted(r.id for r in errors) == [1, 2]
    assert all(r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in errors)
    assert [r.id for r in got if r.WhichOneof("result") == "query"] == [2]
    session.close()


def test_a_call_with_a_timeout_that_is_not_positive_is_refused_in_band(session):
    call = query_call(1, "lite", "SELECT 1")
    call.timeout.CopyFrom(duration_pb2.Duration(seconds=-1))
    session.send(call, query_call(2, "lite", "SELECT 2"))
    got = session.results(2)
    assert got[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "calls.timeout" in got[1].error.message
    assert got[2].query.rows[0].values[0].int_value == 2
    session.close()


# -- flow control ---------------------------------------------------------------

MAX_SESSION_CALLS = 8
UNREAD_CALLS = 10_000


def metrics(server: ServerProcess) -> dict[str, float]:
    port = re.search(r"metrics listening on \S+:(\d+)", server.log())
    assert port, server.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def session_calls_answered(server: ServerProcess) -> float:
    return sum(
        v
        for k, v in metrics(server).items()
        if k.startswith("dbgateway_requests_total{") and 'transport="session"' in k
    )


@pytest.fixture(scope="module")
def small_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("sessions")
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"
max_session_calls = {MAX_SESSION_CALLS}

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"
"""
    proc = ServerProcess(workdir, config=config).start()
    yield proc
    proc.stop()


def test_an_unread_session_holds_at_most_max_session_calls_results(small_session_server):
    big = "x" * 4096  # results that fill HTTP/2 windows quickly
    sent = 0

    def requests() -> Iterator[pb.SessionRequest]:
        nonlocal sent
        for start in range(0, UNREAD_CALLS, 100):
            yield pb.SessionRequest(
                calls=[
                    query_call(i, "lite", "SELECT ? AS x", {"string_value": big})
                    for i in range(start, start + 100)
                ]
            )
            sent = start + 100

    with grpc.insecure_channel(small_session_server.address) as channel:
        responses = pb_grpc.DatabaseServiceStub(channel).Session(requests(), timeout=120)
        # Not reading: the server fills what gRPC buffers, then stops.
        assert eventually(
            lambda: (
                metrics(small_session_server).get("dbgateway_session_calls_held_peak")
                == MAX_SESSION_CALLS
            ),
            within=30,
        )
        counts = [session_calls_answered(small_session_server)]

        def stalled() -> bool:
            time.sleep(0.3)
            counts.append(session_calls_answered(small_session_server))
            return counts[-1] == counts[-2]

        assert eventually(stalled, 30)
        stalled_at = counts[-1]
        assert stalled_at < UNREAD_CALLS  # the server stopped reading the stream
        assert sent < UNREAD_CALLS  # and flow control held the client's sending back
        held = metrics(small_session_server)["dbgateway_session_calls_held_peak"]
        assert held == MAX_SESSION_CALLS
        ids: set[int] = set()
        for response in responses:
            for result in response.results:
                assert result.id not in ids
                ids.add(result.id)
                assert result.query.rows[0].values[0].string_value == big
            if len(ids) == UNREAD_CALLS:
                responses.cancel()
                break
    assert ids == set(range(UNREAD_CALLS))
    assert metrics(small_session_server)["dbgateway_session_calls_held_peak"] == MAX_SESSION_CALLS


# -- drain ------------------------------------------------------------------------


def start_pg(workdir: Path, dsn: str, max_session_age: float = 300) -> ServerProcess:
    config = f"""
[server]
shutdown_grace = 15
max_session_age = {max_session_age}

[databases.pg]
dsn = "{dsn}"
pool = {{ min_size = 1, max_size = 8 }}
"""
    return ServerProcess(workdir, config=config).start()


def run_inserts(target: str, table: str, ids: range, during: Callable[[], None]) -> list[Any]:
    """Inserts one row per id through an AsyncClient session (not idempotent:
    a call run twice would fail on the key), calling ``during`` once the first
    calls are in flight; returns each call's outcome."""

    async def main() -> list[Any]:
        async with dbgateway.AsyncClient(target, timeout=30) as db:
            await db.query("SELECT 1", database="pg")

            async def insert(i: int) -> Any:
                await asyncio.sleep((i % 50) * 0.02)  # spread over about a second
                sleep = 0.3 if i % 25 == 0 else 0  # some calls are in flight for long
                return await db.execute(
                    f"INSERT INTO {table} (id) SELECT $1 FROM pg_sleep({sleep})",
                    i,
                    database="pg",
                )

            tasks = [asyncio.create_task(insert(i)) for i in ids]
            await asyncio.sleep(0.3)
            await asyncio.get_running_loop().run_in_executor(None, during)
            return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def run_sync_inserts(target: str, table: str, ids: range, during: Callable[[], None]) -> list[Any]:
    """As :func:`run_inserts`, through a sync Client's session shared by 50
    threads."""
    with dbgateway.Client(target, timeout=30) as db:
        db.query("SELECT 1", database="pg")

        def insert(i: int) -> Any:
            time.sleep((i % 50) * 0.02)  # spread over about a second
            sleep = 0.3 if i % 25 == 0 else 0  # some calls are in flight for long
            try:
                return db.execute(
                    f"INSERT INTO {table} (id) SELECT $1 FROM pg_sleep({sleep})",
                    i,
                    database="pg",
                )
            except BaseException as exc:  # reported by the test
                return exc

        with futures.ThreadPoolExecutor(50) as pool:
            outcomes = [pool.submit(insert, i) for i in ids]
            time.sleep(0.3)
            during()
            return [outcome.result() for outcome in outcomes]


#: The async client's and the sync client's way of running many inserts
#: concurrently on one session (see run_inserts, run_sync_inserts).
CLIENTS = pytest.mark.parametrize("client", ["async", "sync"])


def inserts(client: str) -> Callable[[str, str, range, Callable[[], None]], list[Any]]:
    return run_inserts if client == "async" else run_sync_inserts


@pytest.mark.postgres
@CLIENTS
def test_a_session_across_a_drain_loses_no_call_and_runs_none_twice(client, tmp_path, own_dsn):
    table = unique_name("drained")
    pg_fetch(own_dsn, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    first = start_pg(tmp_path / "a", own_dsn)
    second = start_pg(tmp_path / "b", own_dsn)
    assert first.process is not None
    # pick_first: the channel moves to the second server when the first goes.
    target = f"ipv4:{first.address},{second.address}"
    try:
        outcomes = inserts(client)(
            target,
            table,
            range(500),
            lambda: first.process.send_signal(signal.SIGTERM),  # type: ignore[union-attr]
        )
        assert first.process.wait(20) == 0
    finally:
        first.stop()
        second.stop()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    assert all(o.rows_affected == 1 for o in outcomes)
    rows = pg_fetch(own_dsn, f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}")
    assert (rows[0]["n"], rows[0]["d"]) == (500, 500)
    assert "draining" in first.log()
    # Both servers answered calls: the session moved.
    assert "transport=session" in first.log()
    assert "transport=session" in second.log()


@pytest.mark.postgres
@CLIENTS
def test_a_session_past_max_session_age_is_reopened_without_losing_calls(client, tmp_path, own_dsn):
    table = unique_name("aged")
    pg_fetch(own_dsn, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    server = start_pg(tmp_path, own_dsn, max_session_age=0.2)
    try:
        outcomes = inserts(client)(server.address, table, range(300), lambda: None)
    finally:
        server.stop()
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    rows = pg_fetch(own_dsn, f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}")
    assert (rows[0]["n"], rows[0]["d"]) == (300, 300)
    request_ids = re.findall(r"request_id=(\w+)\.\d+ method=Execute", server.log())
    assert len(set(request_ids)) > 1  # more than one session served them


# -- the clients -------------------------------------------------------------------


def test_the_sync_client_shares_one_session_between_threads(server):
    with dbgateway.Client(server.address, timeout=30) as db:
        assert db.transport == "session"
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(50):
                    n = worker * 1000 + i
                    results[n] = db.query("SELECT ? AS n", n, database="lite").scalar()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert results == {n: n for n in results}
        assert len(results) == 400
    log = server.log()
    assert "transport=session" in log


def test_the_async_client_answers_concurrent_calls_over_a_session(server):
    async def main() -> list[Any]:
        async with dbgateway.AsyncClient(server.address, timeout=30) as db:
            return await asyncio.gather(
                *(db.query("SELECT $1::int AS n", i, database="pg") for i in range(300)),
                db.query("SELEC", database="pg"),
                return_exceptions=True,
            )

    *results, error = asyncio.run(main())
    assert [r.scalar() for r in results] == list(range(300))
    assert isinstance(error, dbgateway.SqlError)


@pytest.mark.postgres
def test_a_broken_session_retries_the_read_and_not_the_write(tmp_path, own_dsn):
    table = unique_name("broken")
    pg_fetch(own_dsn, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    first = start_pg(tmp_path / "a", own_dsn)
    second = start_pg(tmp_path / "b", own_dsn)
    assert first.process is not None
    target = f"ipv4:{first.address},{second.address}"

    async def main() -> list[Any]:
        async with dbgateway.AsyncClient(target, timeout=30) as db:
            await db.query("SELECT 1", database="pg")
            read = asyncio.create_task(db.query("SELECT 5 AS n FROM pg_sleep(1)", database="pg"))
            write = asyncio.create_task(
                db.execute(f"INSERT INTO {table} SELECT 1 FROM pg_sleep(1)", database="pg")
            )
            await asyncio.sleep(0.4)
            first.process.kill()  # type: ignore[union-attr] - the connection breaks mid-call
            return await asyncio.gather(read, write, return_exceptions=True)

    try:
        read, write = asyncio.run(main())
    finally:
        first.stop()
        second.stop()
    assert read.scalar() == 5  # a read is safe to run again: it was, elsewhere
    assert isinstance(write, dbgateway.Unavailable)  # a write may have run: not replayed
    assert write.reason == "SESSION_BROKEN"


@pytest.mark.postgres
def test_a_call_too_large_to_send_fails_alone_and_the_session_carries_on(server, postgres_dsn):
    marker = uuid.uuid4().hex
    # A write is never sent again after a broken stream: it shows whether
    # the stream survived the call that could not be sent.
    slow_write = f"SELECT pg_sleep(1), '{marker}'"
    oversized = [("x" * 1_000_000,)] * 5  # 5 MB: over the 4 MiB a message may carry

    async def main() -> tuple[Any, Any, Any]:
        async with dbgateway.AsyncClient(server.address, timeout=30) as db:
            slow = asyncio.create_task(db.execute(slow_write, database="pg"))
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(
                None, lambda: eventually(lambda: bool(running("pg", postgres_dsn, marker)), 5)
            )
            assert found
            big = await asyncio.gather(
                db.execute_batch("SELECT $1::text", oversized, database="pg"),
                return_exceptions=True,
            )
            after = await db.query("SELECT 2 AS n", database="pg")
            return big[0], await asyncio.gather(slow, return_exceptions=True), after

    big, (slow,), after = asyncio.run(main())
    assert isinstance(big, dbgateway.ResourceExhausted), big
    assert not isinstance(slow, BaseException), slow
    assert slow.rows_affected is not None
    assert after.scalar() == 2
