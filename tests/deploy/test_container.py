"""The image and the compose stack, built and run for real with podman.

One container: /health from the host, a non-root process, the image's HEALTHCHECK (on the default
port, on PORT=9000 with a read-only root, and failing when nothing listens). Then
deploy/compose.yaml with three gateway replicas behind nginx and Redis, answering chat requests
from the real `openai` SDK through nginx, every replica serving with the same generated key.
Skipped only where no engine can be installed (the reason is printed). The first run builds the
images (about 4 minutes); later runs reuse the cached layers.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.deploy.podman import ROOT, STANDINS, Podman, compose, find_podman, wait_healthy
from tests.upstreams import OpenAICompatEmulator

pytestmark = pytest.mark.timeout(1500)

RUN = secrets.token_hex(4)  # one per test run: image tags, container and project names
HI = [{"role": "user", "content": "hi"}]
# A digest of the package's sources, run here on the checkout and in the image on what pip installed.
SOURCE_DIGEST = (
    "import hashlib, pathlib, sys; root = pathlib.Path(sys.argv[1]); "
    "print(hashlib.sha256(b''.join(p.relative_to(root).as_posix().encode() + p.read_bytes() "
    "for p in sorted(root.rglob('*.py')))).hexdigest())"
)


@pytest.fixture(scope="module")
def podman() -> Podman:
    engine, why = find_podman()
    if engine is None:
        print(f"\ntests/deploy/test_container.py skipped: {why}")
        pytest.skip(f"no container engine: {why}")
    return engine


@pytest.fixture(scope="module")
def image(podman: Podman) -> Iterator[str]:
    """deploy/Dockerfile built under a tag of this run; the `cache` tag keeps its layers for the next run."""
    tag = f"localhost/chatbridge-test:{RUN}"
    podman.build(tag, ROOT / "deploy" / "Dockerfile", ROOT, "localhost/chatbridge-test:cache")
    yield tag
    podman.run("rmi", tag, check=False)


@pytest.fixture(scope="module")
def standins(podman: Podman) -> dict[str, str]:
    """nginx and Redis images in place of the registry's (stable tags: they are fixtures, not the product)."""
    images = {}
    for name in ("nginx", "redis"):
        tag = f"localhost/chatbridge-test-{name}:standin"
        podman.build(tag, STANDINS / f"{name}.Dockerfile", STANDINS)
        images[name] = tag
    return images


@pytest.fixture
def containers(podman: Podman) -> Iterator[list[str]]:
    """Names to remove after the test, whatever happened."""
    names: list[str] = []
    yield names
    podman.remove_containers(*names)


def _run(podman: Podman, containers: list[str], image: str, *args: str, port: int = 8001) -> tuple[str, int]:
    name = f"chatbridge-test-{RUN}-{len(containers)}"
    containers.append(name)
    podman.run("run", "-d", "--name", name, "-p", f"127.0.0.1::{port}", *args, image)
    return name, podman.host_port(name, port)


