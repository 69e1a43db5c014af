"""deploy/: the Kubernetes manifests and the compose file pass their schema
validators, and agree with each other and with the gateway itself: the
configuration they mount loads as ``dbgateway serve`` would load it, the
grace periods cover the drain, the probes ask the "" health service, the
selectors select the pods."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dbgateway_server.config import Config, check_exposure, load_config
from tests.support import BIN, ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _documents(KUBERNETES / name)]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _apply_json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The add/replace subset of RFC 6902 that the overlays use."""
    doc = copy.deepcopy(doc)
    for op in operations:
        assert op["op"] in ("add", "replace"), op
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "replace":
            assert (int(last) if isinstance(node, list) else last) in (
                range(len(node)) if isinstance(node, list) else node
            ), op["path"]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            node[last] = op["value"]
    return doc


def _plaintext() -> list[dict[str, Any]]:
    overlay = yaml.safe_load((KUBERNETES / "plaintext" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../"]
    docs = _base()
    for patch in overlay["patches"]:
        target = patch["target"]
        operations = yaml.safe_load((KUBERNETES / "plaintext" / patch["path"]).read_text())
        docs = [
            _apply_json_patch(d, operations)
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
            else d
            for d in docs
        ]
    return docs


@pytest.mark.parametrize("variant", ["tls", "plaintext"])
def test_every_kubernetes_resource_passes_the_schema_validator(variant):
    docs = _base() if variant == "tls" else _plaintext()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_is_not_a_rubber_stamp():
    deployment = copy.deepcopy(_find(_base(), "Deployment", "dbgateway"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _gateway_config(docs: list[dict[str, Any]], tmp_path: Path) -> Config:
    """The ConfigMap's dbgateway.toml loaded as the pod loads it: the mounted
    files under /etc/dbgateway exist, the env comes from the Deployment."""
    text = _find(docs, "ConfigMap", "dbgateway-config")["data"]["dbgateway.toml"]
    mounted = tmp_path / "etc"
    for relative in re.findall(r'"/etc/dbgateway/([^"]+)"', text):
        (mounted / relative).parent.mkdir(parents=True, exist_ok=True)
        (mounted / relative).write_text("mounted\n")
    path = tmp_path / "dbgateway.toml"
    path.write_text(text.replace("/etc/dbgateway/", f"{mounted}/"))
    deployment = _find(docs, "Deployment", "dbgateway")
    env_names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"POD_IP", "CLUSTER_SECRET"} <= env_names
    config = load_config(path, env={"POD_IP": "10.1.2.3", "CLUSTER_SECRET": "s" * 32})
    check_exposure(config)
    return config


@pytest.mark.parametrize("variant", ["tls", "plaintext"])
def test_the_mounted_configuration_is_one_the_gateway_accepts(variant, tmp_path):
    docs = _base() if variant == "tls" else _plaintext()
    config = _gateway_config(docs, tmp_path)
    assert config.server.tls is (variant == "tls")
    assert config.cluster is not None
    assert config.cluster.advertise == "10.1.2.3:50051"
    # The peers are the headless Service, on the port the pods listen on.
    peers_host, _, peers_port = config.cluster.dns_name.rpartition(":")
    peers = _find(docs, "Service", peers_host.split(".")[0])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    listen_port = int(config.server.listen.rpartition(":")[2])
    assert int(peers_port) == listen_port
    container = _find(docs, "Deployment", "dbgateway")["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [listen_port]


@pytest.mark.parametrize("variant", ["tls", "plaintext"])
def test_probes_ask_the_server_health_service(variant):
    docs = _base() if variant == "tls" else _plaintext()
    container = _find(docs, "Deployment", "dbgateway")["spec"]["template"]["spec"]["containers"][0]
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        if variant == "plaintext":
            assert probe["grpc"] == {"port": 50051, "service": ""}
        else:
            command = probe["exec"]["command"]
            assert command[:2] == ["dbgateway", "health"]
            # The CLI accepts exactly these flags (no --service: "" is its default).
            done = subprocess.run(
                [str(BIN / command[0]), *command[1:], "--help"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert "--service" not in command


def test_the_grace_period_covers_the_pre_stop_wait_and_the_drain(tmp_path):
    docs = _base()
    config = _gateway_config(docs, tmp_path)
    pod = _find(docs, "Deployment", "dbgateway")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + config.server.shutdown_grace


def test_the_pods_are_hardened_and_selected_by_everything_that_needs_them():
    docs = _base()
    deployment = _find(docs, "Deployment", "dbgateway")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"]["selector"].items() <= labels.items()
        if doc["kind"] == "PodDisruptionBudget":
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    # What the server writes (worker sockets, SQLite files) has a writable mount.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/dbgateway"} <= mounts
    # The Secret and ConfigMaps the pod refers to are in the kustomization.
    volumes = pod["volumes"]
    secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    maps = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ConfigMap", name) for name in maps} <= names
    # dbgateway-tls is made by `kubectl create secret tls` (README), the rest ships here.
    assert {("Secret", name) for name in secrets - {"dbgateway-tls"}} <= names


# -- docker compose -------------------------------------------------------------------------


def test_the_compose_file_passes_the_compose_schema():
    done = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_waits_for_healthy_databases_and_mounts_a_config_the_gateway_accepts(tmp_path):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    gateway = services["dbgateway"]
    assert set(gateway["depends_on"]) == {"postgres", "mariadb"}
    for name, dependency in gateway["depends_on"].items():
        assert dependency == {"condition": "service_healthy"}
        assert services[name]["healthcheck"]["test"]
    assert gateway["healthcheck"]["test"][1:3] == ["dbgateway", "health"]
    mount = next(v for v in gateway["volumes"] if v.endswith(":/etc/dbgateway/dbgateway.toml:ro"))
    source = DEPLOY / mount.split(":")[0]
    env = {k: str(v) for k, v in gateway["environment"].items()}
    config = load_config(source, env=env)
    check_exposure(config)
    assert {db.engine.value for db in config.databases.values()} == {
        "postgresql",
        "mysql",
        "sqlite",
    }
    # The published ports stay on this machine: the config has no TLS.
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])
    grace = int(gateway["stop_grace_period"].rstrip("s"))
    assert grace > config.server.shutdown_grace
