"""OpenTelemetry traces: spans of real requests reach a fake OTLP/HTTP collector; off, nothing is imported."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.harness import GatewayProcess
from tests.upstreams import OpenAICompatEmulator

API_KEY = "sk-test-client-key-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, decoded with opentelemetry-proto."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                collector.receive(self.path, raw)
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, path: str, raw: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(raw)
        self.paths.append(path)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append({"name": span.name, "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                       "trace": span.trace_id.hex(), "attributes": attributes, "resource": resource,
                                       "status": span.status.code})

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.spans) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def test_a_request_and_its_upstream_attempts_reach_the_collector(compat_emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    compat_emu.api_key = UPSTREAM_KEY
    with Collector() as collector:
        env = {"OPENAI_COMPAT_BASE_URL": compat_emu.base_url + "/v1", "OPENAI_COMPAT_API_KEY": UPSTREAM_KEY,
               "K2THINK_ENABLED": "false", "VALID_API_KEY": API_KEY, "DATA_DIR": str(tmp_path / "data"),
               "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        gateway = GatewayProcess(env, tmp_path).start()
        try:
            compat_emu.fail_next(1, 500)  # the first attempt fails, the second answers
            body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            reply = httpx.post(gateway.base_url + "/v1/chat/completions", json=body, timeout=20,
                               headers={"Authorization": f"Bearer {API_KEY}", "x-request-id": "req-trace-test-1"})
            assert reply.status_code == 200 and "[DONE]" in reply.text
            spans = collector.wait_for(3)
        finally:
            gateway.stop()
    assert all(path == "/v1/traces" for path in collector.paths)
    requests = [s for s in spans if s["attributes"].get("chatbridge.request_id") == "req-trace-test-1"]
    assert len(requests) == 1, spans
    request = requests[0]
    assert request["name"] == "POST /v1/chat/completions" and request["parent"] == ""
    assert request["resource"]["service.name"] == "chatbridge"
    assert request["attributes"].items() >= {
        "http.route": "/v1/chat/completions", "http.response.status_code": 200, "chatbridge.dialect": "openai",
        "chatbridge.model": "fake-model", "chatbridge.provider": "openai", "chatbridge.streamed": True,
    }.items()
    attempts = sorted((s for s in spans if s["parent"] == request["id"]), key=lambda s: s["attributes"]["chatbridge.attempt"])
    assert [a["name"] for a in attempts] == ["upstream attempt", "upstream attempt"]
    assert all(a["trace"] == request["trace"] for a in attempts)
    failed, answered = (a["attributes"] for a in attempts)
    assert failed["chatbridge.outcome"] == "failed" and failed["chatbridge.failure"] == "transient"
    assert attempts[0]["status"] == 2  # STATUS_CODE_ERROR
    assert answered["chatbridge.outcome"] == "ok" and "chatbridge.failure" not in answered
    assert failed["chatbridge.provider"] == "openai"
    credential = failed.get("chatbridge.credential")
    assert credential is None or (UPSTREAM_KEY not in credential)
    assert UPSTREAM_KEY not in json.dumps(spans)


def test_tracing_off_loads_no_sdk_and_no_exporter(tmp_path: Path) -> None:
    script = f"""
import sys
from chatbridge.config import Settings
from chatbridge.runtime import build_runtime
from chatbridge.api.app import create_app
settings = Settings(_env_file=None, data_dir={str(tmp_path)!r}, valid_api_key="sk-test-0123456789abcdef",
                    kimi_enabled=False)
runtime = build_runtime(settings)
create_app(runtime)
assert runtime.tracer is None and runtime.pipeline.tracer is None
# (fastapi and anthropic import the opentelemetry *API* themselves; the SDK and exporter are ours to load)
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")))
print("LOADED", loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout


def test_an_endpoint_without_the_sdk_is_a_configuration_error(tmp_path: Path) -> None:
    """Asked for traces without the `otel` extra: a one-line error at start, not a crash per request."""
    script = f"""
import sys
sys.modules["opentelemetry.sdk"] = None  # as if the extra were not installed
from chatbridge.config import Settings
from chatbridge.runtime import ConfigurationError, build_runtime
settings = Settings(_env_file=None, data_dir={str(tmp_path)!r}, valid_api_key="sk-test-0123456789abcdef",
                    kimi_enabled=False, otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
try:
    build_runtime(settings)
except ConfigurationError as exc:
    print("REFUSED", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "REFUSED" in done.stdout and "chatbridge[otel]" in done.stdout, (done.stdout, done.stderr)
