"""What `chatbridge check-config` says about Kimi: the refresh tokens, the tokens file, the URLs and the mode."""

from __future__ import annotations

import os
import time
from pathlib import Path

from chatbridge.core.findings import Finding
from chatbridge.pool.sources import jwt_claims, parse_tokens_text
from chatbridge.providers.kimi.settings import KimiSettings

EXAMPLE_ENV = """\
# --- Kimi (www.kimi.com) --------------------------------------------------------------
KIMI_ENABLED=true
KIMI_BASE_URL=https://www.kimi.com
KIMI_AUTH_URL=https://auth.kimi.com
# Refresh tokens (kimi.com → DevTools → Application → Local Storage → refresh_token), comma-separated.
# They rotate on every refresh: they and their successors are kept in DATA_DIR/kimi-env-tokens.txt.
KIMI_REFRESH_TOKEN=
# Or one refresh token a line; rotated tokens are written back to it (atomically). Preferred.
# KIMI_TOKENS_FILE=./data/kimi-tokens.txt
# With neither, Kimi runs as a guest (a registered device, with Kimi's guest quota).
# Kimi streams one reply per account at a time.
KIMI_MAX_STREAMS_PER_ACCOUNT=1
"""


def kimi_findings(section: KimiSettings) -> list[Finding]:
    findings: list[Finding] = []
    if section.refresh_tokens:
        findings += _token_findings("KIMI_REFRESH_TOKEN", section.refresh_tokens)
    path = section.kimi_tokens_file
    if path is not None:
        findings += _file_findings(path)
    if section.is_guest:
        findings.append(Finding("ok", "Kimi", "guest mode (a registered device, Kimi's guest quota; set KIMI_REFRESH_TOKEN "
                                              "or KIMI_TOKENS_FILE to use an account)"))
    else:
        findings.append(Finding("ok", "Kimi", f"account mode, {section.kimi_max_streams_per_account} stream(s) per account"))
    return findings


def _file_findings(path: Path) -> list[Finding]:
    if not path.exists():
        return [Finding("error", "KIMI_TOKENS_FILE", f"{path} does not exist", "create it with one refresh token a line")]
    try:
        tokens = parse_tokens_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("error", "KIMI_TOKENS_FILE", f"{path} cannot be read: {exc}", "check its permissions and that it is UTF-8 text")]
    findings: list[Finding] = []
    if not tokens:
        findings.append(Finding("error", "KIMI_TOKENS_FILE", f"{path} holds no refresh token", "add one a line"))
    else:
        findings += _token_findings("KIMI_TOKENS_FILE", tokens, where=str(path))
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        findings.append(Finding("error", "KIMI_TOKENS_FILE", f"{path} (or its folder) is not writable: rotated refresh tokens "
                                "cannot be written back, so they are kept in the state store only", "make it writable"))
    if path.stat().st_mode & 0o077:
        findings.append(Finding("warning", "KIMI_TOKENS_FILE", "holds refresh tokens but is readable by other users",
                                f"chmod 600 {path}"))
    return findings


def _token_findings(subject: str, tokens: list[str], where: str = "") -> list[Finding]:
    now = time.time()
    label = f"{where}: " if where else ""
    access, expired = 0, 0
    for token in tokens:
        claims = jwt_claims(token)
        if claims.get("typ") == "access":
            access += 1
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp <= now:
            expired += 1
    findings = [Finding("ok", subject, f"{label}{len(tokens) - access} refresh token(s)")] if access < len(tokens) else []
    if access:
        findings.append(Finding("warning", subject, f"{label}{access} access token(s) (typ: access): each is used as it is "
                                "until its exp and cannot be renewed, so its account stops working then",
                                "put the refresh_token from kimi.com's Local Storage there instead"))
    if expired:
        findings.append(Finding("error" if expired == len(tokens) else "warning", subject,
                                f"{expired} token(s) have expired", "log in to kimi.com again and replace them"))
    return findings
