"""What read replicas cost and give: ``python -m bench.replicas``.

Builds a private PostgreSQL primary + streaming replica (the tests' builder,
on free ports), starts one gateway with two databases on the same primary,
``solo`` (no replicas) and ``replicated`` (the replica), and drives each
workload with raw stubs at a fixed concurrency, one after the other, in the
same run:

- point selects on ``solo``, and on ``replicated`` with each read preference,
  with and without a fresh ``read_after`` token;
- inserts on ``solo`` and on ``replicated`` (where each write also fetches its
  ``read_token``: one more round trip on the primary).

Prints a table (calls/s, p50, p99) and writes it to bench/results/replicas.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.replication import postgres_replication, wait_for
from tests.support import ServerProcess, V

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "replicas.md"

Call = Callable[[database_service_pb2_grpc.DatabaseServiceStub, int], Awaitable[object]]


def _read(database: str, preference: int = 0, token: list[str] | None = None) -> Call:
    async def call(stub: database_service_pb2_grpc.DatabaseServiceStub, i: int) -> object:
        options = pb.RequestOptions(
            read_preference=preference,  # type: ignore[arg-type]
            read_after=token[0] if token else "",
        )
        return await stub.Query(
            pb.QueryRequest(
                database=database,
                sql="SELECT id, body FROM items WHERE id = $1",
                params=[V.of(int_value=i % 1000 + 1)],
                options=options,
            )
        )

    return call


def _insert(database: str) -> Call:
    async def call(stub: database_service_pb2_grpc.DatabaseServiceStub, i: int) -> object:
        return await stub.Execute(
            pb.ExecuteRequest(
                database=database,
                sql="INSERT INTO writes (body) VALUES ($1)",
                params=[V.of(string_value=f"w{i}")],
            )
        )

    return call


async def _drive(address: str, call: Call, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
        for i in range(concurrency):  # warm up every connection
            await call(stub, i)
        until = time.monotonic() + seconds

        async def worker(n: int) -> None:
            i = n
            while time.monotonic() < until:
                started = time.perf_counter()
                await call(stub, i)
                latencies.append(time.perf_counter() - started)
                i += concurrency

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with postgres_replication() as cluster:
        for sql in (
            "CREATE TABLE items (id int PRIMARY KEY, body text)",
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g",
            "CREATE TABLE writes (id serial PRIMARY KEY, body text)",
        ):
            cluster.fetch(cluster.primary, sql)
        wait_for("the replica to catch up", cluster.caught_up)
        pool = "pool = { min_size = 4, max_size = 8 }\n"
        config = (
            f'[databases.solo]\ndsn = "{cluster.primary.dsn}"\n{pool}\n'
            f'[databases.replicated]\ndsn = "{cluster.primary.dsn}"\n'
            f'replicas = ["{cluster.replica.dsn}"]\n{pool}'
        )
        with tempfile.TemporaryDirectory() as workdir:
            server = ServerProcess(Path(workdir), config=config).start()
            try:
                token = [asyncio.run(_token(server.address))]
                workloads: list[tuple[str, Call]] = [
                    ("point select, no replicas", _read("solo")),
                    ("point select, PRIMARY", _read("replicated", pb.READ_PREFERENCE_PRIMARY)),
                    (
                        "point select, REPLICA_PREFERRED",
                        _read("replicated", pb.READ_PREFERENCE_REPLICA_PREFERRED),
                    ),
                    (
                        "point select, REPLICA_PREFERRED + read_after",
                        _read("replicated", pb.READ_PREFERENCE_REPLICA_PREFERRED, token),
                    ),
                    ("insert, no replicas", _insert("solo")),
                    ("insert, with replicas (+ read_token)", _insert("replicated")),
                ]
                runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in workloads}
                # Interleaved, shuffled rounds: a noisy neighbour slows every
                # workload alike instead of one of them.
                for _ in range(args.rounds):
                    for name, call in random.sample(workloads, len(workloads)):
                        result = asyncio.run(
                            _drive(server.address, call, args.concurrency, args.seconds)
                        )
                        runs[name].append(result)
                        print(f"{name}: {result['rate']:.0f}/s", flush=True)
                rows = [(name, _median(runs[name])) for name, _ in workloads]
            finally:
                server.stop()
    lines = [
        f"Read replicas, raw stubs, concurrency {args.concurrency}, {args.rounds} interleaved "
        f"rounds of {args.seconds:g} s (medians; spread = (max-min)/median of calls/s), "
        "one PostgreSQL primary + one streaming replica on this machine.",
        "",
        "| workload | calls/s | spread | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rate']:.0f} | {r['spread']:.0%} | {r['p50']:.2f} | {r['p99']:.2f} |"
            for name, r in rows
        ),
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text + "\n")
    return 0


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    rates = [r["rate"] for r in results]
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    median["spread"] = (max(rates) - min(rates)) / median["rate"]
    return median


async def _token(address: str) -> str:
    """A read_token that the replica has surely replayed by the time it is used."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
        written = await _insert("replicated")(stub, 0)
        assert isinstance(written, pb.ExecuteResponse)
        return written.read_token


if __name__ == "__main__":
    raise SystemExit(main())
