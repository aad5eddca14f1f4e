"""deploy/ checked without an engine or a cluster: the Kubernetes manifests against the API's own
schemas (kubernetes-validate, offline), and the facts the files must agree on (ports, user id,
key names, the body limit, the settings' names)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chatbridge.config import Settings, env_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
# Named by issue 14 and landing on their own branches; the deploy files may set them already.
PLANNED = {"REDIS_URL", "METRICS_PUBLIC", "CLIENT_KEYS_FILE", "SHUTDOWN_GRACE_SECONDS"}
GATEWAY = {"app.kubernetes.io/name": "chatbridge", "app.kubernetes.io/component": "gateway"}


def _docs(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _kind(kind: str, name: str) -> dict[str, Any]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path.name):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in {K8S}")


def _gateway_container() -> dict[str, Any]:
    container: dict[str, Any] = _kind("Deployment", "chatbridge")["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifest_is_valid_for_the_kubernetes_api(path: str, version: str) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on an unknown or mistyped field


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_deployment_runs_three_non_root_replicas_probed_on_health() -> None:
    deployment = _kind("Deployment", "chatbridge")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"] == GATEWAY and spec["template"]["metadata"]["labels"] == GATEWAY
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # deploy/Dockerfile's user
    assert "USER 10001:10001" in (DEPLOY / "Dockerfile").read_text()
    container = _gateway_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    (http,) = container["ports"]
    settings = _kind("ConfigMap", "chatbridge-settings")["data"]
    assert http["name"] == "http" and http["containerPort"] == int(settings["PORT"])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_every_path_the_gateway_writes_is_a_volume() -> None:
    pod = _kind("Deployment", "chatbridge")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _gateway_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data_dir = _kind("ConfigMap", "chatbridge-settings")["data"]["DATA_DIR"]
    for path in (data_dir, "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], f"{path} is not on a writable volume"


def test_keys_come_from_the_secret_the_example_documents() -> None:
    example = _docs("secret.example.yaml")[0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in _gateway_container()["env"] if "valueFrom" in e}
    assert set(refs) == {"VALID_API_KEY", "ADMIN_API_KEY"}
    for name, ref in refs.items():
        assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"]
        assert ref.get("optional") is not True, f"{name}: a replica without it would make up a key of its own"


def test_service_pdb_and_redis_address_meet_up() -> None:
    service, pdb = _kind("Service", "chatbridge"), _kind("PodDisruptionBudget", "chatbridge")
    assert service["spec"]["selector"] == GATEWAY and pdb["spec"]["selector"]["matchLabels"] == GATEWAY
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    redis_service = _kind("Service", "chatbridge-redis")
    redis_url = _kind("ConfigMap", "chatbridge-settings")["data"]["REDIS_URL"]
    assert redis_url == f"redis://chatbridge-redis:{redis_service['spec']['ports'][0]['port']}/0"
    redis = _kind("StatefulSet", "chatbridge-redis")["spec"]["template"]
    assert redis_service["spec"]["selector"] == redis["metadata"]["labels"]


def test_configmap_names_only_settings_the_gateway_reads() -> None:
    unknown = set(_kind("ConfigMap", "chatbridge-settings")["data"]) - {n.upper() for n in env_names()} - PLANNED
    assert not unknown, f"not settings of chatbridge: {unknown}"


def test_compose_publishes_only_nginx_and_lets_the_gateway_scale() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(services) == {"chatbridge", "redis", "nginx"}
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: a fixed name cannot scale"
    assert "ports" not in services["chatbridge"] and "ports" not in services["redis"]
    assert services["nginx"]["ports"] == ["${CHATBRIDGE_PUBLISH:-8001}:80"]
    gateway = services["chatbridge"]
    assert gateway["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["environment"]["DATA_DIR"] == "/data" and "chatbridge-data:/data" in gateway["volumes"]
    unknown = set(gateway["environment"]) - {n.upper() for n in env_names()} - PLANNED
    assert not unknown, f"not settings of chatbridge: {unknown}"
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]


def _directives(block: str) -> dict[str, str]:
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s*([a-z_]+)\s+([^;{]*);", block, re.M)}


def test_nginx_conf_streams_unbuffered_to_a_least_connections_keepalive_pool() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    conf = re.sub(r"#.*", "", conf)
    upstream = re.search(r"upstream chatbridge \{(.*?)\}", conf, re.S)
    location = re.search(r"location / \{(.*?)\}", conf, re.S)
    assert upstream and location
    pool, proxy = _directives(upstream[1]), _directives(location[1])
    assert "least_conn" in upstream[1] and pool["server"].startswith("chatbridge:8001") and "keepalive" in pool
    assert proxy["proxy_pass"] == "http://chatbridge" and proxy["proxy_http_version"] == "1.1"
    assert proxy["proxy_buffering"] == "off" and proxy["proxy_cache"] == "off"
    assert int(proxy["proxy_read_timeout"].rstrip("s")) >= Settings.model_fields["stream_idle_timeout"].default
    assert 'Connection ""' in location[1] and "X-Request-Id $chatbridge_request_id" in location[1]
    limit = _directives(conf)["client_max_body_size"]
    assert int(limit.rstrip("m")) * 1024 * 1024 == Settings.model_fields["max_request_bytes"].default


def test_dockerignore_keeps_state_secrets_and_caches_out_of_the_image() -> None:
    ignored = set((DEPLOY.parent / ".dockerignore").read_text().split())
    assert {".git", "data", ".venv", ".env", ".pytest_cache", "**/__pycache__", "tests"} <= ignored
