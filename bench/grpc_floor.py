"""What one gRPC round trip costs in Python here, with nothing behind it:
``python -m bench.grpc_floor``.

A grpc.aio server on uvloop (as ``dbgateway serve`` runs) echoes bytes; one
caller sends a message and waits for the answer, one at a time, on a unary
method and on one bidirectional stream (as a Session carries calls). Printed:
the round trip's p50 and the server's CPU per message (user + system, from
/proc). This is the floor under the concurrency-1 latency of every gRPC
contender in ``make bench`` and under the per-message cost at any concurrency.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import uvloop

from bench.cpu_per_call import cpu_seconds
from bench.run import free_port

SERVICE = "bench.Echo"
PAYLOAD = b"x" * 120  # about a point select's request


async def _serve(port: int) -> None:
    async def unary(message: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return message

    async def chat(
        messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for message in messages:
            yield message

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _load(port: int, kind: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        took: list[float] = []
        if kind == "unary":
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            for _ in range(calls):
                started = time.perf_counter()
                await unary(PAYLOAD)
                took.append(time.perf_counter() - started)
        else:
            stream = channel.stream_stream(f"/{SERVICE}/Chat")()
            for _ in range(calls):
                started = time.perf_counter()
                await stream.write(PAYLOAD)
                await stream.read()
                took.append(time.perf_counter() - started)
            await stream.done_writing()
        return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", str(port)])
    try:
        uvloop.run(_load(port, "unary", 100))  # up and warm
        rows: dict[str, list[tuple[float, float]]] = {"unary": [], "stream": []}
        for _ in range(args.repeat):
            for kind, runs in rows.items():
                before = cpu_seconds(server.pid)
                took = uvloop.run(_load(port, kind, args.calls))
                used = cpu_seconds(server.pid) - before
                runs.append((statistics.median(took) * 1e6, used / args.calls * 1e6))
    finally:
        server.terminate()
        server.wait(10)
    print("| one caller, grpc.aio on uvloop | round trip p50 us | server CPU us/message |")
    print("|---|---:|---:|")
    for kind, runs in rows.items():
        p50 = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"| {kind} | {p50:.0f} | {cpu:.0f} |")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        uvloop.run(_serve(int(sys.argv[2])))
    else:
        sys.exit(main())
