"""`dbgateway health` as the container's HEALTHCHECK runs it: the Dockerfile's
own command, against a server that listens beyond loopback with TLS (as a
container must), configured only through the server's config file and
DBGATEWAY_* variables."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import Certificates, make_certificates
from tests.integration.test_client_cli import dbgateway
from tests.support import BIN, ROOT, ServerProcess


def healthcheck_command() -> list[str]:
    """The CMD of the Dockerfile's HEALTHCHECK (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "the Dockerfile's HEALTHCHECK changed shape"
    command: list[str] = json.loads(match.group(1))
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def container_server(root: Path, certs: Certificates, *, mutual: bool) -> ServerProcess:
    """``dbgateway serve`` with its config where the image keeps it (under
    ``root``), listening on every interface with TLS and a principal."""
    command = healthcheck_command()
    config_path = root / Path(command[command.index("--config") + 1]).relative_to("/")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    client_ca = f'tls_client_ca = "{certs.ca}"\n' if mutual else ""
    config_path.write_text(
        f'[server]\nlisten = "0.0.0.0:{free_port()}"\n'
        f'tls_cert = "{certs.server.cert}"\ntls_key = "{certs.server.key}"\n{client_ca}'
        f'[databases.lite]\ndsn = "sqlite://{root / "lite.sqlite3"}"\n'
        '[[principals]]\nname = "app"\n'
        'token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"\n'
        'databases = { lite = "write" }\n'
    )
    server = ServerProcess(root / "run", tls_ca=certs.ca)
    server.start_command = [str(BIN / "dbgateway"), "serve", "--config", str(config_path)]
    return server.start()


def run_healthcheck(root: Path, **env: str) -> tuple[int, str, str]:
    """Runs the HEALTHCHECK command as the image would, with its config path
    relocated under ``root`` (there is no Docker engine here)."""
    command = healthcheck_command()
    at = command.index("--config") + 1
    command[at] = str(root / Path(command[at]).relative_to("/"))
    assert command[0] == "dbgateway"
    result = dbgateway(*command[1:], **env)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


@pytest.fixture(scope="module")
def tls_root(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("image")
    server = container_server(root, certs, mutual=False)
    try:
        yield root
    finally:
        server.stop()


def test_the_healthcheck_passes_against_a_tls_server_with_the_containers_settings(
    tls_root: Path, certs: Certificates
):
    code, out, err = run_healthcheck(tls_root, DBGATEWAY_CA=str(certs.ca))
    assert (code, out) == (0, "SERVING"), err


def test_the_healthcheck_really_speaks_tls(tls_root: Path, certs: Certificates):
    # Without the CA the server's certificate cannot be verified: unhealthy.
    code, _, err = run_healthcheck(tls_root)
    assert code == 1
    assert "dbgateway: " in err
    # A wrong name in the certificate check fails as well.
    code, _, _ = run_healthcheck(
        tls_root, DBGATEWAY_CA=str(certs.ca), DBGATEWAY_SERVER_NAME="elsewhere.example"
    )
    assert code == 1


def test_health_takes_the_same_settings_as_flags(tls_root: Path, certs: Certificates):
    command = healthcheck_command()
    config = str(tls_root / Path(command[command.index("--config") + 1]).relative_to("/"))
    result = dbgateway("health", "--config", config, "--ca", str(certs.ca), "--token", "test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"
    result = dbgateway("health", DBGATEWAY_CONFIG=config, DBGATEWAY_CA=str(certs.ca))
    assert result.returncode == 0, result.stderr


def test_the_healthcheck_passes_with_mutual_tls_given_the_client_certificate(
    tmp_path: Path, certs: Certificates
):
    server = container_server(tmp_path, certs, mutual=True)
    try:
        code, out, err = run_healthcheck(
            tmp_path,
            DBGATEWAY_CA=str(certs.ca),
            DBGATEWAY_CERT=str(certs.client.cert),
            DBGATEWAY_KEY=str(certs.client.key),
        )
        assert (code, out) == (0, "SERVING"), err
        code, _, _ = run_healthcheck(tmp_path, DBGATEWAY_CA=str(certs.ca))
        assert code == 1
    finally:
        server.stop()
