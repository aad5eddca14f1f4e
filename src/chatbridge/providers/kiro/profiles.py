"""Which CodeWhisperer profile a login uses: every request must name it (`profileArn`) since 2026.

In order: KIRO_PROFILE_ARN; the token file's own `profileArn` (social logins); the IDE's
`profile.json` (for the IDE's own login); the refresh answer; and for logins that have none
(IdC, API keys), the service's profile lookup, asked once per credential in every form the
protocol notes list (`LOOKUPS`), the next form tried when one is unknown to the service.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from chatbridge.core.errors import UpstreamStatusError
from chatbridge.providers.kiro.errors import reason_of

# The lookup's forms, in order: REST `POST /ListAvailableProfiles`, then the AWS JSON-RPC targets
# on `POST /` (the 2026 update's name, CP's `tryListProfiles`, and CP's fallback).
REST_LOOKUP = "ListAvailableProfiles"
RPC_TARGETS = ("AmazonCodeWhispererService.ListAvailableProfiles", "AmazonCodeWhispererService.ListProfiles",
               "AmazonCodeWhispererService.ListAvailableCustomizations")
LOOKUPS = (REST_LOOKUP, *RPC_TARGETS)
_PROFILE = Path("User") / "globalStorage" / "kiro.kiroagent" / "profile.json"


def ide_profile_paths(home: Path) -> list[Path]:
    """Where the Kiro IDE keeps the signed-in profile on Linux, macOS and Windows."""
    paths = [home / ".config" / "Kiro" / _PROFILE, home / "Library" / "Application Support" / "Kiro" / _PROFILE,
             home / "Library" / "Application Support" / "kiro" / _PROFILE]
    appdata = os.environ.get("APPDATA")
    if appdata:
        paths.append(Path(appdata) / "Kiro" / _PROFILE)
    return paths


def ide_profile_arn(home: Path) -> str | None:
    """The `arn` of the IDE's `profile.json`, if one is there and readable."""
    for path in ide_profile_paths(home):
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        arn = data.get("arn", data.get("profileArn")) if isinstance(data, dict) else None
        if isinstance(arn, str) and arn.startswith("arn:"):
            return arn
    return None


def first_profile_arn(answer: Any) -> str | None:
    """The first profile of a `ListAvailableProfiles` answer (`profiles[].arn`), any spelling seen."""
    if not isinstance(answer, dict):
        return None
    profiles = answer.get("profiles", answer.get("Profiles"))
    if isinstance(profiles, list):
        for profile in profiles:
            arn = profile.get("arn", profile.get("profileArn")) if isinstance(profile, dict) else None
            if isinstance(arn, str) and arn.startswith("arn:"):
                return arn
    arn = answer.get("profileArn")
    return arn if isinstance(arn, str) and arn.startswith("arn:") else None


def is_unsupported(error: UpstreamStatusError) -> bool:
    """The service does not know this form of the lookup (404/405, or AWS's 400 UnknownOperationException)."""
    if error.status in (404, 405):
        return True
    return error.status == 400 and "unknownoperation" in f"{reason_of(error.body)} {error.body}".lower()
