"""`chatbridge check-config`: read the settings and every file they name, say what is wrong and how to fix it.

The gateway's own checks live here; each provider's plugin adds its own (`checks`). Nothing
here prints a token, key or password in full.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from chatbridge.commands.settings_errors import describe
from chatbridge.config import Settings
from chatbridge.core.findings import Finding
from chatbridge.core.secrets import mask
from chatbridge.providers import registry

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
# Seconds to connect and get the first byte from an upstream.
REQUEST_TIMEOUT=60
# Longest silence inside a healthy stream, in seconds.
STREAM_IDLE_TIMEOUT=300
# Further credentials tried when an attempt fails before anything reached the client.
MAX_RETRIES=3
# Largest accepted request body, in bytes.
MAX_REQUEST_BYTES=10485760
# Outbound proxy for every upstream call, e.g. http://user:pass@proxy:3128
PROXY_URL=
WORKERS=1

# --- keys ---------------------------------------------------------------------------
# Client keys (comma separated). Unset: one is generated in DATA_DIR and printed once.
VALID_API_KEY=
# Key for /admin/ (comma separated). Unset: generated in DATA_DIR and printed once.
# Must differ from every client key.
ADMIN_API_KEY=

# --- credential pools (every provider) ----------------------------------------------
# Consecutive failures (5xx, timeouts) that disable a token; a success resets the count.
MAX_TOKEN_FAILURES=3
# Cooldown after a 429 without Retry-After, in seconds.
TOKEN_COOLDOWN_SECONDS=60
# Seconds between checks of credential files for edits.
TOKENS_RELOAD_INTERVAL=2
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
"""


def example_env() -> str:
    """A complete, commented `.env`: the gateway's variables, then each provider's."""
    return "\n".join([EXAMPLE_HEAD, *(p.example_env for p in registry.plugins() if p.example_env)])


def check_config(
    example: bool = typer.Option(False, "--example", help="Print a complete, commented example .env and exit."),
    env_file: Path = typer.Option(Path(".env"), "--env-file", help="The .env file to read."),
) -> None:
    """Check the environment, .env and every file they name; exit non-zero on errors."""
    if example:
        typer.echo(example_env(), nl=False)
        return
    from pydantic import ValidationError

    console = Console(soft_wrap=True)
    try:
        settings = Settings(_env_file=env_file if env_file.exists() else None)
    except ValidationError as exc:
        console.print("[red]✗ error[/red]   the settings cannot be read:")
        console.print(describe(exc, with_input=True))
        raise typer.Exit(1) from None
    findings = check_settings(settings, env_file)
    marks = {"ok": "[green]✓ ok[/green]     ", "warning": "[yellow]! warning[/yellow]", "error": "[red]✗ error[/red]  "}
    for finding in findings:
        console.print(f"{marks[finding.level]} [bold]{finding.subject}[/bold]: {finding.message}", highlight=False)
        if finding.fix and finding.level != "ok":
            console.print(f"           fix: {finding.fix}", highlight=False)
    errors = sum(1 for f in findings if f.level == "error")
    warnings = sum(1 for f in findings if f.level == "warning")
    console.print(f"\n{errors} error(s), {warnings} warning(s).")
    if errors:
        raise typer.Exit(1)


def check_settings(settings: Settings, env_file: Path | None = None) -> list[Finding]:
    findings: list[Finding] = []
    if env_file is not None:
        if env_file.exists():
            findings.append(Finding("ok", ".env", f"read {env_file.resolve()}"))
        else:
            findings.append(Finding("ok", ".env", "no .env in the current folder; using the environment only"))
    findings += _data_dir(settings)
    findings += _keys(settings)
    findings += _proxy(settings)
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
        findings.append(Finding("ok", "VALID_API_KEY", "not set: a client key is generated under DATA_DIR at first start"))
    if admin:
        findings.append(Finding("ok", "ADMIN_API_KEY", f"{len(admin)} admin key(s): {', '.join(mask(k) for k in admin)}"))
    else:
        findings.append(Finding("ok", "ADMIN_API_KEY", "not set: an admin key is generated under DATA_DIR at first start"))
    if set(client) & set(admin):
        findings.append(Finding("error", "ADMIN_API_KEY", "is also a client key, so any client could administer the gateway",
                                "choose a different ADMIN_API_KEY (the gateway refuses to start like this)"))
    for name, keys in (("VALID_API_KEY", client), ("ADMIN_API_KEY", admin)):
        if any(len(k) < 16 for k in keys):
            findings.append(Finding("warning", name, "a key is shorter than 16 characters", "use a long random key, e.g. `openssl rand -hex 24`"))
    return findings


def _proxy(settings: Settings) -> list[Finding]:
    value = settings.proxy_url
    schemes = ("http://", "https://", "socks5://", "socks4://")
    if value is not None and not value.startswith(schemes):
        return [Finding("error", "PROXY_URL", f"{value!r} is not a URL", "start it with http:// or https://")]
    return []
