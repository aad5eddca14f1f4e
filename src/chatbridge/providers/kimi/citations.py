"""Kimi's search citations: markers in the answer become `[n]`, the sources numbered links after it.

With search on, the answer embeds citation markers: private-use characters around
`cite…web_search:N#M:~:text=…` (or `<REF>cite✦tools://<call id>#N:~:text=…</REF>` in agent
scenarios), and `message.refs.searchChunks` frames carry the sources (kimi.md §4.2 and the
corrections). Markers may be split across frames, so `CitationRewriter` holds back text from
a possible marker start until the marker is complete (or proves not to be one), never more than
`MAX_MARKER` characters; a marker becomes `[n]`, `n` the source's number in the list that
follows the answer (by chunk id, else by its index), else its order of appearance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

MAX_MARKER = 1024  # characters held back for one marker at most
_PUA_START, _PUA_END = "\ue000", "\uf8ff"
_REF_OPEN, _REF_CLOSE = "<REF>", "</REF>"
_CANDIDATE = re.compile("[<\ue000-\uf8ff]")


def _is_pua(char: str) -> bool:
    return _PUA_START <= char <= _PUA_END


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    title: str
    url: str
    site: str = ""


@dataclass(slots=True)
class Sources:
    """The search results of one answer, numbered in the order they arrived."""

    items: list[Source] = field(default_factory=list)
    _ids: dict[str, int] = field(default_factory=dict)  # id → 1-based number
    _urls: set[str] = field(default_factory=set)

    def add(self, chunk: object) -> None:
        """One `searchChunks` entry (`{id, base:{title,url,siteName}}`) or web page (`{title,url,siteName}`)."""
        if not isinstance(chunk, dict):
            return
        base = chunk.get("base") if isinstance(chunk.get("base"), dict) else chunk
        assert isinstance(base, dict)
        url = base.get("url")
        if not isinstance(url, str) or not url or url in self._urls:
            return
        title = _string(base.get("title"))
        site = _string(base.get("siteName"))
        chunk_id = chunk.get("id")
        source = Source(str(chunk_id) if isinstance(chunk_id, (str, int)) else "", title or site or url, url, site)
        self.items.append(source)
        self._urls.add(url)
        if source.id:
            self._ids.setdefault(source.id, len(self.items))

    def number(self, reference: str) -> int | None:
        """The number of the source a marker's reference names: by chunk id, else by its last
        number read as a 1-based index; None when it names none of them."""
        if reference in self._ids:
            return self._ids[reference]
        digits = re.findall(r"\d+", reference)
        if not digits:
            return None
        if digits[-1] in self._ids:
            return self._ids[digits[-1]]
        index = int(digits[-1])
        return index if 1 <= index <= len(self.items) else None

    def footnotes(self) -> str:
        """The sources as a numbered markdown list, after the answer ("" when there are none)."""
        if not self.items:
            return ""
        lines = [f"{n}. {_link(s)}" for n, s in enumerate(self.items, start=1)]
        return "\n\nSources:\n" + "\n".join(lines)


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _link(source: Source) -> str:
    title = re.sub(r"([\[\]\\])", r"\\\1", " ".join(source.title.split())) or "source"
    parts = urlsplit(source.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:  # never a javascript: link
        return title
    safe = quote(source.url, safe=":/?#[]@!$&'*+,;=%~-._")
    return f"[{title}]({safe.replace('(', '%28').replace(')', '%29')})"


class CitationRewriter:
    """Streaming: answer text in, the same text with citation markers as `[n]` out."""

    __slots__ = ("_assigned", "_held", "_sources")

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._held = ""
        self._assigned: dict[str, int] = {}  # marker reference → number, when no source matched

    def feed(self, text: str) -> str:
        out: list[str] = []
        data = self._held + text
        self._held = ""
        i = 0
        while i < len(data):
            start = _next_candidate(data, i)
            if start < 0:
                out.append(data[i:])
                break
            out.append(data[i:start])
            end, reference = _marker_at(data, start)
            if end is None:  # not complete yet: hold it (unless it grew too long to be a marker)
                if len(data) - start > MAX_MARKER:
                    out.append("<" if data[start] == "<" else "")
                    i = start + 1
                    continue
                self._held = data[start:]
                break
            if end < 0:  # not a marker after all; a stray private-use character is nobody's text
                if data[start] == "<":
                    out.append("<")
                i = start + 1
                continue
            out.append(self._render(reference))
            i = end
        return "".join(out)

    def flush(self) -> str:
        """At the end of the answer: held text that never became a marker is text after all."""
        held, self._held = self._held, ""
        return "".join(c for c in held if not _is_pua(c))

    def _render(self, reference: str | None) -> str:
        if reference is None:
            return ""
        number = self._sources.number(reference)
        if number is None:
            number = self._assigned.setdefault(reference, len(self._sources.items) + len(self._assigned) + 1)
        return f"[{number}]"


def _next_candidate(data: str, start: int) -> int:
    """Where a marker may begin: a private-use character or `<`; -1 if nowhere."""
    match = _CANDIDATE.search(data, start)
    return match.start() if match else -1


def _marker_at(data: str, start: int) -> tuple[int | None, str | None]:
    """(end, reference) of a marker at `start`; (None, None) while it may still become one; (-1, None) if it is none."""
    return _ref_marker(data, start) if data[start] == "<" else _pua_marker(data, start)


def _pua_marker(data: str, start: int) -> tuple[int | None, str | None]:
    """PUA, `cite`, an optional PUA separator, the body, a closing PUA character."""
    word = data[start + 1 : start + 5]
    if word != "cite":
        return (None, None) if len(word) < 4 and "cite".startswith(word) else (-1, None)
    body = start + 5
    if body < len(data) and _is_pua(data[body]):
        body += 1
    close = next((j for j in range(body, len(data)) if _is_pua(data[j])), -1)
    if close < 0:
        return None, None
    return close + 1, _reference(data[body:close])  # one closing character: the next may open a marker


def _ref_marker(data: str, start: int) -> tuple[int | None, str | None]:
    """`<REF>cite✦tools://<call id>#N:~:text=…</REF>`."""
    wanted = _REF_OPEN + "cite"
    head = data[start : start + len(wanted)]
    if head != wanted:
        return (None, None) if len(head) < len(wanted) and wanted.startswith(head) else (-1, None)
    close = data.find(_REF_CLOSE, start)
    if close < 0:
        return None, None
    return close + len(_REF_CLOSE), _reference(data[start + len(wanted) : close].lstrip("✦"))


def _reference(body: str) -> str | None:
    """What a marker names: `web_search:0#2:~:text=…` → `0#2`; `tools://call_1#3` → `call_1#3`."""
    body = body.split(":~:", 1)[0].strip()
    for scheme in ("web_search:", "tools://"):
        if scheme in body:
            body = body.split(scheme, 1)[1]
    return body or None
