"""The injected prompt: every tool detail present, the call format, tool_choice, custom templates."""

from __future__ import annotations

import json

from chatbridge.core.types import ToolChoice, ToolSpec
from chatbridge.features.tools import DEFAULT_TEMPLATE, build_tool_prompt, parse_reply
from chatbridge.features.tools.prompt import (
    corrective_message,
    disabled_prompt,
    repair_message,
)
from tests.features.tools.helpers import CORPUS_MARKER, TOOLS

M = CORPUS_MARKER
NESTED = ToolSpec(
    name="deploy",
    description="Deploy a service.\nUse with care.",
    parameters={
        "type": "object",
        "properties": {
            "env": {"type": "string", "enum": ["staging", "prod"], "default": "staging"},
            "replicas": {"type": ["integer", "null"], "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "config": {"type": "object", "properties": {"image": {"type": "string", "pattern": "^[a-z]+:"}}},
        },
        "required": ["env", "config"],
    },
)


def _prompt(**kw: object) -> str:
    return build_tool_prompt([*TOOLS, NESTED], kw.pop("choice", ToolChoice()), M, **kw)  # type: ignore[arg-type]


def test_every_tool_detail_is_in_the_prompt() -> None:
    prompt = _prompt()
    for tool in [*TOOLS, NESTED]:
        assert f"## {tool.name}" in prompt
        assert tool.description.strip() in prompt
        assert json.dumps(tool.parameters, ensure_ascii=False) in prompt  # the exact schema
        for name in tool.parameters.get("properties", {}):
            assert f"- {name} (" in prompt
    assert "- city (string, required): City name, e.g. Paris." in prompt
    assert '- unit (string, optional): Temperature unit. Allowed values: "c", "f". Default: "c".' in prompt
    assert '- env (string, required): Allowed values: "staging", "prod". Default: "staging".' in prompt
    assert "- replicas (integer or null, optional)" in prompt
    assert "- tags (array of string, optional)" in prompt
    assert '"pattern": "^[a-z]+:"' in prompt
    assert "Parameters: none." in build_tool_prompt([ToolSpec("ping")], ToolChoice(), M)


def test_the_call_format_uses_the_request_marker_and_parses_back() -> None:
    prompt = _prompt()
    assert M.open_tag in prompt and M.close_tag in prompt
    assert "one block per call" in prompt
    example = prompt[prompt.index(M.open_tag) : prompt.index(M.close_tag) + len(M.close_tag)]
    assert parse_reply(example, M).calls[0].name == "TOOL_NAME"


def test_tool_choice_and_parallel_instructions() -> None:
    assert "answer normally" in _prompt()
    assert "must call at least one tool" in _prompt(choice=ToolChoice(mode="required"))
    assert "must call the tool 'deploy'" in _prompt(choice=ToolChoice(mode="function", name="deploy"))
    single = _prompt(parallel=False)
    assert "at most one tool per reply" in single
    assert "one block per call" not in single


def test_custom_template_placeholders() -> None:
    template = 'Tools:\n{tool_list}\n---\n{call_format}\nExample JSON: {"keep": "braces"}'
    prompt = _prompt(template=template)
    assert prompt.startswith("Tools:\n## get_weather")
    assert M.open_tag in prompt
    assert 'Example JSON: {"keep": "braces"}' in prompt
    assert "{tool_list}" not in prompt and "{call_format}" not in prompt


def test_custom_template_aliases_of_the_original_tools() -> None:
    prompt = _prompt(template="Call with {trigger_signal} JSON {close_tag}. Tools: {tools_list}")
    assert f"Call with {M.open_tag} JSON {M.close_tag}. Tools: ## get_weather" in prompt


def test_custom_template_without_placeholders_gets_list_and_format_appended() -> None:
    prompt = _prompt(template="You are a helpful agent.")
    assert prompt.startswith("You are a helpful agent.")
    assert "## search" in prompt
    assert M.open_tag in prompt
    assert "{tool_list}" in DEFAULT_TEMPLATE and "{call_format}" in DEFAULT_TEMPLATE


def test_disabled_prompt_offers_no_tool() -> None:
    prompt = disabled_prompt(M)
    assert "disabled" in prompt
    assert "get_weather" not in prompt
    assert M.result_close in prompt


def test_followup_messages_name_the_target_and_the_errors() -> None:
    assert "the tool 'search'" in corrective_message(ToolChoice(mode="function", name="search"), M)
    assert "a tool" in corrective_message(ToolChoice(mode="required"), M)
    text = repair_message(["call 1 (search): arguments: 'query' is a required property"], M)
    assert "- call 1 (search): arguments: 'query' is a required property" in text
    assert M.open_tag in text


def test_optional_parameters_written_as_any_of_get_their_types() -> None:
    tool = ToolSpec(
        "lookup",
        parameters={
            "type": "object",
            "properties": {
                "when": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "description": "A date."},
                "ids": {"oneOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "integer"}]},
                "place": {"$ref": "#/$defs/Place"},
            },
            "required": ["when", "ids", "place"],
        },
    )
    prompt = build_tool_prompt([tool], ToolChoice(), M)
    assert "- when (string or null, required): A date. Default: null." in prompt
    assert "- ids (array of integer or integer, required)" in prompt
    assert "- place (any, required)" in prompt
