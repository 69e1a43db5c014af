"""``[cluster]``: peers, the secret and this replica's own address, each
mistake reported in one line naming the key."""

from __future__ import annotations

import pytest

from dbgateway_server.config import ClusterConfig
from tests.unit.test_config import error_of, parse

DB = "[databases.a]\ndsn = 'sqlite:a.db'\n"
SERVER = "[server]\nlisten = '10.0.0.1:50051'\nallow_insecure = true\n"
SECRET = "s3cret-s3cret-s3cret"


def test_a_static_peer_list_includes_this_replica():
    config = parse(
        f"{SERVER}[cluster]\npeers = ['10.0.0.1:50051', '10.0.0.2:50051']\nsecret = '${{S}}'\n{DB}",
        env={"S": SECRET},
    )
    assert config.cluster == ClusterConfig(
        peers=("10.0.0.1:50051", "10.0.0.2:50051"), secret=SECRET, advertise="10.0.0.1:50051"
    )
    assert config.cluster.dns_name == ""


def test_dns_peers_and_an_advertised_address():
    config = parse(
        "[server]\nlisten = '0.0.0.0:50051'\nallow_insecure = true\n"
        f"[cluster]\npeers = ['dns:///peers:50051']\nsecret = '{SECRET}'\n"
        f"advertise = '10.1.2.3:50051'\n{DB}"
    )
    assert config.cluster is not None
    assert config.cluster.dns_name == "peers:50051"
    assert config.cluster.advertise == "10.1.2.3:50051"


def test_the_secret_can_come_from_a_file(tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = parse(
        f"{SERVER}[cluster]\npeers = ['10.0.0.1:50051']\nsecret_file = 'secret'\n{DB}",
        tmp=tmp_path,
    )
    assert config.cluster is not None
    assert config.cluster.secret == SECRET


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ("peers = []", "cluster.peers: must be a non-empty list"),
        (
            "peers = ['10.0.0.1:50051']\nsecret = 'short'",
            "cluster.secret: is required and must have at least 16",
        ),
        ("peers = ['10.0.0.1:50051']", "cluster.secret: is required"),
        (
            f"peers = ['10.0.0.2:50051', '10.0.0.3:50051']\nsecret = '{SECRET}'",
            "cluster.peers: must include this replica's own address 10.0.0.1:50051",
        ),
        (
            f"peers = ['dns:///a:1', '10.0.0.1:50051']\nsecret = '{SECRET}'",
            "cluster.peers: a dns:/// name stands alone",
        ),
        (f"peers = ['nowhere']\nsecret = '{SECRET}'", "cluster.peers[0]: must be HOST:PORT"),
        (
            f"peers = ['10.0.0.1:50051']\nsecret = '{SECRET}'\nsecret_file = 'x'",
            "cluster.secret_file: give secret or secret_file, not both",
        ),
        (f"peers = ['10.0.0.1:50051']\nsecret = '{SECRET}'\npeer = 1", "cluster.peer: unknown key"),
        (
            f"peers = ['10.0.0.1:50051']\nsecret = '{SECRET}'\ntls_cert = 'c.pem'",
            "cluster.tls_key: tls_cert and tls_key go together",
        ),
    ],
)
def test_a_bad_cluster_section_names_the_key(cluster, expected):
    message = error_of(f"{SERVER}[cluster]\n{cluster}\n{DB}")
    assert expected in message
    assert "\n" not in message


def test_a_wildcard_listen_needs_an_advertised_address():
    message = error_of(
        "[server]\nlisten = '0.0.0.0:50051'\nallow_insecure = true\n"
        f"[cluster]\npeers = ['dns:///peers:50051']\nsecret = '{SECRET}'\n{DB}"
    )
    assert "cluster.advertise: server.listen 0.0.0.0:50051 is a wildcard address" in message
