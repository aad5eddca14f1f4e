"""OpenTelemetry traces, on only when an OTLP endpoint is configured.

`start_tracing(endpoint)` imports the SDK (the `otel` extra) and returns a `Tracing` whose
`tracer` makes the spans: one per chat request (api) with a child per upstream attempt
(gateway). Without an endpoint nothing here imports opentelemetry and callers hold None, so
a request pays one `is None` test. The SDK's own variables are honoured: OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES (service.name is "chatbridge" unless they name one),
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT,
OTEL_BSP_* (batching), OTEL_TRACES_SAMPLER(_ARG), OTEL_SDK_DISABLED.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("chatbridge.tracing")

SERVICE_NAME = "chatbridge"
TRACING_MISSING = ("OpenTelemetry traces need the SDK and the OTLP exporter: pip install 'chatbridge[otel]' "
            "(or unset OTEL_EXPORTER_OTLP_ENDPOINT)")


class TracingUnavailable(RuntimeError):
    """OTEL_EXPORTER_OTLP_ENDPOINT is set but the SDK is not installed."""


class Tracing:
    """The tracer provider this process exports through; `shutdown` flushes the spans still batched."""

    def __init__(self, provider: Any, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.tracer: Any = provider.get_tracer("chatbridge")

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()  # bounded by the exporter's timeout (OTEL_EXPORTER_OTLP_TIMEOUT)
        except Exception as exc:  # the collector is gone: the spans are lost, the shutdown goes on
            log.warning("could not flush the last traces: %s", exc)


def tracing_installed() -> bool:
    """The SDK and the OTLP/HTTP exporter can be imported (checked without importing them)."""
    from importlib.util import find_spec

    try:
        return all(find_spec(name) is not None for name in
                   ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"))
    except ModuleNotFoundError:
        return False


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; traces go to its /v1/traces (the OTLP/HTTP rule)."""
    return endpoint.rstrip("/") + "/v1/traces"


def _names_service() -> bool:
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return bool(os.environ.get("OTEL_SERVICE_NAME")) or any(
        part.split("=", 1)[0].strip() == "service.name" for part in attributes.split(","))


def start_tracing(endpoint: str | None) -> Tracing | None:
    """A `Tracing` exporting to `endpoint` (OTLP/HTTP protobuf); None when unset or OTEL_SDK_DISABLED."""
    if not endpoint or _disabled():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(TRACING_MISSING) from exc
    resource = Resource.create({} if _names_service() else {"service.name": SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    # A traces-specific endpoint, when set, is the SDK's to read; else the base endpoint's /v1/traces.
    url = None if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") else _traces_url(endpoint)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return Tracing(provider, url or os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
