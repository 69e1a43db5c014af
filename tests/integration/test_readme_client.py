"""The README's Python examples and `dbgateway` command-line examples, run in
order against a real zero-configuration `dbgateway serve`, with their output
compared to the block shown after each. Only the address is changed."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.test_readme import (
    _FENCE,
    README_ADDRESS,
    needs_postgres,
    postgres_readme_server,
    readme_shell_env,
)
from tests.support import (
    ROOT,
    ServerProcess,
    create_postgres_database,
    drop_postgres_database,
)


def client_examples() -> list[tuple[str, str, str | None, str | None]]:
    """(language, code, output language, output) for each python block and
    each sh block that runs `dbgateway` (but not `dbgateway serve`)."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer((ROOT / "README.md").read_text())]
    examples = []
    for i, (lang, body) in enumerate(blocks):
        runs_client = lang == "sh" and body.startswith("dbgateway ") and "serve" not in body
        if lang != "python" and not runs_client:
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if following[0] in ("json", "text"):
            examples.append((lang, body, following[0], following[1]))
        else:
            examples.append((lang, body, None, None))
    return examples


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("readme-client")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def readme_postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    dsn = create_postgres_database()
    try:
        proc = postgres_readme_server(tmp_path_factory.mktemp("readme-client-pg"), dsn)
        yield proc
        proc.stop()
    finally:
        drop_postgres_database(dsn)


def test_readme_shows_the_client_and_the_cli():
    examples = client_examples()
    assert sum(lang == "python" for lang, *_ in examples) >= 2
    assert any(code.startswith("dbgateway query") for _, code, _, _ in examples)
    assert any(code.startswith("dbgateway health") for _, code, _, _ in examples)


def test_every_readme_client_example_gives_the_output_shown(
    readme_server: ServerProcess, readme_postgres_server: ServerProcess
):
    for lang, code, out_lang, expected in client_examples():
        server = readme_postgres_server if needs_postgres(code) else readme_server
        env = readme_shell_env(DBGATEWAY_SERVER=server.address)
        if lang == "python":
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(
                    # dont_inherit: run as a reader's script would, without
                    # this module's `from __future__ import annotations`.
                    compile(
                        code.replace(README_ADDRESS, server.address),
                        "README.md",
                        "exec",
                        dont_inherit=True,
                    ),
                    {},
                )
            stdout, status = output.getvalue(), 0
        else:
            result = subprocess.run(
                ["bash", "-eo", "pipefail", "-c", code],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            stdout, status = result.stdout, result.returncode
            assert status == 0, f"{code}\n{result.stderr}"
        shown = f"{code}\n--- output:\n{stdout}"
        if out_lang == "json":
            assert [json.loads(line) for line in stdout.splitlines()] == [
                json.loads(line) for line in (expected or "").splitlines()
            ], shown
        elif out_lang == "text":
            assert stdout.rstrip("\n") == (expected or "").rstrip("\n"), shown
