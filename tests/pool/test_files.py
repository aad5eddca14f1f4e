"""Tokens file replacement, temp cleanup and change detection; the accounts file parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatbridge.pool.accounts import mask_email, parse_accounts_text
from chatbridge.pool.sources import read_tokens_file
from chatbridge.pool.tokens_file import (
    TokensFileError,
    backup_path,
    cleanup_temp_files,
    exclusive_lock,
    replace_tokens_file,
    signature,
)


def test_replace_writes_backup_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("old-token-1\nold-token-2\n")
    replace_tokens_file(path, ["new-a", "new-b", "new-a"])
    assert read_tokens_file(path) == ["new-a", "new-b"]
    assert read_tokens_file(backup_path(path)) == ["old-token-1", "old-token-2"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_empty_replacement_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("keep-me\n")
    with pytest.raises(TokensFileError, match="empty"):
        replace_tokens_file(path, [])
    assert path.read_text() == "keep-me\n" and not backup_path(path).exists()


def test_a_write_that_dies_half_way_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("keep-me\n")
    backup_path(path).write_text("older\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(TokensFileError, match="No space left"):
        replace_tokens_file(path, ["t1", "t2"])
    assert path.read_text() == "keep-me\n" and backup_path(path).read_text() == "older\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.txt", "tokens.txt.backup"]


def test_leftover_temp_files_are_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("t\n")
    leftovers = [tmp_path / ".tokens.txt.abc123.tmp", tmp_path / "tokens.txt.tmp", tmp_path / ".tokens.txt.backup.x.tmp"]
    for leftover in leftovers:
        leftover.write_text("partial")
    unrelated = tmp_path / "other.tmp"
    unrelated.write_text("x")
    assert sorted(cleanup_temp_files(path)) == sorted(leftovers)
    assert unrelated.exists() and path.exists()


def test_signature_changes_on_edit_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    assert signature(path) is None
    path.write_text("a\n")
    first = signature(path)
    path.write_text("a\nb\n")
    assert signature(path) != first
    second = signature(path)
    replace_tokens_file(path, ["a", "b"])
    assert signature(path) != second


def test_exclusive_lock_is_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    with exclusive_lock(path) as first:
        assert first
        with exclusive_lock(path) as second:
            assert not second
    with exclusive_lock(path) as again:
        assert again


def test_accounts_parsing_reports_lines_and_never_passwords() -> None:
    text = "\n".join([
        '{"email": "alice@example.com", "password": "pw-alice-secret"}',
        "# a comment",
        '{"email": "bob@example.com", "k2_password": "pw-bob-secret"}',
        '{"email": "carol@example.com"}',
        "not json pw-dave-secret",
        '{"email": "ALICE@example.com", "password": "pw-alice-2"}',
        '["list"]',
        "",
    ])
    parsed = parse_accounts_text(text)
    assert [a.email for a in parsed.accounts] == ["alice@example.com", "bob@example.com"]
    assert parsed.accounts[1].password.reveal() == "pw-bob-secret"
    assert [p.split(":")[0] for p in parsed.problems] == ["line 4", "line 5", "line 6", "line 7"]
    rendered = repr(parsed) + " ".join(parsed.problems)
    assert "pw-" not in rendered and "alice@example.com" not in rendered


def test_mask_email() -> None:
    assert mask_email("alice@example.com") == "al***@example.com"
    assert mask_email("x") == "x***"
