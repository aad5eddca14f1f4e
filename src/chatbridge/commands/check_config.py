"""`chatbridge check-config`: read the settings and every file they name, say what is wrong and how to fix it.

The gateway's own checks live here; each provider's plugin adds its own (`checks`). Nothing
here prints a token, key or password in full.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Optional

import typer
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from rich.console import Console

from chatbridge.commands.settings_errors import describe, not_utf8
from chatbridge.config import Settings, env_names
from chatbridge.core.findings import Finding
from chatbridge.core.secrets import mask, redact
from chatbridge.features.clientkeys import KeysFileError, read_keys_file
from chatbridge.providers import registry
from chatbridge.providers.settings import ENV_FILE_ENCODING

EXAMPLE_HEAD = """\
# chatbridge configuration (.env). Every line is optional; shown values are the defaults.
# Check a configuration with: chatbridge check-config

# --- server -------------------------------------------------------------------------
HOST=0.0.0.0
PORT=8001
# Keys, generated keys and pool health are kept here.
DATA_DIR=./data
LOG_LEVEL=INFO
# text or json
LOG_FORMAT=text
# Seconds until an answer's first content, all retries together (connect, headers, first data).
REQUEST_TIMEOUT=60
# Longest silence in content inside a healthy stream, in seconds (keep-alive comments are silence).
STREAM_IDLE_TIMEOUT=300
# Further credentials tried when an attempt fails before anything reached the client.
MAX_RETRIES=3
# Largest accepted request body, in bytes.
MAX_REQUEST_BYTES=10485760
# Largest single event of an upstream stream, and largest non-streamed upstream answer, in bytes;
# more is a 502 naming the upstream (reading stops at the limit).
MAX_UPSTREAM_EVENT_BYTES=16777216
MAX_UPSTREAM_BODY_BYTES=67108864
# Outbound proxy for every upstream call: http:// or https:// (socks is not supported),
# e.g. http://user:pass@proxy:3128
PROXY_URL=
WORKERS=1

# --- shared state, for several replicas -----------------------------------------------
# Redis (redis:// or rediss://, password in the URL) for pool health, sessions, limits and
# refreshed tokens, shared by every replica. Unset: memory plus a file under DATA_DIR.
# e.g. redis://:password@redis:6379/0
REDIS_URL=
# Prefix of every key and channel in Redis (to share one Redis between deployments).
REDIS_KEY_PREFIX=chatbridge:
# Seconds to connect and to read, per Redis call; while Redis is unreachable, requests are
# served from this process's last known state.
REDIS_TIMEOUT_SECONDS=0.5

# --- the listener (per worker process) ----------------------------------------------
# Largest request line + headers, in bytes, and most headers; more get 431.
MAX_HEADER_BYTES=65536
MAX_HEADERS=100
# Seconds to receive a request's headers (from its first byte), and then its body; slower gets 408.
HEADER_TIMEOUT=10
BODY_TIMEOUT=60
# Seconds an idle connection is kept open between two requests.
KEEPALIVE_TIMEOUT=5
# Connections open at once; when full, the longest-idle one is closed for a newcomer, else 503.
# Lowered at start to what the open-file limit allows.
MAX_CONNECTIONS=2048
# Browser origins allowed to call the API (CORS), comma separated, or * for any. Unset: none.
CORS_ORIGINS=
# On SIGTERM/SIGINT: stop accepting, let open answers finish this many seconds, then end the
# rest with an in-band error (OpenAI error chunk / Anthropic `event: error`).
SHUTDOWN_GRACE_SECONDS=30

# --- observability ------------------------------------------------------------------
# /metrics (Prometheus text) needs the admin key unless this is true.
METRICS_PUBLIC=false
# Set: OpenTelemetry traces (one span per chat request, a child per upstream attempt) go to this
# OTLP/HTTP collector (pip install 'chatbridge[otel]'); the other OTEL_* variables are honoured.
OTEL_EXPORTER_OTLP_ENDPOINT=

# --- keys ---------------------------------------------------------------------------
# Client keys (comma separated). Unset: one is generated in DATA_DIR and printed once.
VALID_API_KEY=
# Key for /admin/ (comma separated). Unset: generated in DATA_DIR and printed once.
# Must differ from every client key.
ADMIN_API_KEY=
# Named client keys with models (globs) and limits, YAML or JSON; re-read when it changes.
# With it set and VALID_API_KEY unset, no client key is generated. See README "Client keys and limits".
CLIENT_KEYS_FILE=

