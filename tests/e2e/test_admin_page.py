"""The admin web page in a real browser (Debian's Chromium, driven by Playwright) against a running gateway:
sign in with the admin key, see the providers and credentials, disable and enable one, add a key and use it
with the openai SDK, revoke it; names are shown as text, never run; the page cannot be framed."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.harness import GatewayServer
from tests.upstreams import K2ThinkEmulator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODEL = "MBZUAI-IFM/K2-Think-v2"
HOSTILE_NAME = "<img src=x onerror=window.pwned=1>"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which("chromium") and not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.on("dialog", lambda dialog: dialog.accept())  # "Revoke …?" is answered yes
    yield opened
    context.close()


@pytest.fixture
def gateway(k2emu: K2ThinkEmulator, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    return start_gateway(k2think_base_url=k2emu.base_url, k2think_token=k2emu.mint_token())


def sign_in(page: Any, gw: GatewayServer, key: str) -> None:
    page.goto(gw.base_url + "/admin")
    page.fill("#admin-key", key)
    page.click("#signin-form button")


def admin_key(gw: GatewayServer) -> str:
    return str(gw.runtime.admin_keys[0])


def test_the_page_is_served_without_a_key_holds_no_data_and_cannot_be_framed(gateway: GatewayServer) -> None:
    for path in ("/admin", "/admin/", "/admin/ui/admin.js", "/admin/ui/admin.css"):
        response = httpx.get(gateway.base_url + path)
        assert response.status_code == 200, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert admin_key(gateway) not in response.text and gateway.api_key not in response.text
    assert httpx.get(gateway.base_url + "/admin").headers["content-type"].startswith("text/html")
    for path in ("/admin/keys", "/admin/pools", "/admin/usage", "/admin/ui/other.js"):
        assert httpx.get(gateway.base_url + path).status_code == 401, path  # the data still takes the admin key
    refused = httpx.get(gateway.base_url + "/admin/keys", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert refused.status_code == 401  # a client key does not open it either
    unknown = httpx.get(gateway.base_url + "/admin/ui/other.js", headers={"Authorization": f"Bearer {admin_key(gateway)}"})
    assert unknown.status_code == 404 and unknown.json() == {"status": "error", "message": "Unknown admin route: GET /admin/ui/other.js"}


def test_a_wrong_key_is_refused_and_a_client_key_opens_nothing(page: Any, gateway: GatewayServer) -> None:
    sign_in(page, gateway, "sk-not-the-admin-key")
    sync_api.expect(page.locator("#signin-error")).to_contain_text("Invalid admin key")
    assert page.locator("#console").is_hidden()
    sign_in(page, gateway, gateway.api_key)
    sync_api.expect(page.locator("#signin-error")).to_contain_text("a client key does not open them")
    assert page.evaluate("sessionStorage.length") == 0  # a refused key is not kept


def test_credentials_are_shown_and_one_is_disabled_and_enabled_from_the_page(page: Any, gateway: GatewayServer) -> None:
    sign_in(page, gateway, admin_key(gateway))
    providers = page.locator("#providers tbody")
    sync_api.expect(providers).to_contain_text("k2think")
    sync_api.expect(providers).to_contain_text(MODEL)
    row = page.locator("#pools table[data-provider=k2think] tbody tr").first
    sync_api.expect(row.locator(".state")).to_have_text("active")
    row.get_by_role("button", name="Disable").click()
    sync_api.expect(row.locator(".state")).to_have_text("disabled")
    with pytest.raises(openai.APIStatusError):  # the only credential is off: nothing can answer
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    row.get_by_role("button", name="Enable").click()
    sync_api.expect(row.locator(".state")).to_have_text("active")
    assert gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]).choices
    assert not page.errors


def test_a_key_added_on_the_page_works_counts_its_usage_and_ends_when_revoked(page: Any, gateway: GatewayServer) -> None:
    sign_in(page, gateway, admin_key(gateway))
    form = page.locator("#add-key")
    form.locator("input[name=name]").fill("ci")
    form.locator("input[name=models]").fill("MBZUAI*")
    form.locator("input[name=requests_per_minute]").fill("30")
    form.get_by_role("button", name="Add key").click()
    new_key = page.locator("#new-key-value")
    sync_api.expect(new_key).to_contain_text("sk-cb-")
    key = new_key.inner_text()
    row = page.locator("#keys tr[data-key=ci]")
    sync_api.expect(row).to_contain_text("30/min")
    sync_api.expect(row).to_contain_text("MBZUAI*")
    assert key not in row.inner_text()  # listed masked

    client = gateway.openai(api_key=key)
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]).choices
    page.click("#refresh")
    sync_api.expect(page.locator("#usage tbody")).to_contain_text("ci")

    row.get_by_role("button", name="Revoke").click()
    sync_api.expect(page.locator("#keys tr[data-key=ci]")).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert not page.errors


def test_names_from_the_store_are_shown_as_text_never_run(page: Any, gateway: GatewayServer) -> None:
    added = httpx.post(gateway.base_url + "/admin/keys", json={"name": HOSTILE_NAME},
                       headers={"Authorization": f"Bearer {admin_key(gateway)}"})
    assert added.status_code == 201, added.text
    sign_in(page, gateway, admin_key(gateway))
    sync_api.expect(page.locator("#keys tbody")).to_contain_text(HOSTILE_NAME)
    assert page.locator("#keys img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_signing_out_forgets_the_key_and_a_reload_keeps_the_tab_signed_in(page: Any, gateway: GatewayServer) -> None:
    sign_in(page, gateway, admin_key(gateway))
    sync_api.expect(page.locator("#console")).to_be_visible()
    page.reload()
    sync_api.expect(page.locator("#console")).to_be_visible()  # the tab keeps it (sessionStorage)
    page.click("#signout")
    sync_api.expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    sync_api.expect(page.locator("#signin")).to_be_visible()
