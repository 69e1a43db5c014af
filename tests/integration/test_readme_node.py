"""The README's Node.js example, run with the machine's `node` against a real
zero-configuration gateway, after `npm install` of examples/node/package.json
into a temporary directory; its output compared with the block shown."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_readme import _FENCE
from tests.support import ROOT, ServerProcess

PACKAGE = ROOT / "examples" / "node" / "package.json"


def node_example() -> tuple[str, str]:
    """The README's js block and the text block after it."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer((ROOT / "README.md").read_text())]
    for i, (lang, body) in enumerate(blocks):
        if lang == "js":
            following = blocks[i + 1]
            assert following[0] == "text", "the Node example's output is not shown after it"
            return body, following[1]
    raise AssertionError("README has no Node.js example")


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "node is needed: apt-get install nodejs npm"
    assert npm, "npm is needed: apt-get install npm"
    project = tmp_path_factory.mktemp("node")
    shutil.copy(PACKAGE, project / "package.json")
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return project


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("readme-node")).start()
    yield proc
    proc.stop()


def test_the_readme_node_example_gives_the_output_shown(
    node_project: Path, readme_server: ServerProcess
):
    code, expected = node_example()
    (node_project / "query.js").write_text(code)
    result = subprocess.run(
        ["node", "query.js"],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(
            os.environ,
            DBGATEWAY_PROTOS=str(ROOT / "protos"),
            DBGATEWAY_SERVER=readme_server.address,
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.strip()
