"""StreamQuery throughput and server memory while streaming a large result.

Starts a real ``dbgateway serve`` against PostgreSQL, streams a result of
several hundred MB made on the database server (``generate_series``), and
reports rows/s, MB/s and the server process's peak RSS growth over its
resident size before the stream. The client keeps the messages as raw bytes,
so that its own decoding does not compete with the server for the CPU.

    python -m bench.stream_memory [--rows N] [--width BYTES] [--slow-reader]

PostgreSQL comes from DBGATEWAY_BENCH_POSTGRES_DSN (default
postgresql://postgres@127.0.0.1:5432/postgres). Results are printed and
written to bench/results/stream_memory.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import value_pb2

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "stream_memory.md"
POSTGRES_DSN = os.environ.get(
    "DBGATEWAY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: The issue's bound on the server's memory growth while streaming.
LIMIT_MB = 150
METHOD = "/dbgateway.v1.DatabaseService/StreamQuery"
SQL = (
    "SELECT g AS id, md5(g::text) AS digest, repeat('x', $2::int) AS pad "
    "FROM generate_series(1, $1::int) AS g"
)


@dataclass
class Run:
    label: str
    rows: int
    messages: int
    wire_bytes: int
    seconds: float
    baseline_mb: float
    peak_mb: float

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


class Server:
    """``dbgateway serve`` in a subprocess on a free port."""

    def __init__(self, workdir: Path) -> None:
        config = workdir / "dbgateway.toml"
        config.write_text(f'[databases.pg]\ndsn = "{POSTGRES_DSN}"\n')
        self.log = workdir / "server.log"
        exe = Path(sys.executable).parent / "dbgateway"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(exe), "serve", "--listen", "127.0.0.1:0", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on \S+:(\d+)", self.log.read_text())
            if match:
                self.address = f"127.0.0.1:{match.group(1)}"
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PeakSampler:
    """Samples the server's RSS every few milliseconds while a stream runs."""

    def __init__(self, server: Server, interval: float = 0.01) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._server.rss_mb())
            time.sleep(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._server.rss_mb())


def stream(
    channel: grpc.Channel, rows: int, width: int, pause: float = 0.0
) -> tuple[int, int, int]:
    """Streams the result; returns (rows the server reported, messages, bytes)."""
    call = channel.unary_stream(
        METHOD, request_serializer=pb.QueryRequest.SerializeToString, response_deserializer=None
    )
    request = pb.QueryRequest(
        database="pg",
        sql=SQL,
        params=[value_pb2.Value(int_value=rows), value_pb2.Value(int_value=width)],
    )
    messages = wire = 0
    last = b""
    for raw in call(request):
        messages += 1
        wire += len(raw)
        last = raw
        if pause:
            time.sleep(pause)
    final = pb.StreamQueryResponse.FromString(last)
    return final.stats.rows, messages, wire


def measure(
    server: Server, channel: grpc.Channel, label: str, rows: int, width: int, pause: float
) -> Run:
    baseline = server.rss_mb()
    started = time.monotonic()
    with PeakSampler(server) as sampler:
        got, messages, wire = stream(channel, rows, width, pause)
    seconds = time.monotonic() - started
    if got != rows:
        raise RuntimeError(f"{label}: the server reported {got} rows, {rows} were asked for")
    return Run(label, rows, messages, wire, seconds, baseline, sampler.peak)


def report(runs: list[Run], width: int) -> str:
    pg_version = subprocess.run(
        ["psql", POSTGRES_DSN, "-Atc", "SHOW server_version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    lines = [
        "# StreamQuery: throughput and server memory",
        "",
        f"`python -m bench.stream_memory`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PostgreSQL {pg_version or '?'} on the same machine.",
        "",
        f"Rows `(int4, md5 text, {width}-char text)` made by `generate_series` and streamed "
        "through a real `dbgateway serve` (default settings: 1 MiB chunks) to a client that "
        "keeps each message as raw bytes. Memory is the server process's RSS, sampled every "
        "10 ms: growth is the peak while streaming minus the RSS just before.",
        "",
        "| run | rows | MB on the wire | messages | seconds | rows/s | MB/s "
        "| RSS before (MB) | peak RSS (MB) | peak growth (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        mb = r.wire_bytes / 1e6
        lines.append(
            f"| {r.label} | {r.rows:,} | {mb:,.0f} | {r.messages:,} | {r.seconds:.1f} "
            f"| {r.rows / r.seconds:,.0f} | {mb / r.seconds:.1f} | {r.baseline_mb:.1f} "
            f"| {r.peak_mb:.1f} | {r.growth_mb:.1f} |"
        )
    worst = max(r.growth_mb for r in runs)
    verdict = "within" if worst < LIMIT_MB else "OVER"
    lines += ["", f"Largest growth {worst:.1f} MB: {verdict} the {LIMIT_MB} MB bound.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--width", type=int, default=200, help="characters of padding per row")
    parser.add_argument(
        "--slow-reader",
        action="store_true",
        help="also stream a tenth of the rows to a reader pausing 5 ms per message",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the results file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dbgw-bench-") as tmp:
        server = Server(Path(tmp))
        try:
            with grpc.insecure_channel(server.address) as channel:
                # Warm up: imports, statement cache, first pool connection.
                stream(channel, 10_000, args.width)
                runs = [measure(server, channel, "fast reader", args.rows, args.width, 0.0)]
                if args.slow_reader:
                    runs.append(
                        measure(server, channel, "slow reader", args.rows // 10, args.width, 0.005)
                    )
        finally:
            server.stop()
    text = report(runs, args.width)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0 if max(r.growth_mb for r in runs) < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
