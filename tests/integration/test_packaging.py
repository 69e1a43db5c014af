"""What a service author installs: the wheel `make dist` builds, into a fresh
virtual environment with nothing else, gives the client library and the
`dbgateway` command, and none of the server's database drivers."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.slow

DRIVERS = ("asyncpg", "aiomysql", "pymysql", "aiosqlite", "uvloop", "tenacity")


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel from `make dist` installed as the README says."""
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        ["make", "dist", f"DIST={dist}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = sorted(dist.glob("dbgateway-*.whl"))
    assert len(wheels) == 1, wheels
    env = tmp_path_factory.mktemp("service") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])],
        check=True,
        timeout=600,
    )
    return env


def test_the_wheel_installs_the_client_without_the_servers_drivers(client_env: Path):
    python = str(client_env / "bin" / "python")
    for name in DRIVERS:
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({name!r}) is None)"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == "True", f"{name} was installed with the client"


def test_the_installed_client_and_command_talk_to_a_gateway(
    client_env: Path, server: ServerProcess
):
    script = (
        "import dbgateway\n"
        f"with dbgateway.Client({server.address!r}, timeout=10) as db:\n"
        "    print(db.query('SELECT 40 + 2 AS answer', database='lite').scalar())\n"
    )
    result = subprocess.run(
        [str(client_env / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    result = subprocess.run(
        [str(client_env / "bin" / "dbgateway"), "query", "--server", server.address, "-d", "lite",
         "SELECT 'from the wheel' AS hello"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "from the wheel"
