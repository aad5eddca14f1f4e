"""What check-config says about credential files: tokens files (JWT expiry) and accounts files.

Pure functions from paths and values to `Finding`s; nothing here prints or returns a token,
key or password in full. Providers call them from their own checks.
"""

from __future__ import annotations

import time
from pathlib import Path

from chatbridge.core.findings import Finding, Level
from chatbridge.pool.accounts import read_accounts_file
from chatbridge.pool.sources import jwt_claims, parse_tokens_text


def tokens_file_findings(path: Path, refreshable: bool) -> list[Finding]:
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
    return token_findings("TOKENS_FILE", tokens, fatal_if_all_bad=not refreshable, where=str(path))


def token_findings(subject: str, tokens: list[str], fatal_if_all_bad: bool, where: str = "") -> list[Finding]:
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


def accounts_file_findings(path: Path) -> list[Finding]:
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
