"""Subscribe: PostgreSQL LISTEN/NOTIFY over gRPC, through one listening
connection per database, against a real server and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import grpc.aio
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from dbgateway.v1 import subscription_pb2 as spb
from tests.support import (
    ServerProcess,
    V,
    call_error,
    create_postgres_database,
    drop_postgres_database,
)

pytestmark = pytest.mark.postgres

#: The test server's per-subscriber queue: small, so overflow shows with little data.
QUEUE = 64
#: Generous bound on any one wait for the server (a loaded 2-core machine).
WAIT = 60.0


@pytest.fixture(scope="module")
def sub_server(
    tmp_path_factory: pytest.TempPathFactory, own_dsn: str, mysql_dsn: str
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("subscriptions")
    config = f"""
[server]
subscription_queue = {QUEUE}

[databases.pg]
dsn = "{own_dsn}"
pool = {{ min_size = 1, max_size = 4 }}

[databases.mysql]
dsn = "{mysql_dsn}"

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"

# Nothing listens on port 1: this database is down for the whole run.
[databases.down]
dsn = "postgresql://postgres@127.0.0.1:1/nowhere"
connect_timeout = 1
"""
    proc = ServerProcess(workdir, config=config).start()
    yield proc
    proc.stop()


@contextlib.asynccontextmanager
async def stub(
    server: ServerProcess,
) -> AsyncIterator[database_service_pb2_grpc.DatabaseServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield database_service_pb2_grpc.DatabaseServiceStub(channel)


async def subscribe(
    db: database_service_pb2_grpc.DatabaseServiceStub, *channels: str, database: str = "pg"
) -> Any:
    """A subscription call whose ``ready`` message was read: LISTEN is in place."""
    call = db.Subscribe(spb.SubscribeRequest(database=database, channels=list(channels)))
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first.ready, first
    assert not first.channel
    return call


async def notify(dsn: str, pairs: list[tuple[str, str]]) -> None:
    """Sends the notifications in one transaction, directly (not through the gateway)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(c, p, n) "
            "ORDER BY n",
            [c for c, _ in pairs],
            [p for _, p in pairs],
        )
    finally:
        await conn.close()


