"""Every grpcurl example in README.md, run verbatim against a real ``dbgateway
serve`` started the way the README starts it (no configuration), with its output
compared to the block shown after it. Only the address is changed, to the port
this test's server got. The examples run in a shell whose PATH is what the
README tells a new user to set, starting from a PATH without this project's
tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    BIN,
    ROOT,
    ServerProcess,
    create_postgres_database,
    drop_postgres_database,
)

README_ADDRESS = "127.0.0.1:50051"
#: Output fields that differ from run to run.
VOLATILE_KEYS = {
    "elapsed",
    "transaction_id",
    "expire_time",
    "server_version",
    "acquired_total",
    "sender_pid",
    "received_at",
}
#: Examples that name this database run against a gateway that serves it on
#: PostgreSQL (features SQLite lacks, such as Subscribe); the others run
#: against the zero-configuration gateway.
POSTGRES_DATABASE = "orders"


def needs_postgres(code: str) -> bool:
    return f'"{POSTGRES_DATABASE}"' in code


def postgres_readme_server(workdir: Path, dsn: str) -> ServerProcess:
    """A gateway serving ``POSTGRES_DATABASE`` on the PostgreSQL database ``dsn``."""
    config = f'[databases.{POSTGRES_DATABASE}]\ndsn = "{dsn}"\n'
    return ServerProcess(workdir, config=config).start()


_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_examples(path: Path = ROOT / "README.md") -> list[tuple[str, str | None, str | None]]:
    """(command, expected output language, expected output) for each block
    whose first line runs grpcurl."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text())]
    examples = []
    for i, (lang, body) in enumerate(blocks):
        first = body.lstrip().partition("\n")[0]
        if lang != "sh" or "grpcurl " not in first:
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if following[0] in ("json", "text"):
            examples.append((body, following[0], following[1]))
        else:
            examples.append((body, None, None))
    return examples


def readme_path_setup(path: Path = ROOT / "README.md") -> str:
    """The README's own line that puts the tools on PATH."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text())]
    setups = [body for lang, body in blocks if lang == "sh" and body.startswith("export PATH=")]
    assert setups, "the README no longer tells users how to put the tools on PATH"
    return setups[0].strip()


def user_path() -> str:
    """PATH as a new user's shell has it: the system's, without this venv."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    venv = os.environ.get("VIRTUAL_ENV", "")
    return os.pathsep.join(
        d
        for d in dirs
        if d and Path(d).resolve() != BIN.resolve() and not (venv and d.startswith(venv))
    )


def readme_shell_env(**extra: str) -> dict[str, str]:
    """The environment of a shell in which the user ran the README's PATH
    line from the clone (``$PWD`` is the clone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBGATEWAY_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = user_path()
    result = subprocess.run(
        ["bash", "-c", f'{readme_path_setup()}\nprintf %s "$PATH"'],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    env["PATH"] = result.stdout
    env.update(extra)
    return env


def test_the_readme_path_line_is_what_makes_the_tools_found():
    # Without it, a new user's shell finds neither tool (the README's bug
    # report: "grpcurl: command not found") ...
    if shutil.which("grpcurl", path=user_path()) is None:
        assert shutil.which("dbgateway", path=user_path()) is None
    # ... and with it, both are the ones `make` installed.
    path = readme_shell_env()["PATH"]
    assert Path(shutil.which("grpcurl", path=path) or "").parent == BIN
    assert Path(shutil.which("dbgateway", path=path) or "").parent == BIN


def json_documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        docs.append(doc)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


def without_volatile(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_volatile(v) for k, v in node.items() if k not in VOLATILE_KEYS}
    if isinstance(node, list):
        return [without_volatile(v) for v in node]
    return node


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("readme")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def readme_postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    dsn = create_postgres_database()
    try:
        proc = postgres_readme_server(tmp_path_factory.mktemp("readme-pg"), dsn)
        yield proc
        proc.stop()
    finally:
        drop_postgres_database(dsn)


def test_readme_has_grpcurl_examples():
    commands = [c for c, _, _ in readme_examples()]
    assert len(commands) >= 6
    assert any("DatabaseService/Query" in c for c in commands)
    assert any("DatabaseService/Execute" in c for c in commands)
    assert any("grpc.health.v1.Health/Check" in c for c in commands)
    assert any(" list" in c for c in commands)
    assert any("/BeginTransaction" in c and "/Commit" in c for c in commands)
    assert any("DatabaseService/Transaction " in c for c in commands)


def test_every_readme_grpcurl_example_gives_the_output_shown(
    readme_server: ServerProcess, readme_postgres_server: ServerProcess
):
    env = readme_shell_env()
    for command, lang, expected in readme_examples():
        server = readme_postgres_server if needs_postgres(command) else readme_server
        script = command.replace(README_ADDRESS, server.address)
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=server.workdir,
            timeout=60,
        )
        shown = f"{command.strip()}\n--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}"
        if lang == "json":
            assert result.returncode == 0, shown
            assert without_volatile(json_documents(result.stdout)) == without_volatile(
                json_documents(expected or "")
            ), shown
        elif lang == "text":
            output = (result.stdout + result.stderr).strip()
            assert output == (expected or "").strip(), shown
        else:
            assert result.returncode == 0, shown
    # Examples leave no files behind in the user's directory (begin.json was one).
    assert not list(readme_server.workdir.glob("*.json"))
