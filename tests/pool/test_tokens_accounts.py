"""The tokens file says whose each token is, so a refresh after any crash replaces instead of piling up.

Also: the user's comments and blank lines survive a refresh, and a file written by an older
version (no annotations, orphans already in it) is cleaned by the next refresh.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
from chatbridge.pool.signin import SignedToken, SignInPolicy
from chatbridge.pool.sources import (
    TokenEntry,
    TokensFileSource,
    jwt_credential,
    parse_tokens_lines,
    read_tokens_entries,
)
from chatbridge.pool.tokens_file import render_tokens, replace_tokens_file
from chatbridge.state import MemoryStore

EMAILS = [f"user{i}@example.com" for i in range(4)]


def jwt(subject: int, serial: int) -> str:
    """A K2Think-shaped JWT: `{"id", "exp"}`; `serial` makes each sign-in's token different."""
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'id': f'user-{subject}', 'exp': 4_000_000_000 + serial})}.sig{serial}"


class SigningUpstream:
    """Each sign-in returns a new JWT for that account's user id."""

    def __init__(self) -> None:
        self.serial = 0

    async def __call__(self, email: str, password: Secret) -> SignedToken:
        self.serial += 1
        return SignedToken(Secret(jwt(EMAILS.index(email), self.serial)))


def lifecycle(tmp_path: Path, upstream: SigningUpstream) -> PoolLifecycle:
    """A fresh process's view: nothing remembered but what is on disk."""
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("".join(f'{{"email": "{e}", "password": "pw-{e}"}}\n' for e in EMAILS))
    settings = RefreshSettings(accounts, tmp_path / "tokens.txt", policy=SignInPolicy(backoff=0, timeout=5))

    def make(token: str, source: str, account: str | None) -> Credential:
        return jwt_credential("p", token, source, account)

    return PoolLifecycle(
        CredentialPool("p"), TokensFileSource(tmp_path / "tokens.txt", make), settings=LifecycleSettings(),
        store=MemoryStore(), refresher_factory=lambda lc: TokenRefresher(settings, upstream, lc.known_tokens, lc.after_refresh),
    )


def refresh_in_a_new_process(tmp_path: Path, upstream: SigningUpstream) -> PoolLifecycle:
    cycle = lifecycle(tmp_path, upstream)

    async def run() -> None:
        cycle.reload()
        assert cycle.refresher is not None
        result = await cycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert result is not None and result.ok, result

    asyncio.run(run())
    return cycle


def test_the_file_names_each_tokens_account_and_the_pool_reads_it(tmp_path: Path) -> None:
    upstream = SigningUpstream()
    refresh_in_a_new_process(tmp_path, upstream)
    entries = read_tokens_entries(tmp_path / "tokens.txt")
    assert [e.account for e in entries] == EMAILS
    text = (tmp_path / "tokens.txt").read_text()
    assert text.count("# account: ") == 4 and text.startswith("# written by chatbridge")
    fresh = lifecycle(tmp_path, upstream)
    fresh.reload()  # a new process, no saved state: the accounts come from the file
    assert sorted(e.credential.account or "" for e in fresh.pool.entries) == EMAILS


def test_refreshes_in_new_processes_replace_tokens_instead_of_adding_orphans(tmp_path: Path) -> None:
    """The old defect: the mapping lived in memory and the state file, so a new process (after a
    kill -9) kept every old token as someone's unknown one: 4 → 8 → 12 ..."""
    upstream = SigningUpstream()
    for _ in range(5):
        refresh_in_a_new_process(tmp_path, upstream)
    entries = read_tokens_entries(tmp_path / "tokens.txt")
    assert len(entries) == 4 and sorted(e.account or "" for e in entries) == EMAILS


def test_orphans_in_a_file_written_without_annotations_are_dropped_by_jwt_subject(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    legacy = [jwt(i, serial) for serial in (-3, -2, -1) for i in range(4)]  # three generations of the same users
    hand_added = jwt(99, 0)  # someone else's token, added by hand
    path.write_text("\n".join([*legacy, hand_added]) + "\n")
    refresh_in_a_new_process(tmp_path, SigningUpstream())
    entries = read_tokens_entries(path)
    assert [e.account for e in entries] == [*EMAILS, None]
    assert entries[-1].token == hand_added and not set(legacy) & {e.token for e in entries}


def test_comments_and_blank_lines_survive_a_refresh(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    manual = jwt(50, 0)
    path.write_text(f"# my tokens, do not share\n\n# from the web UI\n{manual}\n\n\n# the end\n")
    upstream = SigningUpstream()
    refresh_in_a_new_process(tmp_path, upstream)
    first = path.read_text()
    refresh_in_a_new_process(tmp_path, upstream)
    second = path.read_text()
    for text in (first, second):
        lines = text.splitlines()
        assert lines[1:3] == ["# my tokens, do not share", ""] and lines[3] == "# account: user0@example.com"
        assert lines[lines.index(manual) - 1] == "# from the web UI"  # a comment stays with its token
        assert lines[-1] == "# the end" and "\n\n\n" not in text
    assert second.count("# account: ") == 4 and second.count("# the end") == 1


def test_an_accounts_new_token_takes_the_old_ones_place() -> None:
    previous = "# work\n# account: a@example.com\nold-a-token\n# personal\nhand-token\n"
    text = render_tokens([TokenEntry("new-a-token", "a@example.com"), TokenEntry("new-b-token", "b@example.com"),
                          TokenEntry("hand-token")], previous=previous)
    assert text.splitlines()[1:] == ["# account: b@example.com", "new-b-token", "# work", "# account: a@example.com",
                                     "new-a-token", "# personal", "hand-token"]  # new ones above the first's comments
    assert [line.account for line in parse_tokens_lines(text) if isinstance(line, TokenEntry)] == [
        "b@example.com", "a@example.com", None]


def test_an_annotation_not_followed_by_a_token_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# account: gone@example.com\n\nkept-token\n")
    replace_tokens_file(path, ["kept-token"])
    assert "gone@example.com" not in path.read_text()
    assert read_tokens_entries(path) == [TokenEntry("kept-token")]


def test_a_comment_that_only_looks_like_an_annotation_stays_a_comment(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# account: personal, from my browser\n# account: personal\nhand-token\n")
    assert read_tokens_entries(path) == [TokenEntry("hand-token")]
    replace_tokens_file(path, ["hand-token"])
    assert path.read_text().splitlines()[1:] == ["# account: personal, from my browser", "# account: personal", "hand-token"]