async def pg(dsn: str, sql: str) -> list[Any]:
    """Runs SQL directly (not through the gateway)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def listening_backends(dsn: str) -> list[int]:
    name = urlsplit(dsn).path.lstrip("/")
    rows = await pg(
        dsn,
        "SELECT pid FROM pg_stat_activity "
        f"WHERE application_name = 'dbgateway-listen' AND datname = '{name}'",
    )
    return [r["pid"] for r in rows]


@pytest.mark.slow
def test_each_of_100_subscribers_receives_exactly_its_channels_in_order(sub_server, own_dsn):
    channels = [f"orders_{i}" for i in range(10)]
    # Subscriber i listens on channel i % 10; the first ten also on the next
    # channel, so a subscription of two channels is checked for order too.
    wants = [
        {channels[i % 10]} | ({channels[(i + 1) % 10]} if i < 10 else set()) for i in range(100)
    ]
    sent: list[tuple[str, str]] = [(channels[(n * 7) % 10], f"n{n}") for n in range(10_000)]

    async def scenario() -> None:
        async with stub(sub_server) as db:
            calls = [await subscribe(db, *sorted(w)) for w in wants]
            # One listening connection serves every subscriber.
            assert len(await listening_backends(own_dsn)) == 1
            received: list[list[tuple[str, str]]] = [[] for _ in calls]

            async def read(i: int) -> None:
                while True:
                    msg = await calls[i].read()
                    assert msg is not grpc.aio.EOF
                    assert not msg.gap, msg
                    assert msg.sender_pid > 0
                    received[i].append((msg.channel, msg.payload))

            readers = [asyncio.create_task(read(i)) for i in range(len(calls))]
            try:
                # Bursts the size of one transaction; the next waits until
                # every subscriber has the previous one, so that no queue of
                # QUEUE can overflow however slow this machine is.
                burst = 200
                for start in range(0, len(sent), burst):
                    await notify(own_dsn, sent[start : start + burst])
                    expected = [sum(1 for c, _ in sent[: start + burst] if c in w) for w in wants]
                    async with asyncio.timeout(WAIT):
                        while [len(r) for r in received] != expected:
                            for task in readers:
                                if task.done():
                                    task.result()
                            await asyncio.sleep(0.01)
            finally:
                for task in readers:
                    task.cancel()
                for call in calls:
                    call.cancel()
            for i, w in enumerate(wants):
                assert received[i] == [(c, p) for c, p in sent if c in w], f"subscriber {i}"

    asyncio.run(scenario())


def test_notifications_from_execute_and_transactions_arrive_on_commit_never_on_rollback(
    sub_server,
):
    async def scenario() -> None:
        async with stub(sub_server) as db:
            call = await subscribe(db, "tx_events")

            async def execute(sql: str, *params: Any, transaction_id: str = "") -> None:
                await db.Execute(
                    pb.ExecuteRequest(
                        database="pg",
                        sql=sql,
                        params=list(params),
                        transaction_id=transaction_id,
                    )
                )

            begun = await db.BeginTransaction(pb.BeginTransactionRequest(database="pg"))
            await execute(
                "SELECT pg_notify('tx_events', 'rolled back')", transaction_id=begun.transaction_id
            )
            await db.Rollback(
                pb.RollbackRequest(database="pg", transaction_id=begun.transaction_id)
            )
            begun = await db.BeginTransaction(pb.BeginTransactionRequest(database="pg"))
            await execute(
                "SELECT pg_notify($1, $2)",
                V.of(string_value="tx_events"),
                V.of(string_value="committed"),
                transaction_id=begun.transaction_id,
            )
            await db.Commit(pb.CommitRequest(database="pg", transaction_id=begun.transaction_id))
            await db.RunTransaction(
                pb.RunTransactionRequest(
                    database="pg",
                    statements=[pb.Statement(sql="NOTIFY tx_events, 'run transaction'")],
                )
            )
            await execute("SELECT pg_notify('tx_events', 'execute')")
            got = [(await asyncio.wait_for(call.read(), WAIT)).payload for _ in range(3)]
            call.cancel()
            # The rolled-back one would have come first: it was sent first.
            assert got == ["committed", "run transaction", "execute"]

    asyncio.run(scenario())


def test_channel_names_are_quoted_identifiers(sub_server, own_dsn):
    weird = 'Mixed Case "quoted"; DROP TABLE x'

    async def scenario() -> None:
        async with stub(sub_server) as db:
            mixed = await subscribe(db, weird)
            lower = await subscribe(db, "mixed case")
            await notify(own_dsn, [("mixed case", "lower"), (weird, "weird")])
            msg = await asyncio.wait_for(mixed.read(), WAIT)
            assert (msg.channel, msg.payload) == (weird, "weird")
            msg = await asyncio.wait_for(lower.read(), WAIT)
            assert (msg.channel, msg.payload) == ("mixed case", "lower")
            mixed.cancel()
            lower.cancel()

    asyncio.run(scenario())


def test_terminating_the_listening_connection_gives_one_gap_then_notifications(sub_server, own_dsn):
    async def scenario() -> None:
        async with stub(sub_server) as db:
            one = await subscribe(db, "gap_a")
            two = await subscribe(db, "gap_a", "gap_b")
            await notify(own_dsn, [("gap_a", "before")])
            for call in (one, two):
                assert (await asyncio.wait_for(call.read(), WAIT)).payload == "before"
            (old_pid,) = await listening_backends(own_dsn)
            await pg(own_dsn, f"SELECT pg_terminate_backend({old_pid})")
            for call in (one, two):
                msg = await asyncio.wait_for(call.read(), WAIT)
                assert msg.gap, msg
                assert not msg.channel
            # The gap comes once LISTEN is in place again: what is sent now arrives.
            (new_pid,) = await listening_backends(own_dsn)
            assert new_pid != old_pid
            await notify(own_dsn, [("gap_b", "after b"), ("gap_a", "after a")])
            assert (await asyncio.wait_for(one.read(), WAIT)).payload == "after a"
            got = [(await asyncio.wait_for(two.read(), WAIT)).payload for _ in range(2)]
            assert got == ["after b", "after a"]
            one.cancel()
            two.cancel()

    asyncio.run(scenario())


async def drain(call: Any) -> None:
    """Reads ``call`` until it ends."""
    while await asyncio.wait_for(call.read(), WAIT) is not grpc.aio.EOF:
        pass


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_subscriber_that_never_reads_is_ended_while_others_keep_receiving(sub_server, own_dsn):
    assert sub_server.process is not None
    payload = "x" * 4000
    total = 4000  # 16 MB of payload, far beyond the queue and gRPC's buffers

    async def scenario() -> None:
        async with stub(sub_server) as db:
            stuck = await subscribe(db, "slow")
            reader = await subscribe(db, "slow")
            before = rss_bytes(sub_server.process.pid)
            got = 0
            sent = 0
            while sent < total:
                batch = [("slow", f"{n} {payload}") for n in range(sent, sent + QUEUE // 2)]
                await notify(own_dsn, batch)
                sent += len(batch)
                while got < sent:
                    msg = await asyncio.wait_for(reader.read(), WAIT)
                    assert msg.payload.split()[0] == str(got)
                    got += 1
            grown = rss_bytes(sub_server.process.pid) - before
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await drain(stuck)
            reader.cancel()
        error = call_error(raised.value)
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert error.reason == "SUBSCRIBER_TOO_SLOW"
        assert f"subscription_queue = {QUEUE}" in error.message
        # What the never-reader left behind is its queue and gRPC's window,
        # not the 16 MB sent to it.
        assert grown < total * len(payload) // 2, grown

    asyncio.run(scenario())
    # The server goes on serving, on the same listening connection.
    assert len(asyncio.run(listening_backends(own_dsn))) == 1


@pytest.mark.parametrize("database", ["mysql", "lite"])
def test_engines_without_listen_notify_answer_unimplemented(sub_server, database):
    async def scenario() -> grpc.aio.AioRpcError:
        async with stub(sub_server) as db:
            call = db.Subscribe(spb.SubscribeRequest(database=database, channels=["x"]))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call.read(), WAIT)
            return raised.value

    error = call_error(asyncio.run(scenario()))
    assert error.code is grpc.StatusCode.UNIMPLEMENTED
    assert error.reason == "UNSUPPORTED"
    assert "no LISTEN/NOTIFY" in error.message


@pytest.mark.parametrize(
    ("channels", "field"),
    [([], "channels"), ([""], "channels[0]"), (["ok", "x" * 64], "channels[1]")],
)
def test_bad_channel_lists_are_invalid_argument(sub_server, channels, field):
    async def scenario() -> grpc.aio.AioRpcError:
        async with stub(sub_server) as db:
            call = db.Subscribe(spb.SubscribeRequest(database="pg", channels=channels))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call.read(), WAIT)
            return raised.value

    error = call_error(asyncio.run(scenario()))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations[0][0] == field


def test_unknown_database_is_not_found(sub_server):
    async def scenario() -> grpc.aio.AioRpcError:
        async with stub(sub_server) as db:
            call = db.Subscribe(spb.SubscribeRequest(database="nope", channels=["x"]))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call.read(), WAIT)
            return raised.value

    assert asyncio.run(scenario()).code() is grpc.StatusCode.NOT_FOUND


@pytest.fixture
def drain_dsn() -> Iterator[str]:
    """A database of its own, so its listening connection is the draining server's."""
    dsn = create_postgres_database()
    yield dsn
    drop_postgres_database(dsn)


