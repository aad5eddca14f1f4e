"""The tokens file: which account each token is, the user's comments kept, replaced safely with a backup.

The file is one token a line, `#` comments and blank lines ignored, as the original tools wrote
it. A token the gateway signed in for an account is preceded by an annotation, a comment every
other reader ignores::

    # written by chatbridge at 2026-12-01 10:00:00 UTC: 2 token(s), 2 signed in, 0 kept
    # my team's accounts
    # account: alice@example.com
    eyJhbGciOi...
    # account: bob@example.com
    eyJhbGciOi...

So the account ↔ token mapping is written in the same atomic step as the tokens: a crash at any
moment leaves a file whose tokens and accounts agree, and the next refresh knows which old token
an account's new one replaces (no orphans). The user's comments and blank lines stay where they
were; a token that is replaced takes its predecessor's place.

Replacement (`state.files.replace_file`) never leaves a moment without a complete file: the new
content goes to a temporary file in the same folder, is fsynced, checked to hold every token,
the current file is copied to `<name>.backup` (fsynced too), and the temporary file is renamed
over the original, or, when the file is mounted on its own (Docker), written in place from a
journal. Any failure before that leaves the original untouched.

Writers that merge with what is on disk pass the `FileSignature` they read; if the file was
edited in the meantime the replacement is refused (`TokensFileChanged`) so that the writer
can merge again instead of overwriting a hand edit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatbridge.pool.sources import ACCOUNT_NOTE, HEADER_NOTE, TokenEntry, parse_tokens_lines, parse_tokens_text
from chatbridge.state.files import TMP_SUFFIX, lock_path, locked, remove_stale_temp_files, replace_file
from chatbridge.state.files import held_lock as held_file_lock

_LEGACY_TMP = "{name}.tmp"  # what older versions left behind


class _Unset:
    """No expectation about the file on disk (plain replacement)."""


_UNSET = _Unset()


class TokensFileError(Exception):
    """The tokens file could not be written; the previous file is still in place."""


class TokensFileChanged(TokensFileError):
    """The file changed on disk after the writer read it; nothing was written."""


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".backup")


def render_tokens(tokens: Sequence[str | TokenEntry], note: str = "", previous: str = "") -> str:
    """The file for `tokens`, each with its account annotation, around the comments of `previous`."""
    entries = list({e.token: e for e in map(_entry, tokens)}.values())
    header = f"{HEADER_NOTE} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {len(entries)} token(s)" + (f", {note}" if note else "")
    lines = [header, *_merge(previous, entries)]
    return "\n".join(_tidy(lines)) + "\n"


def _entry(token: str | TokenEntry) -> TokenEntry:
    return token if isinstance(token, TokenEntry) else TokenEntry(token)


def _merge(previous: str, entries: list[TokenEntry]) -> list[str]:
    """The previous file's lines with its tokens swapped for `entries`: a kept token stays where it
    was, an account's new token takes its old one's place, a dropped one goes, and the other new
    ones come before the first token and the comment lines right above it (which belong to it);
    comments and blank lines stay."""
    lines = parse_tokens_lines(previous)
    wanted = {e.token: e for e in entries}
    by_account = {e.account.lower(): e for e in entries if e.account}
    places: dict[int, TokenEntry] = {}
    placed: set[TokenEntry] = set()
    for number, line in enumerate(lines):
        if isinstance(line, TokenEntry):
            entry = wanted.get(line.token) or (by_account.get(line.account.lower()) if line.account else None)
            if entry is not None and entry not in placed:
                places[number] = entry
                placed.add(entry)
    others = [line for e in entries if e not in placed for line in _lines_of(e)]
    first = next((n for n, line in enumerate(lines) if isinstance(line, TokenEntry)), len(lines))
    while 0 < first < len(lines) and _is_comment(lines[first - 1]):
        first -= 1
    out: list[str] = []
    for number, line in enumerate(lines):
        if number == first:
            out += others
        if not isinstance(line, TokenEntry):
            out.append(line)
        elif number in places:
            out += _lines_of(places[number])
    return out + (others if first == len(lines) else [])


def _is_comment(line: str | TokenEntry) -> bool:
    return isinstance(line, str) and line.lstrip().startswith("#")


def _lines_of(entry: TokenEntry) -> list[str]:
    return [f"{ACCOUNT_NOTE}{entry.account}", entry.token] if entry.account else [entry.token]


def _tidy(lines: list[str]) -> list[str]:
    """No runs of blank lines, none at the end."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def replace_tokens_file(
    path: Path, tokens: Sequence[str | TokenEntry], note: str = "", *,
    expected: FileSignature | _Unset | None = _UNSET,
) -> bool:
    """Replace `path` with `tokens` (comments kept); raises `TokensFileError`, old file intact.

    With `expected` (the signature read before merging, None for "did not exist"), a file
    edited since then is left alone and `TokensFileChanged` is raised. Returns True when the file
    was rewritten in place (it is mounted on its own). Hold `exclusive_lock(path)` while calling.
    """
    if not tokens:
        raise TokensFileError("refusing to write an empty tokens file")
    previous = _read_previous(path, expected)
    text = render_tokens(tokens, note, previous)
    count = len({_entry(t).token for t in tokens})

    def check(tmp: Path) -> None:
        written = parse_tokens_text(tmp.read_text(encoding="utf-8"))
        if len(written) != count:
            raise TokensFileError(f"temporary file holds {len(written)} token(s), expected {count}")
        if not isinstance(expected, _Unset) and signature(path) != expected:
            raise TokensFileChanged(f"{path.name} was edited while the new tokens were prepared")
        if path.exists():
            _copy_atomically(path, backup_path(path))

    try:
        return replace_file(path, text.encode("utf-8"), check=check)
    except TokensFileError:
        raise
    except OSError as exc:
        raise TokensFileError(f"could not write {path}: {exc.strerror or exc}") from exc