# --- credential pools (every provider) ----------------------------------------------
# Transient failures in a row (5xx, timeouts, resets) after which a token rests, then gets
# one trial request; it is never disabled for them. A success resets the count.
MAX_TOKEN_FAILURES=3
# The first rest, in seconds; doubled after each further failure, at most 5 minutes. When every
# token fails at once, the whole upstream rests the same way instead.
TOKEN_BACKOFF_SECONDS=5
# Cooldown after a 429 without Retry-After, in seconds.
TOKEN_COOLDOWN_SECONDS=60
# Seconds between checks of credential files for edits.
TOKENS_RELOAD_INTERVAL=2
# Replicas sharing Redis: seconds a per-credential stream slot lives unless its replica renews it
# (a replica killed with -9 frees its slots within this).
SLOT_TTL_SECONDS=30
# Refresh a credential this many seconds before it expires (when it can be refreshed).
TOKEN_REFRESH_AHEAD=600
# Least seconds between two automatically triggered refreshes.
TOKEN_REFRESH_MIN_INTERVAL=30

# --- answers and tools --------------------------------------------------------------
OUTPUT_THINKING=true
# reasoning_content or tags
THINKING_FORMAT=reasoning_content
ENABLE_TOOLIFY=true
TOOL_REPAIR_ATTEMPTS=1

# --- Anthropic Messages API (/v1/messages, Claude Code) -----------------------------
# Model names Anthropic clients ask for → served models (ids or provider names); globs allowed.
ANTHROPIC_MODEL_MAP=
# Any other claude-* id goes here; unset: 404.
ANTHROPIC_DEFAULT_MODEL=

