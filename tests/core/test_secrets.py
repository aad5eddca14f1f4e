from __future__ import annotations

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import MIN_SECRET_LENGTH, Secret, SecretRegistry, mask, redact, redact_headers

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


# --- redaction by value ---------------------------------------------------------------------------

def test_a_registered_value_is_masked_wherever_it_appears() -> None:
    registry = SecretRegistry()
    key, password = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCD", "hunter2hunter2"
    registry.register(key)
    registry.register(password)
    text = f"Incorrect API key provided: {key}.{key}; password {password}!"
    cleaned = registry.redact(text)
    assert key not in cleaned and password not in cleaned
    assert cleaned == f"Incorrect API key provided: {key[:6]}…{key[-4:]}.{key[:6]}…{key[-4:]}; password ********!"


def test_short_values_are_not_registered() -> None:
    registry = SecretRegistry()
    registry.register("abc")
    registry.register(" " * 20)
    registry.register("x" * (MIN_SECRET_LENGTH - 1))
    assert len(registry) == 0 and registry.redact("abc xxxxxxx") == "abc xxxxxxx"


def test_the_longest_registered_value_wins_and_near_misses_stay() -> None:
    registry = SecretRegistry()
    for value in ("key-one-0123", "key-two-4567", "key-one-0123,key-two-4567"):
        registry.register(value)
    assert registry.redact("VALID_API_KEY=key-one-0123,key-two-4567") == "VALID_API_KEY=********"
    assert registry.redact("key-one-012 key-one-0123x key-two-456") == "key-one-012 ********x key-two-456"


def test_a_value_registered_later_is_masked_from_then_on() -> None:
    registry = SecretRegistry()
    registry.register("first-secret-value")
    assert registry.redact("second-secret-value") == "second-secret-value"
    registry.register("second-secret-value")
    assert registry.redact("first-secret-value second-secret-value") == "******** ********"


def test_thousands_of_tokens_sharing_a_prefix_cost_little_per_line() -> None:
    import time

    registry = SecretRegistry()
    tokens = [f"{TOKEN[:40]}{i:06d}{TOKEN[40:]}" for i in range(5000)]
    for token in tokens:
        registry.register(token)
    started = time.perf_counter()
    registry.redact("warm up")
    built = time.perf_counter() - started
    line = f"INFO chatbridge.pool: upstream said the token {tokens[4321]} expired; eyJhbGciOi is not one"
    started = time.perf_counter()
    for _ in range(1000):
        cleaned = registry.redact(line)
    per_line = (time.perf_counter() - started) / 1000
    assert tokens[4321] not in cleaned and "eyJhbGciOi is not one" in cleaned
    print(f"index of 5,000 tokens built in {built * 1000:.1f} ms; {per_line * 1e6:.1f} us a line")
    assert built < 1.0 and per_line < 0.001, (built, per_line)


def test_secrets_wrapped_in_secret_are_redacted_by_value() -> None:
    password = "correct-horse-battery-staple"
    Secret(password)
    assert password not in redact(f"sign-in refused for password {password}")