def test_drain_ends_subscribers_with_unavailable_and_closes_the_listening_connection(
    tmp_path, drain_dsn
):
    # A grace far longer than the stop below waits: a subscription that held
    # the drain would make the server outlive it.
    config = f"""
[server]
shutdown_grace = 120

[databases.pg]
dsn = "{drain_dsn}"
"""
    server = ServerProcess(tmp_path, config=config).start()
    assert server.process is not None
    try:

        async def scenario() -> grpc.aio.AioRpcError:
            async with stub(server) as db:
                call = await subscribe(db, "drain_me")
                assert len(await listening_backends(drain_dsn)) == 1
                os.kill(server.process.pid, signal.SIGTERM)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await asyncio.wait_for(call.read(), WAIT)
                return raised.value

        error = call_error(asyncio.run(scenario()))
        assert error.code is grpc.StatusCode.UNAVAILABLE, error
        assert error.reason == "SERVER_DRAINING"
        assert server.process.wait(30) == 0
        assert "listening connection closed" in server.log()
        assert asyncio.run(listening_backends(drain_dsn)) == []
    finally:
        server.stop()


async def listening_query(dsn: str) -> str:
    """The last statement the listening connection ran."""
    name = urlsplit(dsn).path.lstrip("/")
    rows = await pg(
        dsn,
        "SELECT query FROM pg_stat_activity "
        f"WHERE application_name = 'dbgateway-listen' AND datname = '{name}'",
    )
    return str(rows[0]["query"]) if rows else ""


