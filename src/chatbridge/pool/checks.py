"""`chatbridge check-config`: read the settings and every file they name, say what is wrong and how to fix it.

Pure functions from settings to `Finding`s; the CLI prints them. Nothing here prints or
returns a token, key or password in full.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chatbridge.config import Settings
from chatbridge.core.secrets import mask
from chatbridge.pool.accounts import read_accounts_file
from chatbridge.pool.sources import jwt_claims, parse_tokens_text

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    subject: str
    message: str
    fix: str | None = None


def check_settings(settings: Settings, env_file: Path | None = None) -> list[Finding]:
    findings: list[Finding] = []
    if env_file is not None:
        if env_file.exists():
            findings.append(Finding("ok", ".env", f"read {env_file.resolve()}"))
        else:
            findings.append(Finding("ok", ".env", "no .env in the current folder; using the environment only"))
    findings += _data_dir(settings)
    findings += _keys(settings)
    findings += _k2think(settings)
    findings += _urls(settings)
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


def _k2think(settings: Settings) -> list[Finding]:
    if not settings.k2think_enabled:
        return [Finding("ok", "K2THINK_ENABLED", "false: the K2Think provider is off")]
    findings: list[Finding] = []
    auto = settings.enable_token_auto_update
    if settings.k2think_token is not None and settings.k2think_token.get_secret_value().strip():
        findings += _token_findings("K2THINK_TOKEN", [settings.k2think_token.get_secret_value().strip()], fatal_if_all_bad=False)
    if settings.tokens_file is not None:
        findings += _tokens_file(settings.tokens_file, refreshable=auto and settings.accounts_file is not None)
    if settings.accounts_file is not None:
        findings += _accounts_file(settings.accounts_file)
        if not auto:
            findings.append(Finding("warning", "ACCOUNTS_FILE", "is only used by `chatbridge accounts login` while ENABLE_TOKEN_AUTO_UPDATE is false",
                                    "set ENABLE_TOKEN_AUTO_UPDATE=true to refresh tokens from it automatically"))
    elif auto:
        findings.append(Finding("error", "ENABLE_TOKEN_AUTO_UPDATE", "is true but no ACCOUNTS_FILE is set, so there is nothing to sign in with",
                                'set ACCOUNTS_FILE to a file of {"email": ..., "password": ...} lines'))
    if auto and settings.token_update_interval < 300:
        findings.append(Finding("warning", "TOKEN_UPDATE_INTERVAL", f"{settings.token_update_interval:g} s signs every account in very often",
                                "use at least 3600 (the default is 86400)"))
    guest = settings.k2think_tokens_path is None and not (settings.k2think_token and settings.k2think_token.get_secret_value().strip())
    mode = ("guest mode (no account; set K2THINK_TOKEN, TOKENS_FILE, or ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true "
            "for token mode)") if guest else "token mode"
    findings.append(Finding("ok", "K2Think", mode))
    return findings


def _tokens_file(path: Path, refreshable: bool) -> list[Finding]:
    if not path.exists():
        if refreshable:
            return [Finding("ok", "TOKENS_FILE", f"{path} does not exist yet; the first refresh from ACCOUNTS_FILE creates it")]
        return [Finding("error", "TOKENS_FILE", f"{path} does not exist",
                        "create it with one token a line, or run `chatbridge accounts login --accounts FILE --out FILE`")]
    try:
        tokens = parse_tokens_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("error", "TOKENS_FILE", f"{path} cannot be read: {exc}", "check its permissions and that it is UTF-8 text")]
    if not tokens:
        level: Level = "ok" if refreshable else "error"
        fix = None if refreshable else "add one token a line (blank lines and # comments are ignored)"
        return [Finding(level, "TOKENS_FILE", f"{path} holds no token" + ("; the first refresh fills it" if refreshable else ""), fix)]
    return _token_findings("TOKENS_FILE", tokens, fatal_if_all_bad=not refreshable, where=str(path))


def _token_findings(subject: str, tokens: list[str], fatal_if_all_bad: bool, where: str = "") -> list[Finding]:
    now = time.time()
    expired, not_jwt, soon = 0, 0, 0
    for token in tokens:
        exp = jwt_claims(token).get("exp")
        if not isinstance(exp, (int, float)):
            not_jwt += 1
        elif exp <= now:
            expired += 1
        elif exp - now < 3600:
            soon += 1
    label = f"{where}: " if where else ""
    findings = [Finding("ok", subject, f"{label}{len(tokens)} token(s), {len(tokens) - expired} not expired")]
    if expired:
        level: Level = "error" if expired == len(tokens) and fatal_if_all_bad else "warning"
        findings.append(Finding(level, subject, f"{expired} token(s) have an expired JWT and will not be used",
                                "replace them (`chatbridge accounts login`), or enable ENABLE_TOKEN_AUTO_UPDATE with an ACCOUNTS_FILE"))
    if soon:
        findings.append(Finding("warning", subject, f"{soon} token(s) expire within the hour"))
    if not_jwt:
        findings.append(Finding("warning", subject, f"{not_jwt} value(s) are not JWTs (no readable exp); they are used as they are"))
    return findings


def _accounts_file(path: Path) -> list[Finding]:
    if not path.exists():
        return [Finding("error", "ACCOUNTS_FILE", f"{path} does not exist", 'create it with one {"email": ..., "password": ...} JSON object a line')]
    try:
        parsed = read_accounts_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("error", "ACCOUNTS_FILE", f"{path} cannot be read: {exc}", "check its permissions and that it is UTF-8 text")]
    findings = [Finding("error" if not parsed.accounts else "ok", "ACCOUNTS_FILE", f"{path}: {len(parsed.accounts)} account(s)",
                        None if parsed.accounts else 'add one {"email": ..., "password": ...} JSON object a line')]
    for problem in parsed.problems[:20]:
        findings.append(Finding("warning", "ACCOUNTS_FILE", problem, 'each line must be {"email": "...", "password": "..."}'))
    if len(parsed.problems) > 20:
        findings.append(Finding("warning", "ACCOUNTS_FILE", f"... and {len(parsed.problems) - 20} more problem line(s)"))
    mode = path.stat().st_mode & 0o077
    if mode:
        findings.append(Finding("warning", "ACCOUNTS_FILE", "holds passwords but is readable by other users", f"chmod 600 {path}"))
    return findings


def _urls(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    for name, value in (("K2THINK_BASE_URL", settings.k2think_base_url), ("OPENAI_COMPAT_BASE_URL", settings.openai_compat_base_url),
                        ("PROXY_URL", settings.proxy_url)):
        if value is None:
            continue
        schemes = ("http://", "https://", "socks5://", "socks4://") if name == "PROXY_URL" else ("http://", "https://")
        if not value.startswith(schemes):
            findings.append(Finding("error", name, f"{value!r} is not a URL", f"start it with {' or '.join(schemes[:2])}"))
    return findings


EXAMPLE_ENV = """\
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

