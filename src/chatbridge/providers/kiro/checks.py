"""What `chatbridge check-config` says about Kiro: each login, its expiry and profile, keys and URLs."""

from __future__ import annotations

import glob
import time
from pathlib import Path

from chatbridge.core.findings import Finding
from chatbridge.core.secrets import mask
from chatbridge.providers.kiro.login import read_login
from chatbridge.providers.kiro.refresh import external_idp_problem
from chatbridge.providers.kiro.settings import KiroSettings

EXAMPLE_ENV = """\
# --- Kiro (Claude through a Kiro IDE login) --------------------------------------------
# Enabled by itself when the IDE's login exists at ~/.aws/sso/cache/kiro-auth-token.json.
# KIRO_TOKEN_FILE=~/.aws/sso/cache/kiro-auth-token.json
# More logins, one credential each: comma-separated paths or globs.
# KIRO_TOKEN_FILES=./kiro/*.json
# The original Ki2API's variables (a social login's tokens).
# KIRO_ACCESS_TOKEN=
# KIRO_REFRESH_TOKEN=
# Headless API keys (ksk_...), comma-separated; never refreshed.
# KIRO_API_KEY=
# The CodeWhisperer profile; else from the login, the IDE's profile.json or ListAvailableProfiles.
# KIRO_PROFILE_ARN=
KIRO_REGION=us-east-1
# KIRO_API_BASE=https://runtime.us-east-1.kiro.dev
# KIRO_MANAGEMENT_BASE=https://management.us-east-1.kiro.dev
# KIRO_AUTH_BASE=https://prod.us-east-1.auth.desktop.kiro.dev
# KIRO_OIDC_BASE=https://oidc.us-east-1.amazonaws.com
# Seconds between reads of Kiro's model catalog (0: once); it is read in the background.
KIRO_MODELS_REFRESH=1800
"""


def kiro_findings(section: KiroSettings, data_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    files = [section.token_file] if section.kiro_token_file is not None or section.token_file.is_file() else []
    for pattern in section.token_file_patterns:
        matches = [Path(m) for m in sorted(glob.glob(pattern))] if glob.has_magic(pattern) else [Path(pattern)]
        if not matches:
            findings.append(Finding("warning", "KIRO_TOKEN_FILES", f"{pattern!r} matches no file",
                                    "log in with the IDE and copy its kiro-auth-token.json there, or fix the pattern"))
        files += matches
    for path in dict.fromkeys(files):
        findings += _file_findings(path, section)
    if section.access_token and not section.refresh_token:
        findings.append(Finding("warning", "KIRO_ACCESS_TOKEN", "is set without KIRO_REFRESH_TOKEN, so it stops working when it expires (about an hour)",
                                "set KIRO_REFRESH_TOKEN too (both are in kiro-auth-token.json)"))
    for key in section.api_keys:
        if not key.startswith("ksk_"):
            findings.append(Finding("warning", "KIRO_API_KEY", f"{mask(key)} does not look like a Kiro API key (ksk_...)"))
    if section.kiro_profile_arn is not None and not section.kiro_profile_arn.startswith("arn:"):
        findings.append(Finding("error", "KIRO_PROFILE_ARN", f"{section.kiro_profile_arn!r} is not an ARN",
                                "use the arn:aws:codewhisperer:...:profile/... of the account"))
    count = len(files) + (1 if section.access_token or section.refresh_token else 0) + len(section.api_keys)
    findings.append(Finding("ok", "Kiro", f"{count} credential(s) configured" + ("" if section.has_explicit_credentials
                                                                                    else " (zero configuration: the IDE's login)")))
    return findings


def _file_findings(path: Path, section: KiroSettings) -> list[Finding]:
    subject = str(path)
    if not path.is_file():
        return [Finding("warning", subject, "does not exist yet (picked up when it appears)",
                        "log in to Kiro, or point KIRO_TOKEN_FILE at the login's file")]
    try:
        login = read_login(path)
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("error", subject, f"cannot be read as a Kiro login: {exc}", "log in to Kiro again")]
    findings: list[Finding] = []
    kind = {"social": "social login", "idc": "IdC login", "external_idp": "external identity-provider login"}[login.auth_method]
    if login.auth_method == "idc" and not (login.client_id and login.client_secret):
        findings.append(Finding("error", subject, "is an IdC login but its client registration (<clientIdHash>.json) is missing",
                                "copy the registration file beside it, or log in to Kiro again"))
    if login.auth_method == "external_idp" and (problem := external_idp_problem(login)) is not None:
        findings.append(Finding("error", subject, f"is an external identity-provider login that {problem}, "
                                "so it cannot be refreshed", "log in to Kiro again"))
    if login.client_expires_at is not None and login.client_expires_at < time.time():
        findings.append(Finding("error", subject, "has an IdC client registration that has expired", "log in to Kiro again"))
    if login.expires_at is not None and login.expires_at < time.time():
        if login.refresh_token:
            findings.append(Finding("ok", subject, f"{kind}; its access token has expired and is refreshed at start"))
        else:
            findings.append(Finding("error", subject, "has expired and holds no refresh token", "log in to Kiro again"))
    else:
        findings.append(Finding("ok", subject, f"{kind}" + (", no refresh token" if not login.refresh_token else "")))
    if not (section.kiro_profile_arn or login.profile_arn):
        findings.append(Finding("ok", subject, "names no profileArn; it is read from the IDE's profile.json or asked "
                                               "of ListAvailableProfiles"))
    return findings