def test_the_last_subscriber_leaving_unlistens_its_channel(sub_server, own_dsn):
    async def scenario() -> None:
        async with stub(sub_server) as db:
            first = await subscribe(db, "Leaving Soon")
            second = await subscribe(db, "Leaving Soon")
            first.cancel()
            await notify(own_dsn, [("Leaving Soon", "still wanted")])
            assert (await asyncio.wait_for(second.read(), WAIT)).payload == "still wanted"
            second.cancel()
            async with asyncio.timeout(WAIT):
                while True:
                    if await listening_query(own_dsn) == 'UNLISTEN "Leaving Soon"':
                        break
                    await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_the_listening_connection_is_not_one_of_the_pool(sub_server, own_dsn):
    from dbgateway.v1 import admin_service_pb2 as admin_pb
    from dbgateway.v1 import admin_service_pb2_grpc

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(sub_server.address) as channel:
            db = database_service_pb2_grpc.DatabaseServiceStub(channel)
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            call = await subscribe(db, "pool_check")
            listing = await admin.ListDatabases(admin_pb.ListDatabasesRequest())
            pool = next(d.pool for d in listing.databases if d.name == "pg")
            name = urlsplit(own_dsn).path.lstrip("/")
            rows = await pg(
                own_dsn,
                "SELECT count(*) AS n FROM pg_stat_activity "
                f"WHERE application_name = 'dbgateway' AND datname = '{name}'",
            )
            assert pool.size == rows[0]["n"]
            assert len(await listening_backends(own_dsn)) == 1
            call.cancel()

    asyncio.run(scenario())


def test_a_database_that_is_down_answers_unavailable(sub_server):
    async def scenario() -> grpc.aio.AioRpcError:
        async with stub(sub_server) as db:
            call = db.Subscribe(spb.SubscribeRequest(database="down", channels=["x"]))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call.read(), WAIT)
            return raised.value

    error = call_error(asyncio.run(scenario()))
    assert error.code is grpc.StatusCode.UNAVAILABLE
    # Down since start: its circuit is open, so the listener never dials it.
    assert error.reason == "CIRCUIT_OPEN"
    assert error.retry_delay is not None