# --- K2Think ------------------------------------------------------------------------
K2THINK_ENABLED=true
K2THINK_BASE_URL=https://www.k2think.ai
K2THINK_UPSTREAM_MODEL=MBZUAI-IFM/K2-Think-v2
# One token (JWT) for a single account.
K2THINK_TOKEN=
# One token a line; blank lines and # comments are ignored. Edits are picked up without a restart.
# TOKENS_FILE=./data/tokens.txt
# With none of K2THINK_TOKEN, TOKENS_FILE or ACCOUNTS_FILE, K2Think runs in guest mode.

# --- credential pool ----------------------------------------------------------------
# Consecutive failures (5xx, timeouts) that disable a token; a success resets the count.
MAX_TOKEN_FAILURES=3
# Cooldown after a 429 without Retry-After, in seconds.
TOKEN_COOLDOWN_SECONDS=60
# Seconds between checks of TOKENS_FILE for edits.
TOKENS_RELOAD_INTERVAL=2

# --- refresh from accounts ----------------------------------------------------------
# One JSON object a line: {"email": "me@example.com", "password": "..."}
# ("k2_password" is accepted too). Keep it chmod 600.
# ACCOUNTS_FILE=./data/accounts.txt
# Sign the accounts in on a schedule, when the tokens file is empty, after an auth failure,
# after two consecutive failures, and when the pool is exhausted. Writes TOKENS_FILE
# (or DATA_DIR/k2think-tokens.txt) atomically, keeping the old one as .backup.
ENABLE_TOKEN_AUTO_UPDATE=false
TOKEN_UPDATE_INTERVAL=86400
# Refresh a token this many seconds before its JWT expires (when its account is known).
TOKEN_REFRESH_AHEAD=600
# Least seconds between two automatically triggered refreshes.
TOKEN_REFRESH_MIN_INTERVAL=30
SIGNIN_CONCURRENCY=4
SIGNIN_ATTEMPTS=3
SIGNIN_RETRY_BACKOFF=1

# --- answers and tools --------------------------------------------------------------
OUTPUT_THINKING=true
# reasoning_content or tags
THINKING_FORMAT=reasoning_content
ENABLE_TOOLIFY=true
TOOL_REPAIR_ATTEMPTS=1

# --- any OpenAI-compatible upstream -------------------------------------------------
OPENAI_COMPAT_BASE_URL=
OPENAI_COMPAT_API_KEY=
# Comma separated; empty: read from the upstream's /models at start.
OPENAI_COMPAT_MODELS=
OPENAI_COMPAT_EMULATE_TOOLS=false
"""
