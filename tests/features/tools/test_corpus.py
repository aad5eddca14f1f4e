"""The golden corpus: model outputs and what a client must get from them.

Each case runs through the streaming parser whole, split at every point into two pieces,
char by char and in a few seeded random multi-splits; every run must give the same outputs.
Texts are compared after stripping surrounding whitespace (the whitespace between text and a
call block belongs to the text, exactly as the model wrote it).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbridge.core.types import TextDelta, ToolCallDelta, ToolSpec
from chatbridge.features.tools import (
    ParserOutput,
    ReplyBuilder,
    TextOutput,
    ToolCallParser,
    ToolSettings,
)
from tests.features.tools.helpers import (
    CORPUS_MARKER,
    TOOLS,
    FakeUpstream,
    answer,
    make_request,
    marker_for,
    run_emulator,
)

CORPUS = Path(__file__).parent / "corpus"
CATEGORIES = {
    "marker",
    "fenced_json",
    "inline_json",
    "tool_call_tags",
    "several_calls",
    "nested_json",
    "code_in_arguments",
    "think",
    "prose",
    "truncated",
    "chatter",
    "unicode",
    "malformed",
}


def _load() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8")):
            cases.append((path.stem, case))
    return cases


CASES = _load()
PARAMS = [pytest.param(case, id=f"{category}: {case['name']}") for category, case in CASES]


def _parse(chunks: list[str]) -> list[ParserOutput]:
    parser = ToolCallParser(CORPUS_MARKER)
    outputs: list[ParserOutput] = []
    for chunk in chunks:
        outputs.extend(parser.feed(chunk))
        if not parser.in_call:
            assert parser.held <= parser.max_hold
    outputs.extend(parser.finish())
    return _merge_text(outputs)


def _merge_text(outputs: list[ParserOutput]) -> list[ParserOutput]:
    merged: list[ParserOutput] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if isinstance(output, TextOutput) and isinstance(last, TextOutput):
            merged[-1] = TextOutput(last.text + output.text)
        else:
            merged.append(output)
    return merged


def _splits(text: str) -> Iterator[list[str]]:
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]
    yield list(text)
    for seed in range(3):
        rng = random.Random(seed)
        count = min(len(text) - 1, max(2, len(text) // 6))
        cuts = sorted(rng.sample(range(1, len(text)), count)) if count > 0 else []
        bounds = [0, *cuts, len(text)]
        yield [text[a:b] for a, b in itertools.pairwise(bounds)]


def _raw(output: ParserOutput) -> str:
    return output.text if isinstance(output, TextOutput) else output.raw


def test_corpus_size_and_categories() -> None:
    assert len(CASES) >= 40
    assert {category for category, _ in CASES} == CATEGORIES
    names = [(category, case["name"]) for category, case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", PARAMS)
def test_corpus_expected(case: dict[str, Any]) -> None:
    outputs = _parse([case["output"]])
    builder = ReplyBuilder()
    builder.add(outputs)
    reply, expected = builder.reply, case["expected"]
    assert reply.text.strip() == expected["text"].strip()
    assert [(c.name, json.loads(c.arguments)) for c in reply.calls] == [
        (c["name"], c["arguments"]) for c in expected["calls"]
    ]
    assert all(c.error is None for c in reply.calls)
    assert len(reply.malformed) == expected.get("malformed", 0)
    finish = "length" if reply.truncated else "tool_calls" if reply.calls else "stop"
    assert finish == expected["finish"]
    assert "".join(_raw(o) for o in outputs) == case["output"]  # nothing lost or invented


@pytest.mark.parametrize("case", PARAMS)
def test_corpus_every_split(case: dict[str, Any]) -> None:
    whole = _parse([case["output"]])
    for chunks in _splits(case["output"]):
        assert _parse(chunks) == whole, chunks


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("case", PARAMS)
def test_corpus_through_emulator(case: dict[str, Any], chunk: int) -> None:
    """End to end with repairs off: what the pipeline would aggregate for the client."""
    token = marker_for(0).token  # the emulator below draws its marker from Random(0)
    request = make_request(tools=_tools(case))
    upstream = FakeUpstream(answer(case["output"].replace(CORPUS_MARKER.token, token), chunk=chunk))
    result = run_emulator(request, upstream, ToolSettings(repair_attempts=0), seed=0)
    expected = json.loads(json.dumps(case["expected"]).replace(CORPUS_MARKER.token, token))
    text = case["output"].replace(CORPUS_MARKER.token, token) if expected.get("malformed") else expected["text"]
    assert result.text.strip() == text.strip()
    assert result.parsed_calls == [(c["name"], c["arguments"]) for c in expected["calls"]]
    assert result.finish == expected["finish"]
    assert len(upstream.requests) == 1
    calls_at = [i for i, e in enumerate(result.events) if isinstance(e, ToolCallDelta)]
    if calls_at:  # content only before the calls, as OpenAI streams it
        assert not any(isinstance(e, TextDelta) for e in result.events[calls_at[0] :])


def _tools(case: dict[str, Any]) -> list[ToolSpec]:
    if "tools" not in case:
        return list(TOOLS)
    return [ToolSpec(t["name"], t.get("description", ""), t.get("parameters", {})) for t in case["tools"]]