# --- sessions and pseudo-streaming (stateful web-chat upstreams) ----------------------
# With the OpenAI `user` field, a follow-up continues the upstream chat for this long (s).
SESSION_CACHE_TTL=3600
# Conversations remembered; the least recently used go first.
MAX_SESSION_SIZE=1000
# An answer that arrives whole is streamed in pieces this long, this far apart (0: off).
PSEUDO_STREAM_CHUNK_CHARS=16
PSEUDO_STREAM_INTERVAL_MS=15
"""


def example_env() -> str:
    """A complete, commented `.env`: the gateway's variables, then each provider's."""
    return "\n".join([EXAMPLE_HEAD, *(p.example_env for p in registry.plugins() if p.example_env)])


def check_config(
    example: bool = typer.Option(False, "--example", help="Print a complete, commented example .env and exit."),
    env_file: Optional[Path] = typer.Option(None, "--env-file", help="The .env file to read (default: .env in the current folder, if any)."),
) -> None:
    """Check the environment, .env and every file they name; exit 1 on errors, 2 on invalid settings."""
    if example:
        typer.echo(example_env(), nl=False)
        return
    from pydantic import ValidationError

    if env_file is not None and not env_file.is_file():
        typer.echo(f"chatbridge: --env-file {env_file}: no such file", err=True)  # not "using the environment only"
        raise typer.Exit(2)
    env_file = env_file or Path(".env")
    console = Console(soft_wrap=True)
    present = env_file if env_file.is_file() else None
    quiet_dotenv()
    try:
        names = unparsed_lines(present) + unknown_names(os.environ, present) + alias_conflicts(os.environ, present)
        settings = Settings(_env_file=env_file if env_file.exists() else None)
    except UnicodeDecodeError as exc:
        console.print(f"[red]✗ error[/red]    {not_utf8(env_file, exc)}", highlight=False)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        _print(console, names)
        console.print(describe(exc, with_input=True, prefix="[red]✗ error[/red]    "), highlight=False)
        raise typer.Exit(2) from None
    findings = names + check_settings(settings, env_file)
    _print(console, findings)
    errors = sum(1 for f in findings if f.level == "error")
    warnings = sum(1 for f in findings if f.level == "warning")
    console.print(f"\n{errors} error(s), {warnings} warning(s).")
    if errors:
        raise typer.Exit(1)


_MARKS = {"ok": "[green]✓ ok[/green]     ", "warning": "[yellow]! warning[/yellow]", "error": "[red]✗ error[/red]  "}


def _print(console: Console, findings: Iterable[Finding]) -> None:
    for finding in findings:
        console.print(f"{_MARKS[finding.level]} [bold]{finding.subject}[/bold]: {finding.message}", highlight=False)
        if finding.fix and finding.level != "ok":
            console.print(f"           fix: {finding.fix}", highlight=False)


def accepted_names() -> set[str]:
    """Every variable name the gateway reads, aliases included (`API_KEY` for `VALID_API_KEY`)."""
    names = set(env_names())
    models: list[type[BaseSettings]] = [Settings, *(plugin.settings_class for plugin in registry.plugins())]
    for model in models:
        for field in model.model_fields.values():
            if isinstance(field.validation_alias, AliasChoices):
                names |= {str(choice).upper() for choice in field.validation_alias.choices}
    return names


# Variables other libraries read from the environment (OpenTelemetry's SDK, prometheus-client): not typos.
_SDK_PREFIXES = ("OTEL_", "PROMETHEUS_MULTIPROC_DIR")


def unknown_names(environ: Mapping[str, str], env_file: Path | None) -> list[Finding]:
    """Names that are not ours but look like it: a typo is read as nothing, silently, so say so.

    Everything in .env is meant for the gateway; the environment holds every other program's
    variables too, so only a close match to one of ours is mentioned there.
    """
    known = accepted_names()
    findings: list[Finding] = []
    if env_file is not None:
        for name in _dotenv(env_file):
            if name.upper().startswith(_SDK_PREFIXES) and name.upper() not in known:
                findings.append(Finding("warning", name, f"in {env_file} is not read: the OpenTelemetry SDK reads its "
                                        "OTEL_* variables from the environment only", "export it in the environment instead"))
                continue
            if name.upper() not in known:
                nearest = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
                hint = f"; did you mean {nearest[0]}?" if nearest else ""
                findings.append(Finding("warning", name, f"in {env_file} is not a chatbridge variable and is ignored{hint}",
                                        f"rename it to {nearest[0]}" if nearest else "remove it, or see `chatbridge check-config --example`"))
    for name in sorted(environ):
        if name.upper() not in known and not name.upper().startswith(_SDK_PREFIXES):
            nearest = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.85)
            if nearest:
                findings.append(Finding("warning", name, f"in the environment is not a chatbridge variable and is ignored; "
                                        f"did you mean {nearest[0]}?", f"rename it to {nearest[0]}"))
    return findings


def unparsed_lines(env_file: Path | None) -> list[Finding]:
    """Lines of `.env` that are not `NAME=value` (`PORT: 9000`): read as nothing, so say which, once each.

    python-dotenv's own warning for them is silenced (`quiet_dotenv`): it says it once per settings
    section, without the file, and never in check-config's counts. The value is not shown (it may be a key).
    """
    if env_file is None:
        return []
    from dotenv.parser import parse_stream

    with env_file.open(encoding=ENV_FILE_ENCODING) as stream:
        bad = [binding.original for binding in parse_stream(stream) if binding.error]
    findings = []
    for original in bad:
        name = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)", original.string)
        shown = f" ({name.group(1)} ...)" if name else ""
        findings.append(Finding("warning", str(env_file), f"line {original.line}{shown} is not NAME=value and is ignored",
                                "write it as NAME=value (quotes around a value with spaces or #)"))
    return findings


def quiet_dotenv() -> None:
    """python-dotenv's warning for a line it cannot parse is replaced by `unparsed_lines`."""
    logging.getLogger("dotenv.main").setLevel(logging.ERROR)


def _dotenv(env_file: Path) -> dict[str, str | None]:
    """The names and values in `env_file`, read as the settings read it (a byte-order mark is not a name)."""
    from dotenv import dotenv_values

    return dict(dotenv_values(env_file, encoding=ENV_FILE_ENCODING))


def alias_conflicts(environ: Mapping[str, str], env_file: Path | None) -> list[Finding]:
    """A variable and its alias set to different values (VALID_API_KEY and API_KEY): one is silently not read.

    The environment is read before `.env`, and in each the first of the names in order; values are never shown.
    """
    sources = [{k.upper(): v for k, v in environ.items()}]
    if env_file is not None:
        sources.append({k.upper(): v for k, v in _dotenv(env_file).items() if v is not None})
    findings: list[Finding] = []
    models: list[type[BaseSettings]] = [Settings, *(plugin.settings_class for plugin in registry.plugins())]
    for field in (f for model in models for f in model.model_fields.values()):
        if not isinstance(field.validation_alias, AliasChoices):
            continue
        choices = [str(c).upper() for c in field.validation_alias.choices]
        found = [(name, source[name]) for source in sources for name in choices if source.get(name)]
        if len({value for _, value in found}) > 1:
            read, others = found[0][0], sorted({name for name, _ in found} - {found[0][0]})
            findings.append(Finding("warning", read, f"is read; {', '.join(others)} also set, to a different value, is ignored",
                                    f"unset {' and '.join(others)}, or give {read} the key you meant"))
    return findings


