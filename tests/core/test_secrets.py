from __future__ import annotations

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret, mask, redact, redact_headers

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6ImFiYyIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_secret_never_prints_its_value() -> None:
    secret = Secret(TOKEN)
    for shown in (str(secret), repr(secret), f"{secret}", repr([secret]), repr(Credential("id1", secret, "k2think"))):
        assert TOKEN not in shown
    assert secret.reveal() == TOKEN
    assert mask(TOKEN) == TOKEN[:6] + "…" + TOKEN[-4:]


def test_redact_free_text_and_headers() -> None:
    text = f"upstream said: invalid token {TOKEN}; Bearer sk-abcdefghijklmnopqrstuvwxyz; http://user:pw@proxy:8080"
    cleaned = redact(text)
    assert TOKEN not in cleaned and "sk-abcdefghijklmnopqrstuvwxyz" not in cleaned and "pw@" not in cleaned
    headers = redact_headers({"Authorization": f"Bearer {TOKEN}", "Cookie": f"token={TOKEN}", "Accept": "x"})
    assert TOKEN not in str(headers) and headers["Accept"] == "x"
