"""Kiro's settings; the names are a contract (the original Ki2API's KIRO_ACCESS_TOKEN / KIRO_REFRESH_TOKEN among them).

Every base URL is configurable, since Kiro has moved hosts before: chat at
`runtime.{region}.kiro.dev` (the older `q.{region}.amazonaws.com` takes the same request), the
model catalog at `management.{region}.kiro.dev`, social refresh at
`prod.{region}.auth.desktop.kiro.dev`, IdC refresh at AWS SSO-OIDC `oidc.{region}.amazonaws.com`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from chatbridge.providers.kiro.endpoints import KiroEndpoints
from chatbridge.providers.settings import ProviderSettings, blank_is_none, http_url

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")

# Where the Kiro IDE writes its login (the same relative path on every OS).
DEFAULT_TOKEN_FILE = Path(".aws") / "sso" / "cache" / "kiro-auth-token.json"


def default_token_file() -> Path:
    """`~/.aws/sso/cache/kiro-auth-token.json`, read from HOME when asked (tests point HOME elsewhere)."""
    return Path.home() / DEFAULT_TOKEN_FILE


class KiroSettings(ProviderSettings):
    kiro_token_file: Path | None = None
    kiro_token_files: str | None = None  # comma-separated paths or globs
    kiro_access_token: SecretStr | None = None
    kiro_refresh_token: SecretStr | None = None
    kiro_api_key: SecretStr | None = None  # `ksk_…`, comma-separated
    kiro_profile_arn: str | None = None
    kiro_region: str = "us-east-1"
    kiro_api_base: str | None = None
    kiro_management_base: str | None = None
    kiro_auth_base: str | None = None
    kiro_oidc_base: str | None = None
    kiro_models_refresh: float = Field(1800.0, ge=0)  # seconds between reads of the model catalog once it was read; 0: once

    _blank = field_validator(
        "kiro_token_file", "kiro_token_files", "kiro_profile_arn", "kiro_api_base", "kiro_management_base",
        "kiro_auth_base", "kiro_oidc_base", mode="before",
    )(blank_is_none)
    _url = field_validator("kiro_api_base", "kiro_management_base", "kiro_auth_base", "kiro_oidc_base")(http_url)

    @field_validator("kiro_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        """A region name (it becomes part of every endpoint's host), e.g. eu-central-1."""
        region = value.strip() or "us-east-1" if isinstance(value, str) else value
        if isinstance(region, str) and not _REGION.fullmatch(region):
            raise ValueError("must be an AWS region name, e.g. us-east-1 or eu-central-1")
        return region

    # -- credentials ----------------------------------------------------------------------------

    @property
    def token_file(self) -> Path:
        """KIRO_TOKEN_FILE, or the IDE's own file under HOME."""
        return self.kiro_token_file.expanduser() if self.kiro_token_file is not None else default_token_file()

    @property
    def token_file_patterns(self) -> list[str]:
        """KIRO_TOKEN_FILES, split on commas, `~` expanded."""
        if not self.kiro_token_files:
            return []
        return [str(Path(p.strip()).expanduser()) for p in self.kiro_token_files.split(",") if p.strip()]

    @property
    def access_token(self) -> str | None:
        return _secret(self.kiro_access_token)

    @property
    def refresh_token(self) -> str | None:
        return _secret(self.kiro_refresh_token)

    @property
    def api_keys(self) -> list[str]:
        value = _secret(self.kiro_api_key) or ""
        return list(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))

    @property
    def has_explicit_credentials(self) -> bool:
        """Anything configured beyond the IDE's default token file."""
        return bool(self.kiro_token_file or self.token_file_patterns or self.access_token or self.refresh_token
                    or self.api_keys)

    @property
    def enabled(self) -> bool:
        """Configured, or the IDE's token file exists (zero configuration)."""
        return self.has_explicit_credentials or self.token_file.is_file()

    # -- endpoints --------------------------------------------------------------------------------

    def endpoints(self) -> KiroEndpoints:
        region = self.kiro_region
        return KiroEndpoints(
            api_base=_base(self.kiro_api_base, f"https://runtime.{region}.kiro.dev"),
            management_base=_base(self.kiro_management_base, f"https://management.{region}.kiro.dev"),
            region=region,
            auth_override=_base(self.kiro_auth_base, "") or None,
            oidc_override=_base(self.kiro_oidc_base, "") or None,
        )


def _secret(value: SecretStr | None) -> str | None:
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def _base(configured: str | None, default: str) -> str:
    return (configured or default).rstrip("/")
