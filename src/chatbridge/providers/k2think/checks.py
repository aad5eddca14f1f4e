"""What `chatbridge check-config` says about K2Think: tokens, the tokens file, accounts and the mode."""

from __future__ import annotations

from pathlib import Path

from chatbridge.core.findings import Finding
from chatbridge.pool.diagnostics import accounts_file_findings, token_findings, tokens_file_findings
from chatbridge.providers.k2think.settings import K2ThinkSettings

EXAMPLE_ENV = """\
# --- K2Think ------------------------------------------------------------------------
K2THINK_ENABLED=true
K2THINK_BASE_URL=https://www.k2think.ai
K2THINK_UPSTREAM_MODEL=MBZUAI-IFM/K2-Think-v2
# One token (JWT) for a single account.
K2THINK_TOKEN=
# One token a line; blank lines and # comments are ignored. Edits are picked up without a restart.
# TOKENS_FILE=./data/tokens.txt
# With none of K2THINK_TOKEN, TOKENS_FILE or ACCOUNTS_FILE, K2Think runs in guest mode.

# --- K2Think: refresh from accounts ---------------------------------------------------
# One JSON object a line: {"email": "me@example.com", "password": "..."}
# ("k2_password" is accepted too). Keep it chmod 600.
# ACCOUNTS_FILE=./data/accounts.txt
# Sign the accounts in on a schedule, when the tokens file is empty, after an auth failure,
# after two consecutive failures, and when the pool is exhausted. Writes TOKENS_FILE
# (or DATA_DIR/k2think-tokens.txt) atomically, keeping the old one as .backup.
ENABLE_TOKEN_AUTO_UPDATE=false
TOKEN_UPDATE_INTERVAL=86400
SIGNIN_CONCURRENCY=4
SIGNIN_ATTEMPTS=3
SIGNIN_RETRY_BACKOFF=1
"""


def k2think_findings(section: K2ThinkSettings, data_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    auto = section.enable_token_auto_update
    if section.token is not None:
        findings += token_findings("K2THINK_TOKEN", [section.token], fatal_if_all_bad=False)
    if section.tokens_file is not None:
        findings += tokens_file_findings(section.tokens_file, refreshable=section.auto_update)
    if section.accounts_file is not None:
        findings += accounts_file_findings(section.accounts_file)
        if not auto:
            findings.append(Finding("warning", "ACCOUNTS_FILE", "is only used by `chatbridge accounts login` while ENABLE_TOKEN_AUTO_UPDATE is false",
                                    "set ENABLE_TOKEN_AUTO_UPDATE=true to refresh tokens from it automatically"))
    elif auto:
        findings.append(Finding("error", "ENABLE_TOKEN_AUTO_UPDATE", "is true but no ACCOUNTS_FILE is set, so there is nothing to sign in with",
                                'set ACCOUNTS_FILE to a file of {"email": ..., "password": ...} lines'))
    if auto and section.token_update_interval < 300:
        findings.append(Finding("warning", "TOKEN_UPDATE_INTERVAL", f"{section.token_update_interval:g} s signs every account in very often",
                                "use at least 3600 (the default is 86400)"))
    mode = ("guest mode (no account; set K2THINK_TOKEN, TOKENS_FILE, or ACCOUNTS_FILE with ENABLE_TOKEN_AUTO_UPDATE=true "
            "for token mode)") if section.is_guest(data_dir) else "token mode"
    findings.append(Finding("ok", "K2Think", mode))
    return findings
