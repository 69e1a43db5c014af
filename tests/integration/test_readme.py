"""Every grpcurl example in README.md, run verbatim against a real ``dbgateway
serve`` started the way the README starts it (no configuration), with its output
compared to the block shown after it. Only the address is changed, to the port
this test's server got."""

from __future__ import annotations

import json
import os
import re
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
    """(command, expected output language, expected output) for each grpcurl block."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer(path.read_text())]
    examples = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "sh" or not body.lstrip().startswith("grpcurl"):
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if following[0] in ("json", "text"):
            examples.append((body, following[0], following[1]))
        else:
            examples.append((body, None, None))
    return examples


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
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
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