def _read_previous(path: Path, expected: FileSignature | _Unset | None) -> str:
    """The current file's text (for its comments), refusing early when it is not the one expected."""
    before = signature(path)
    if not isinstance(expected, _Unset) and before != expected:
        raise TokensFileChanged(f"{path.name} was edited while the new tokens were prepared")
    if before is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"could not read the current {path.name}: {exc}") from exc


def _copy_atomically(source: Path, target: Path) -> None:
    """The backup is a complete, durable copy before the original is replaced."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(source, tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def cleanup_temp_files(path: Path) -> list[Path]:
    """Remove temporary files a killed replacement left next to `path` (and finish a killed write in
    place); nothing while another process holds the file's lock, since those are its own."""
    return remove_stale_temp_files(path, also=(_LEGACY_TMP.format(name=path.name),))


@dataclass(frozen=True, slots=True)
class FileSignature:
    mtime_ns: int
    size: int
    inode: int


def signature(path: Path) -> FileSignature | None:
    """What changes when the file is edited or replaced; None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return FileSignature(st.st_mtime_ns, st.st_size, st.st_ino)


def has_tokens(path: Path) -> bool:
    try:
        return bool(parse_tokens_text(path.read_text(encoding="utf-8")))
    except OSError:
        return False


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: float = 0.0) -> Iterator[bool]:
    """A cross-process lock next to `path`; yields False if someone else holds it for `wait` seconds.

    Every writer of the tokens file takes it (the gateway's refresh in each worker,
    `chatbridge accounts login`, leftover cleanup), so they never interleave. It is the file's
    writer lock of `state.files`, so leftovers are told from a write in progress by it.
    """
    with locked(lock_path(path), wait) as held:
        yield held


def replace_token_line(path: Path, old: str, new: str) -> None:
    """Put `new` where the line holding `old` is, every other line (comments, order) kept as it was.

    Atomic and durable (`state.files.replace_file`: a temporary file, fsynced, renamed over the
    original, or rewritten in place when the file is a bind mount): a crash leaves the old file
    or the new one. Hold `exclusive_lock(path)` (or `held_lock`) meanwhile; raises
    `TokensFileChanged` if `old` is no longer in the file.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip() == old:
            lines[index] = line.replace(old, new, 1)
            break
    else:
        raise TokensFileChanged(f"{path.name} no longer holds the token that was renewed")
    replace_file(path, "".join(lines).encode("utf-8"))


@contextlib.asynccontextmanager
async def held_lock(path: Path, wait: float) -> AsyncIterator[bool]:
    """`exclusive_lock` for async code that holds it across awaits (a refresh's network call)."""
    async with held_file_lock(lock_path(path), wait) as held:
        yield held