def test_image_serves_health_as_non_root_and_passes_its_healthcheck(
    podman: Podman, image: str, containers: list[str]
) -> None:
    name, port = _run(podman, containers, image)  # no settings at all: the zero-config start
    health = wait_healthy(f"http://127.0.0.1:{port}/health")
    assert health.json()["status"] in ("ok", "degraded")
    assert podman.out("exec", name, "id", "-u") == "10001"
    check = podman.run("healthcheck", "run", name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    inspected = json.loads(podman.out("image", "inspect", image))[0]
    assert inspected["Config"]["User"] == "10001:10001"
    assert "PORT" in " ".join(inspected["Healthcheck"]["Test"])  # read at run time, not baked in
    installed = podman.out("exec", name, "python", "-c", "import chatbridge, os; print(os.path.dirname(chatbridge.__file__))")
    in_image = podman.out("exec", name, "python", "-c", SOURCE_DIGEST, installed)
    here = subprocess.run([sys.executable, "-c", SOURCE_DIGEST, str(ROOT / "src" / "chatbridge")],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert in_image == here, "the image does not carry this checkout's code (a stale layer cache?)"
    compilers = podman.run("exec", name, "sh", "-c", "command -v gcc cc c++ make", check=False)
    assert compilers.stdout.strip() == "", f"build tools in the final image: {compilers.stdout}"


def test_healthcheck_follows_port_with_a_read_only_root(podman: Podman, image: str, containers: list[str]) -> None:
    name, port = _run(podman, containers, image, "-e", "PORT=9000", "--read-only", "--tmpfs", "/tmp", port=9000)
    wait_healthy(f"http://127.0.0.1:{port}/health")
    check = podman.run("healthcheck", "run", name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # Everything it writes (the generated keys) goes to the DATA_DIR volume, never the root filesystem.
    assert podman.out("exec", name, "cat", "/data/api_key").startswith("sk-cb-")


def test_healthcheck_fails_when_the_gateway_does_not_answer(podman: Podman, image: str, containers: list[str]) -> None:
    name = f"chatbridge-test-{RUN}-idle"
    containers.append(name)
    podman.run("run", "-d", "--name", name, "--entrypoint", "sleep", image, "300")
    check = podman.run("healthcheck", "run", name, check=False, timeout=60)
    assert check.returncode != 0, "the healthcheck passed with no gateway running"


@pytest.fixture
def upstream() -> Iterator[OpenAICompatEmulator]:
    """The OpenAI-compatible emulator on every interface, so containers reach it at host.containers.internal."""
    emulator = OpenAICompatEmulator(host="0.0.0.0")
    emulator.answer = "Served from behind nginx."
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def stack(podman: Podman, image: str, standins: dict[str, str], upstream: OpenAICompatEmulator,
          tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`podman-compose up --scale chatbridge=3`; yields (project, nginx's host port); always brought down."""
    project = f"cbtest{RUN}"
    upstream_port = upstream.base_url.rsplit(":", 1)[1]
    env_file = tmp_path / "stack.env"  # no VALID_API_KEY: the replicas must agree on one generated key
    env_file.write_text(
        "K2THINK_ENABLED=false\nKIMI_ENABLED=false\n"
        f"OPENAI_COMPAT_BASE_URL=http://host.containers.internal:{upstream_port}/v1\n"
        "OPENAI_COMPAT_MODELS=fake-model\n"
    )
    env = {"CHATBRIDGE_IMAGE": image, "NGINX_IMAGE": standins["nginx"], "REDIS_IMAGE": standins["redis"],
           "CHATBRIDGE_ENV_FILE": str(env_file), "CHATBRIDGE_PUBLISH": "127.0.0.1:"}
    try:
        up = compose("-p", project, "up", "-d", "--no-build", "--scale", "chatbridge=3", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        yield project, podman.host_port(f"{project}_nginx_1", 80)
    finally:
        compose("-p", project, "down", "-v", "--remove-orphans", "-t", "5", env=env)
        _remove_project(podman, project)


def _remove_project(podman: Podman, project: str) -> None:
    """Whatever podman-compose left behind: containers, pod, volumes, network."""
    label = f"label=io.podman.compose.project={project}"
    podman.remove_containers(*podman.out("ps", "-aq", "--filter", label).split())
    podman.run("pod", "rm", "-f", f"pod_{project}", check=False)
    for volume in podman.out("volume", "ls", "-q", "--filter", label).split():
        podman.run("volume", "rm", "-f", volume, check=False)
    podman.run("network", "rm", "-f", f"{project}_default", check=False)


def test_compose_three_replicas_behind_nginx_answer_chat(
    podman: Podman, stack: tuple[str, int], upstream: OpenAICompatEmulator
) -> None:
    project, port = stack
    base = f"http://127.0.0.1:{port}"
    wait_healthy(f"{base}/health")
    replicas = sorted(podman.out("ps", "-q", "--filter", f"label=io.podman.compose.project={project}",
                                 "--filter", "label=io.podman.compose.service=chatbridge").split())
    assert len(replicas) == 3
    keys = {podman.out("exec", replica, "cat", "/data/api_key") for replica in replicas}
    assert len(keys) == 1, "the replicas generated different keys"
    key = keys.pop()
    for replica in replicas:  # each replica answers /health before the traffic starts
        wait_healthy_inside(podman, replica)

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    for _ in range(9):
        reply = client.chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "Served from behind nginx."
    # A stream arrives as it is made: the first words well before the last (nginx buffers nothing).
    upstream.chunk_delay = 0.5
    arrivals: list[tuple[float, str]] = []
    for chunk in client.chat.completions.create(model="fake-model", messages=HI, stream=True):  # type: ignore[arg-type]
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    upstream.chunk_delay = 0.0
    assert "".join(text for _, text in arrivals) == "Served from behind nginx."
    assert len(arrivals) >= 3 and arrivals[-1][0] - arrivals[0][0] > 1.0, f"buffered: {arrivals}"
    assert len(upstream.requests_to("/v1/chat/completions")) == 10

    served = {replica: _chat_requests_logged(podman, replica) for replica in replicas}
    assert all(count > 0 for count in served.values()), f"requests per replica: {served}"

    # The client's request id reaches the replica and comes back; a wrong key is refused in OpenAI's envelope.
    echoed = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "req-deploy-1"})
    assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "req-deploy-1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0).models.list()

    # Over the body limit: nginx answers 413 itself, in the dialect's own envelope.
    big = {"model": "fake-model", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]}
    with pytest.raises(openai.APIStatusError) as too_large:
        client.chat.completions.create(**big)  # type: ignore[call-overload]
    assert too_large.value.status_code == 413
    assert too_large.value.body["code"] == "request_too_large"  # type: ignore[index]
    anthropic_413 = httpx.post(f"{base}/v1/messages", headers={"x-api-key": key}, json=big, timeout=30)
    assert anthropic_413.status_code == 413
    assert anthropic_413.json() == {"type": "error", "error": {"type": "request_too_large", "message": (
        "The request body is larger than the gateway accepts (10 MiB).")}}

    # Every replica gone: nginx says so in the dialect's envelope, with a time to come back.
    podman.run("stop", "-t", "2", *replicas, timeout=60)
    with pytest.raises(openai.APIStatusError) as unavailable:
        client.chat.completions.create(model="fake-model", messages=HI)  # type: ignore[arg-type]
    assert unavailable.value.status_code == 503 and unavailable.value.response.headers["retry-after"] == "5"
    assert unavailable.value.body["code"] == "gateway_unavailable"  # type: ignore[index]


def wait_healthy_inside(podman: Podman, container: str) -> None:
    probe = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8001/health', timeout=4).status)"
    for _ in range(60):
        proc = podman.run("exec", container, "python", "-c", probe, check=False)
        if proc.stdout.strip() == "200":
            return
        time.sleep(0.5)
    raise AssertionError(f"replica {container} never answered /health")


def _chat_requests_logged(podman: Podman, container: str) -> int:
    """Chat requests in the replica's uvicorn access log."""
    logs = podman.run("logs", container)
    return (logs.stdout + logs.stderr).count('"POST /v1/chat/completions HTTP/1.1" 200')
