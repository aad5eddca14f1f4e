"""Where Kiro's services live: chat, the model catalog, social refresh and IdC refresh."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KiroEndpoints:
    """Base URLs without a trailing slash; refresh hosts follow the login's own region unless set."""

    api_base: str = "https://runtime.us-east-1.kiro.dev"
    management_base: str = "https://management.us-east-1.kiro.dev"
    region: str = "us-east-1"
    auth_override: str | None = None
    oidc_override: str | None = None

    @property
    def chat_url(self) -> str:
        return f"{self.api_base}/generateAssistantResponse"

    @property
    def profiles_url(self) -> str:
        return f"{self.api_base}/ListAvailableProfiles"

    @property
    def models_url(self) -> str:
        return f"{self.management_base}/ListAvailableModels"

    def social_refresh_url(self, region: str | None) -> str:
        base = self.auth_override or f"https://prod.{region or self.region}.auth.desktop.kiro.dev"
        return f"{base.rstrip('/')}/refreshToken"

    def idc_refresh_url(self, region: str | None) -> str:
        base = self.oidc_override or f"https://oidc.{region or self.region}.amazonaws.com"
        return f"{base.rstrip('/')}/token"
