"""`chatbridge serve`: settings in, the socket bound, the gateway listening.

The socket is bound before anything is printed, so "listening on" is true when it appears and
a port in use is a one-line error (exit code 2), like every other configuration error.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

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

    from chatbridge.api.server import bind_socket, listener_limits, raise_open_file_limit, server_config
    from chatbridge.core.logs import configure_logging
    from chatbridge.runtime import ConfigurationError, build_runtime, describe_keys

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    _warn_about_the_env_file()
    settings = _settings_or_exit(overrides)
    configure_logging(settings.log_level, settings.log_format)
    limits, limits_note = listener_limits(settings, raise_open_file_limit())
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        typer.echo(f"chatbridge: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
                   f"(HOST/PORT, or --host/--port)", err=True)
        raise typer.Exit(2) from None
    try:
        runtime = build_runtime(settings)  # creates the keys on first start, before workers fork
    except ConfigurationError as exc:
        sock.close()
        typer.echo(f"chatbridge: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # DATA_DIR a file or not writable, a named file unreadable: the path says which
        sock.close()
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"chatbridge: cannot start: {exc.strerror or exc}{where} (check DATA_DIR and the files "
                   f"the settings name; `chatbridge check-config` says more)", err=True)
        raise typer.Exit(2) from None
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    bound_port = sock.getsockname()[1]  # PORT=0 picks a free one
    lines = [
        f"chatbridge {__version__} listening on http://{_url_host(settings.host)}:{bound_port} "
        f"(OpenAI base URL: http://{_url_host(shown_host)}:{bound_port}/v1, docs: /docs, admin page: /admin)",
        *runtime.report,
        *([limits_note] if limits_note else []),
        *([f"CORS: browsers may call the API from {', '.join(settings.cors_origin_list)}"] if settings.cors_origin_list else []),
        *describe_keys(runtime),
    ]
    typer.echo("\n".join(lines))
    # uvicorn's own deadline comes after the drain's (SHUTDOWN_GRACE_SECONDS), which ends open answers in-band.
    common = dict(access_log=access_log, loop="uvloop", timeout_graceful_shutdown=settings.shutdown_grace_seconds + 5,
                  workers=settings.workers)
    if settings.workers > 1:
        _export_overrides(overrides)
        metrics_dir = _multiprocess_metrics_dir()
        typer.echo(f"metrics: {settings.workers} workers summed from {metrics_dir} (PROMETHEUS_MULTIPROC_DIR)")
        config = server_config("chatbridge.api.app:create_app_from_env", limits, factory=True, **common)
        try:
            _supervisor(config, sockets=[sock]).run()
        finally:
            _remove_metrics_dir(metrics_dir)
    else:
        from chatbridge.api.app import create_serving_app

        config = server_config(create_serving_app(runtime), limits, **common)
        server = uvicorn.Server(config)
        _exit_cleanly_after_shutdown()
        server.run(sockets=[sock])
        if not server.started:
            raise typer.Exit(3)  # the app failed to start; its error is in the log above


def _warn_about_the_env_file() -> None:
    """What is silently not read: a `.env` line that is not NAME=value, and a key alias beside a different
    VALID_API_KEY (its clients would get 401 with no hint why)."""
    from chatbridge.commands.check_config import alias_conflicts, quiet_dotenv, unparsed_lines

    quiet_dotenv()
    dotenv = Path(".env") if Path(".env").is_file() else None
    try:
        lines = [f"{f.subject}: {f.message}" for f in unparsed_lines(dotenv)]
        lines += [f"{f.subject} {f.message}" for f in alias_conflicts(os.environ, dotenv)]
    except (UnicodeDecodeError, OSError):
        return  # reading the settings fails on it too, and says so
    for line in lines:
        typer.echo(f"chatbridge: warning: {line}", err=True)


def _url_host(host: str) -> str:
    """An IPv6 address in brackets (`http://[::1]:8001`), as a URL needs it to be copied into a client."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _exit_cleanly_after_shutdown() -> None:
    """uvicorn re-raises the SIGTERM/SIGINT it shut down for once it is done, to the handler it found:
    this one, so a graceful shutdown ends with exit code 0, not death by signal."""
    def done(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, done)
    signal.signal(signal.SIGINT, done)


def _multiprocess_metrics_dir() -> Path:
    """A fresh private directory for the workers' metric files, set before they start (they read it at import).

    One the user set is used as it is (it should be emptied between runs, as prometheus-client says).
    """
    from chatbridge.api.prometheus import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    made = Path(tempfile.mkdtemp(prefix="chatbridge-metrics-"))  # mode 0700
    os.environ[MULTIPROC_ENV] = str(made)
    os.environ[_MADE_HERE] = "1"
    return made


def _remove_metrics_dir(directory: Path) -> None:
    if os.environ.pop(_MADE_HERE, None):
        shutil.rmtree(directory, ignore_errors=True)


_MADE_HERE = "_CHATBRIDGE_METRICS_DIR_MADE"


def _supervisor_class() -> Any:
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's worker supervisor, closing the listening socket when it stops: new connections are
        refused (not left queued on a socket no worker serves) while the workers finish their answers."""

        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    return Supervisor


def _supervisor(config: Any, sockets: list[Any]) -> Any:
    return _supervisor_class()(config, sockets=sockets)


def _settings_or_exit(overrides: Mapping[str, object]) -> Settings:
    """Settings, or one line per invalid variable (no traceback), exit code 2."""
    from pydantic import ValidationError

    from chatbridge.commands.settings_errors import describe, not_utf8
    from chatbridge.config import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        typer.echo(describe(exc, prefix="chatbridge: invalid configuration: "), err=True)
        raise typer.Exit(2) from None
    except UnicodeDecodeError as exc:  # the only file the settings read is .env
        typer.echo(f"chatbridge: invalid configuration: {not_utf8(Path('.env'), exc)}", err=True)
        raise typer.Exit(2) from None


def _export_overrides(overrides: Mapping[str, object]) -> None:
    """Worker processes read the environment; pass command-line overrides through it."""
    for key, value in overrides.items():
        os.environ[key.upper()] = str(value)
