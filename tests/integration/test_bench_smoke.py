"""The benchmark machinery works: ``bench.load`` drives the session's real
gateway for a moment and reports. Nothing here is timed: speed is measured by
``make bench``, never by a test."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
import pytest

from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def bench_tables(postgres_dsn: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS bench_items (
                    id integer PRIMARY KEY, name text NOT NULL,
                    price numeric(10, 2) NOT NULL, created timestamptz NOT NULL);
                INSERT INTO bench_items
                    SELECT g, 'item ' || g, g / 10.0, now() FROM generate_series(1, 100) g
                    ON CONFLICT DO NOTHING;
                CREATE TABLE IF NOT EXISTS bench_writes (
                    id bigserial PRIMARY KEY, name text, price float8);
                """
            )
        finally:
            await conn.close()

    asyncio.run(create())


HEAVY = frozenset({"batch_1000", "read_10k", "read_10k_stream"})


@pytest.mark.parametrize(
    ("contender", "workload"),
    [
        ("gateway-stubs", "point_select"),
        ("gateway-stubs", "read_10k_stream"),
        ("gateway-stubs", "tx_4"),
        ("gateway-client", "point_select"),
        ("gateway-client", "read_10k_stream"),
        ("gateway-client", "batch_1000"),
        ("gateway-client", "tx_4"),
        ("gateway-client-unary", "point_select"),
        ("gateway-columnar", "read_10k"),
        ("gateway-columnar", "read_10k_stream"),
    ],
)
def test_bench_load_reports_a_run(server: ServerProcess, bench_tables, contender, workload):
    # A run counts the operations that complete inside its window: the large
    # ones (a 1,000-row batch, a 10,000-row read) get a window longer than one
    # of them takes, so that "ops > 0" says the machinery works, not how fast.
    duration = "2" if workload in HEAVY else "0.5"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.load", "--contender", contender),
            *("--workload", workload, "--target", server.address, "--database", "pg"),
            *("--concurrency", "4", "--channels", "2", "--duration", duration, "--warmup", "0.1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["ops"] > 0
    assert report["contender"] == contender


def test_the_naive_gateway_answers_the_bench_queries(postgres_dsn, bench_tables):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.naive_gateway", postgres_dsn, "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        target = proc.stdout.readline().split()[-1]
        out = subprocess.run(
            [
                *(sys.executable, "-m", "bench.load", "--contender", "naive-stubs"),
                *("--workload", "point_select", "--target", target, "--database", "pg"),
                *("--concurrency", "4", "--duration", "0.5", "--warmup", "0.1"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["ops"] > 0
