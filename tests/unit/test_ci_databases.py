"""`.ci/databases.sh`, the part of `.ci/run` that gets the databases up, run
with stub commands on a PATH of their own: every command that could touch a
real service (apt-get, pg_ctlcluster, start-stop-daemon, ...) is a stub that
records its call and changes only files under a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / ".ci" / "databases.sh"
#: Real tools the script (and the stubs) may use; nothing else is on its PATH.
TOOLS = ("bash", "ls", "sort", "tail", "seq", "cat", "mv", "mkdir", "env", "dirname", "touch", "cp")

#: Stub bodies: $STATE is the directory the stubs keep their world in.
STUBS = {
    "pg_isready": '[ -e "$STATE/pg_running" ]',
    "pg_ctlcluster": 'case "$*" in *start*) [ -e "$STATE/pg_broken" ] || touch "$STATE/pg_running";; esac',
    "pg_createcluster": 'mkdir -p "$PG_ETC/$1/main" && touch "$PG_ETC/$1/main/pg_hba.conf"',
    "mysqladmin": '[ -e "$STATE/mariadb_running" ]',
    "start-stop-daemon": 'touch "$STATE/mariadb_running"',
    "mariadb": "true",
    "runuser": "true",
    "psql": "true",
    "chown": "true",
    "sleep": "true",
    "id": "echo 0",
    "apt-get": (
        'case "$*" in\n'
        '  *install*postgresql*) mkdir -p "$PG_LIB/15" "$PG_ETC/15/main";'
        ' touch "$PG_ETC/15/main/pg_hba.conf"; cp "$STATE/pg_ctlcluster" "$STUBS/";;\n'
        '  *install*mariadb-server*) cp "$STATE/mariadbd" "$MARIADBD";;\n'
        "esac"
    ),
}


@dataclass
class World:
    root: Path
    stubs: Path
    state: Path
    env: dict[str, str]

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT)], capture_output=True, text=True, env=self.env, timeout=60
        )

    def calls(self) -> list[str]:
        log = self.state / "calls.log"
        return log.read_text().splitlines() if log.exists() else []


def stub(path: Path, name: str, body: str) -> None:
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "$STATE/calls.log"\n{body}\n')
    path.chmod(0o755)


@pytest.fixture
def world(tmp_path: Path) -> World:
    stubs, tools, state = tmp_path / "stubs", tmp_path / "tools", tmp_path / "state"
    for d in (stubs, tools, state):
        d.mkdir()
    for name in TOOLS:
        real = shutil.which(name)
        assert real, name
        (tools / name).symlink_to(real)
    for name, body in STUBS.items():
        stub(stubs / name, name, body)
    # Kept aside for apt-get to "install".
    stub(state / "pg_ctlcluster", "pg_ctlcluster", STUBS["pg_ctlcluster"])
    stub(state / "mariadbd", "mariadbd", "true")
    env = {
        "PATH": f"{stubs}:{tools}",
        "STATE": str(state),
        "STUBS": str(stubs),
        "WAIT_SECONDS": "3",
        "MARIADBD": str(tmp_path / "sbin" / "mariadbd"),
        "MYSQLD_RUN_DIR": str(tmp_path / "run" / "mysqld"),
        "PG_ETC": str(tmp_path / "etc" / "postgresql"),
        "PG_LIB": str(tmp_path / "lib" / "postgresql"),
    }
    (tmp_path / "sbin").mkdir()
    return World(tmp_path, stubs, state, env)


def installed(world: World) -> None:
    (Path(world.env["PG_LIB"]) / "15").mkdir(parents=True)
    (Path(world.env["PG_ETC"]) / "15" / "main").mkdir(parents=True)
    stub(Path(world.env["MARIADBD"]), "mariadbd", "true")


def test_databases_that_are_up_are_left_alone(world: World):
    installed(world)
    (world.state / "pg_running").touch()
    (world.state / "mariadb_running").touch()
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["PostgreSQL is up", "MariaDB is up"]
    assert [c for c in world.calls() if not c.startswith(("pg_isready", "mysqladmin"))] == []


def test_installed_databases_that_are_down_are_started(world: World):
    installed(world)
    result = world.run()
    assert result.returncode == 0, result.stderr
    calls = world.calls()
    assert "pg_ctlcluster --skip-systemctl-redirect 15 main start" in calls
    assert any(c.startswith("start-stop-daemon --start") for c in calls)
    assert not any(c.startswith("apt-get") for c in calls)
    # mariadbd does not create its socket directory itself.
    assert Path(world.env["MYSQLD_RUN_DIR"]).is_dir()


def test_missing_databases_are_installed_from_debian_packages_and_set_up(world: World):
    (world.stubs / "pg_ctlcluster").unlink()
    result = world.run()
    assert result.returncode == 0, result.stderr
    calls = world.calls()
    assert calls.count("apt-get update -qq") == 1
    assert "apt-get install -y -qq postgresql" in calls
    assert "apt-get install -y -qq mariadb-server" in calls
    assert "installing postgresql from Debian packages" in result.stdout
    hba = (Path(world.env["PG_ETC"]) / "15" / "main" / "pg_hba.conf").read_text()
    assert hba.startswith("host all all 127.0.0.1/32 trust\n")
    assert any("psql -qc CREATE DATABASE test" in c for c in calls)
    assert any(c.startswith("mariadb -u root -e ALTER USER root@localhost") for c in calls)
    assert Path(world.env["MYSQLD_RUN_DIR"]).is_dir()


def test_a_database_that_does_not_come_up_fails_with_a_clear_message(world: World):
    installed(world)
    (world.state / "pg_broken").touch()
    result = world.run()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ci: PostgreSQL 15 did not answer on 127.0.0.1:5432 within 3s; "
        "see /var/log/postgresql/postgresql-15-main.log"
    )


def test_without_apt_get_it_says_it_cannot_install(world: World):
    (world.stubs / "pg_ctlcluster").unlink()
    (world.stubs / "apt-get").unlink()
    result = world.run()
    assert result.returncode == 1
    assert "ci: cannot install postgresql: apt-get not found" in result.stderr


def test_ci_run_uses_it():
    text = (ROOT / ".ci" / "run").read_text()
    assert ". .ci/databases.sh" in text
    assert "ensure_postgres" in text and "ensure_mariadb" in text  # noqa: PT018
    assert os.access(SCRIPT, os.X_OK)
