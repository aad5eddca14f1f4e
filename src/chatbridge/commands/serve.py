"""`chatbridge serve`: settings in, the gateway listening."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional

import typer

from chatbridge import __version__
from chatbridge.config import Settings


def serve(
    host: Optional[str] = typer.Option(None, help="Address to listen on (default: HOST or 0.0.0.0)."),
    port: Optional[int] = typer.Option(None, help="Port (default: PORT or 8001)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: WORKERS or 1). More than one needs shared state for pools to agree; see README."),
    access_log: bool = typer.Option(True, help="Log every request."),
) -> None:
    """Start the gateway."""
    import uvicorn

    from chatbridge.core.logs import configure_logging
    from chatbridge.runtime import ConfigurationError, build_runtime, describe_keys

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = _settings_or_exit(overrides)
    configure_logging(settings.log_level, settings.log_format)
    try:
        runtime = build_runtime(settings)  # creates the keys on first start, before workers fork
    except ConfigurationError as exc:
        typer.echo(f"chatbridge: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    lines = [
        f"chatbridge {__version__} listening on http://{settings.host}:{settings.port} "
        f"(OpenAI base URL: http://{shown_host}:{settings.port}/v1, docs: /docs)",
        *runtime.report,
        *describe_keys(runtime),
    ]
    typer.echo("\n".join(lines))
    common = dict(host=settings.host, port=settings.port, log_config=None, access_log=access_log,
                  loop="uvloop", http="httptools", timeout_graceful_shutdown=5)
    if settings.workers > 1:
        _export_overrides(overrides)
        uvicorn.run("chatbridge.api.app:create_app_from_env", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    else:
        from chatbridge.api.app import create_serving_app

        uvicorn.run(create_serving_app(runtime), **common)  # type: ignore[arg-type]


def _settings_or_exit(overrides: Mapping[str, object]) -> Settings:
    """Settings, or a readable list of what is wrong with them (no traceback)."""
    from pydantic import ValidationError

    from chatbridge.commands.settings_errors import describe
    from chatbridge.config import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        typer.echo("chatbridge: invalid configuration:\n" + describe(exc), err=True)
        raise typer.Exit(2) from None


def _export_overrides(overrides: Mapping[str, object]) -> None:
    """Worker processes read the environment; pass command-line overrides through it."""
    for key, value in overrides.items():
        os.environ[key.upper()] = str(value)