def check_settings(settings: Settings, env_file: Path | None = None) -> list[Finding]:
    findings: list[Finding] = []
    if env_file is not None:
        if env_file.exists():
            findings.append(Finding("ok", ".env", f"read {env_file.resolve()}"))
        else:
            findings.append(Finding("ok", ".env", "no .env in the current folder; using the environment only"))
    findings += _data_dir(settings)
    findings += _redis(settings)
    findings += _keys(settings)
    for plugin in registry.plugins():
        section = settings.section(plugin.name)
        reason = plugin.disabled_reason(section)
        if reason is not None:
            findings.append(Finding("ok", plugin.name, reason))
        else:
            findings += plugin.checks(section, Path(settings.data_dir))
    return findings


def _data_dir(settings: Settings) -> list[Finding]:
    path = Path(settings.data_dir)
    if path.exists():
        if not path.is_dir():
            return [Finding("error", "DATA_DIR", f"{path} is not a folder", "point DATA_DIR at a folder")]
        if not os.access(path, os.W_OK):
            return [Finding("error", "DATA_DIR", f"{path} is not writable", f"chown/chmod {path} for the gateway's user")]
        return [Finding("ok", "DATA_DIR", f"{path} is writable (keys and pool health are kept here)")]
    parent = _existing_parent(path)
    if not os.access(parent, os.W_OK):
        return [Finding("error", "DATA_DIR", f"{path} does not exist and {parent} is not writable", "create it or choose another DATA_DIR")]
    return [Finding("ok", "DATA_DIR", f"{path} will be created at first start")]


def _redis(settings: Settings) -> list[Finding]:
    """Whether the shared store answers; unreachable is a warning: the gateway starts and converges later."""
    if settings.redis_url is None:
        return [Finding("ok", "REDIS_URL", "not set: state is this process's own (memory plus DATA_DIR); "
                                           "set it to share state between replicas")]
    from chatbridge.state.redis import probe

    where = redact(settings.redis_url)
    problem = probe(settings.redis_url, max(settings.redis_timeout_seconds, 1.0))
    if problem is not None:
        return [Finding("warning", "REDIS_URL", f"{where} does not answer ({problem}); the gateway would start and "
                                                "serve from local state until it does", "start Redis or fix REDIS_URL")]
    return [Finding("ok", "REDIS_URL", f"{where} answers (keys under {settings.redis_key_prefix!r}); state is shared")]


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _keys(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    client, admin = settings.client_keys, settings.admin_keys
    if client:
        findings.append(Finding("ok", "VALID_API_KEY", f"{len(client)} client key(s): {', '.join(mask(k) for k in client)}"))
    else:
        findings.append(Finding("ok", "VALID_API_KEY", "not set: a client key is generated under DATA_DIR at first start"
                                if settings.client_keys_file is None else "not set: the keys are CLIENT_KEYS_FILE's"))
    if admin:
        findings.append(Finding("ok", "ADMIN_API_KEY", f"{len(admin)} admin key(s): {', '.join(mask(k) for k in admin)}"))
    else:
        findings.append(Finding("ok", "ADMIN_API_KEY", "not set: an admin key is generated under DATA_DIR at first start"))
    if set(client) & set(admin):
        findings.append(Finding("error", "ADMIN_API_KEY", "is also a client key, so any client could administer the gateway",
                                "choose a different ADMIN_API_KEY (the gateway refuses to start like this)"))
    if settings.client_keys_file is not None:
        try:
            named = read_keys_file(Path(settings.client_keys_file))
        except KeysFileError as exc:
            findings.append(Finding("error", "CLIENT_KEYS_FILE", str(exc), "fix the entry named (the gateway refuses to start like this)"))
        else:
            findings.append(Finding("ok", "CLIENT_KEYS_FILE", f"{len(named)} named client key(s): {', '.join(k.name for k in named)}"))
    for name, keys in (("VALID_API_KEY", client), ("ADMIN_API_KEY", admin)):
        if any(len(k) < 16 for k in keys):
            findings.append(Finding("warning", name, "a key is shorter than 16 characters", "use a long random key, e.g. `openssl rand -hex 24`"))
    return findings