def test_subscribing_needs_the_read_right(tmp_path, own_dsn):
    import hashlib

    def principal(name: str, databases: str) -> str:
        digest = hashlib.sha256(f"token-{name}".encode()).hexdigest()
        return (
            f'[[principals]]\nname = "{name}"\ntoken_sha256 = "{digest}"\n'
            f"databases = {{ {databases} }}\n"
        )

    config = (
        f'[databases.pg]\ndsn = "{own_dsn}"\n\n'
        f'[databases.lite]\ndsn = "sqlite://{tmp_path / "lite.sqlite3"}"\n\n'
        + principal("reader", 'pg = "read"')
        + principal("stranger", 'lite = "write"')
    )
    server = ServerProcess(tmp_path, config=config).start()
    try:

        async def scenario() -> grpc.aio.AioRpcError:
            async with stub(server) as db:

                def call(name: str) -> Any:
                    return db.Subscribe(
                        spb.SubscribeRequest(database="pg", channels=["secured"]),
                        metadata=[("authorization", f"Bearer token-{name}")],
                    )

                allowed = call("reader")
                first = await asyncio.wait_for(allowed.read(), WAIT)
                assert first.ready
                allowed.cancel()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await asyncio.wait_for(call("stranger").read(), WAIT)
                return raised.value

        error = call_error(asyncio.run(scenario()))
        assert error.code is grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop()


def test_a_reload_that_changes_the_database_ends_its_subscriptions(tmp_path, drain_dsn):
    from tests.integration.test_reload import reload

    def config(pool_max: int) -> str:
        return f'[databases.pg]\ndsn = "{drain_dsn}"\npool = {{ max_size = {pool_max} }}\n'

    server = ServerProcess(tmp_path, config=config(4)).start()
    try:

        async def scenario() -> grpc.aio.AioRpcError:
            async with stub(server) as db:
                old = await subscribe(db, "reloaded")
                (old_pid,) = await listening_backends(drain_dsn)
                await asyncio.to_thread(reload, server, config(5))
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await drain(old)
                # A new subscription listens through the database as now configured.
                new = await subscribe(db, "reloaded")
                await notify(drain_dsn, [("reloaded", "after the reload")])
                assert (await asyncio.wait_for(new.read(), WAIT)).payload == "after the reload"
                assert await listening_backends(drain_dsn) != [old_pid]
                new.cancel()
                return raised.value

        error = call_error(asyncio.run(scenario()))
        assert error.code is grpc.StatusCode.UNAVAILABLE
        assert "reconfigured" in error.message
    finally:
        server.stop()


# -- the Python client and the CLI ------------------------------------------------


def test_async_client_subscribe_yields_notifications_in_order(sub_server, own_dsn):
    import dbgateway

    async def scenario() -> list[dbgateway.Notification]:
        async with (
            dbgateway.AsyncClient(sub_server.address) as client,
            client.subscribe("pg", "client_orders", "client_payments") as subscription,
        ):
            await notify(
                own_dsn,
                [("client_orders", "o1"), ("elsewhere", "no"), ("client_payments", "p1")],
            )
            got = []
            async for n in subscription:
                got.append(n)
                if len(got) == 2:
                    break
            return got

    got = asyncio.run(scenario())
    assert [(n.channel, n.payload, n.gap) for n in got] == [
        ("client_orders", "o1", False),
        ("client_payments", "p1", False),
    ]
    assert got[0].sender_pid > 0
    assert got[0].received_at is not None


def test_sync_client_subscribe_and_its_errors(sub_server, own_dsn):
    import dbgateway

    with dbgateway.Client(sub_server.address) as client:
        with client.subscribe("pg", "sync_channel") as subscription:
            asyncio.run(notify(own_dsn, [("sync_channel", "hello")]))
            n = next(subscription)
            assert (n.channel, n.payload) == ("sync_channel", "hello")
        with pytest.raises(dbgateway.DbGatewayError) as raised:
            next(client.subscribe("lite", "x"))
    assert raised.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.reason == "UNSUPPORTED"


def test_cli_listen_prints_one_line_per_notification(sub_server, own_dsn):
    import subprocess

    from tests.support import BIN

    proc = subprocess.Popen(
        [
            *(str(BIN / "dbgateway"), "listen", "--server", sub_server.address),
            *("--count", "2", "pg", "cli_a", "cli_b"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "listening on cli_a, cli_b"
        asyncio.run(notify(own_dsn, [("cli_b", "first"), ("cli_a", "second")]))
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out.splitlines() == ["cli_b\tfirst", "cli_a\tsecond"]
