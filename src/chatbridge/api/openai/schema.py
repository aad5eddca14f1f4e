"""OpenAI chat-completion requests: validation and conversion to `ChatRequest`.

Validation runs in pydantic-core straight from the raw bytes. Unknown top-level fields are
kept (clients add vendor extras through `extra_body`) and passed to upstreams that speak
OpenAI themselves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import Field, StrictBool, StrictFloat, StrictInt, ValidationError, field_validator

from chatbridge.api.client_json import ClientModel
from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import (
    ChatRequest,
    ContentPart,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from chatbridge.features.tools.schemas import schema_problem, tool_problem


class TextPartIn(ClientModel):
    type: Literal["text"]
    text: str


class ImageUrlIn(ClientModel):
    url: str
    detail: str | None = None


class ImagePartIn(ClientModel):
    type: Literal["image_url"]
    image_url: ImageUrlIn


PartIn = Annotated[Union[TextPartIn, ImagePartIn], Field(discriminator="type")]


class FunctionCallIn(ClientModel):
    name: str
    arguments: str = ""


class ToolCallIn(ClientModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(ClientModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[PartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionSpecIn(ClientModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(ClientModel):
    type: Literal["function"] = "function"
    function: FunctionSpecIn


class NamedFunctionIn(ClientModel):
    name: str


class ToolChoiceIn(ClientModel):
    type: Literal["function"]
    function: NamedFunctionIn


class JsonSchemaFormatIn(ClientModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormatIn(ClientModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormatIn | None = None


class StreamOptionsIn(ClientModel):
    include_usage: StrictBool = False


# Upper bound for token counts: bodies go upstream as JSON, whose encoders (orjson, and most
# servers) stop at 64-bit integers; no model has a context anywhere near 2**31 tokens.
_MAX_TOKENS = 2**31 - 1


class ChatCompletionRequestIn(ClientModel):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptionsIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceIn | None = None
    # Numbers and flags are strict, as OpenAI's own API is: "5" or true is not a token count.
    parallel_tool_calls: StrictBool | None = None
    max_tokens: StrictInt | None = Field(None, ge=1, le=_MAX_TOKENS)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=_MAX_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = None
    n: StrictInt | None = Field(None, ge=1, le=1)
    reasoning_effort: str | None = None
    response_format: ResponseFormatIn | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value


_MODELLED = frozenset(ChatCompletionRequestIn.model_fields)


def parse_chat_request(body: bytes, headers: object = None) -> ChatRequest:
    """Validate raw JSON bytes; every problem becomes a 400 naming the field (headers are not needed)."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        parsed = ChatCompletionRequestIn.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return to_chat_request(parsed)


def _invalid(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    error = max(errors, key=lambda e: len(e["loc"]))  # the deepest error names the real field
    if error["type"] == "json_invalid":
        return InvalidRequest(f"The request body is not valid JSON: {error['msg']}", code="invalid_json")
    if error["type"] == "model_type" and not error["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    param = format_loc(error["loc"])
    if error["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param, code="invalid_value")


_UNION_TAGS = frozenset({"text", "image_url"})
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'content', 'list[…]', 1, 'text', 'text') → messages[0].content[1].text.

    Pydantic puts union branch names and discriminator tags into the location; they are
    not fields the client wrote, so they are dropped.
    """
    out = ""
    after_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            after_index = True
            continue
        if "[" in part or part in _TYPE_NAMES or part.endswith("In"):
            continue
        if after_index and part in _UNION_TAGS and loc.count(part) > 1:
            after_index = False
            continue
        after_index = False
        out += f".{part}" if out else part
    return out


def to_chat_request(data: ChatCompletionRequestIn) -> ChatRequest:
    messages = [_message(m, i) for i, m in enumerate(data.messages)]
    tools = [
        ToolSpec(t.function.name, t.function.description or "", t.function.parameters or {}, t.function.strict)
        for t in data.tools or ()
    ]
    _check_tools(tools)
    stop = [data.stop] if isinstance(data.stop, str) else list(data.stop or ())
    extra = {k: v for k, v in (data.model_extra or {}).items() if k not in _MODELLED}
    for key, value in extra.items():
        _check_encodable(value, key)
    for index, tool in enumerate(tools):
        _check_encodable(tool.parameters, f"tools[{index}].function.parameters")
    return ChatRequest(
        model=data.model,
        messages=messages,
        stream=bool(data.stream),
        tools=tools,
        tool_choice=_tool_choice(data.tool_choice, tools),
        parallel_tool_calls=data.parallel_tool_calls is not False,
        max_tokens=data.max_completion_tokens or data.max_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        stop=stop,
        user=data.user,
        include_usage=bool(data.stream and data.stream_options and data.stream_options.include_usage),
        reasoning_effort=data.reasoning_effort,
        response_format=_response_format(data.response_format),
        extra=extra,
    )


def _check_encodable(value: Any, param: str) -> None:
    """Free-form JSON that is forwarded upstream must re-encode; integers past 64 bits do not.

    Python parses `1e30` written as digits into an exact integer that no JSON encoder on the
    way upstream accepts, so it is refused here, naming the field, instead of failing later.
    """
    try:
        orjson.dumps(value)
    except TypeError:
        raise InvalidRequest(
            f"Invalid value for '{param}': integers must fit in 64 bits.", param=param, code="invalid_value"
        ) from None


def _message(m: MessageIn, index: int) -> Message:
    if m.role == "tool" and not m.tool_call_id:
        raise InvalidRequest(
            f"Missing required parameter: 'messages[{index}].tool_call_id'.",
            param=f"messages[{index}].tool_call_id", code="missing_required_parameter",
        )
    if m.content is None and m.role != "assistant":
        raise InvalidRequest(
            f"Missing required parameter: 'messages[{index}].content'.",
            param=f"messages[{index}].content", code="missing_required_parameter",
        )
    content: str | list[ContentPart] | None
    if isinstance(m.content, list):
        content = [
            TextPart(p.text) if isinstance(p, TextPartIn) else ImagePart(p.image_url.url, p.image_url.detail)
            for p in m.content
        ]
    else:
        content = m.content
    return Message(
        role=m.role,
        content=content,
        name=m.name,
        tool_calls=[ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()],
        tool_call_id=m.tool_call_id,
        reasoning_content=m.reasoning_content,
    )


def _check_tools(tools: list[ToolSpec]) -> None:
    """Duplicate names and broken schemas are 400s here, not surprises later."""
    problem = tool_problem(tools) if tools else None
    if problem is not None:
        param = f"tools[{problem.index}].function.{problem.field}"
        raise InvalidRequest(f"Invalid value for '{param}': {problem.message}.", param=param, code="invalid_value")


def _response_format(given: ResponseFormatIn | None) -> ResponseFormat | None:
    """`json_schema` needs its `json_schema`, whose schema is checked like a tool's (400 here, not later)."""
    if given is None:
        return None
    wire = given.model_dump(mode="json", by_alias=True, exclude_none=True)
    _check_encodable(wire, "response_format")
    if given.type != "json_schema":
        return ResponseFormat(given.type, wire=wire)
    spec = given.json_schema
    if spec is None:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema", code="missing_required_parameter",
        )
    param = "response_format.json_schema.schema"
    problem = schema_problem(spec.schema_, root="schema", require_object=False) if spec.schema_ else None
    if problem is not None:
        raise InvalidRequest(f"Invalid value for '{param}': invalid schema '{spec.name}': {problem}.", param=param, code="invalid_value")
    return ResponseFormat("json_schema", spec.schema_, spec.name, spec.description, spec.strict, wire)


def _tool_choice(choice: str | ToolChoiceIn | None, tools: list[ToolSpec]) -> ToolChoice:
    if choice is None:
        return ToolChoice("auto")
    if not tools and (isinstance(choice, ToolChoiceIn) or choice == "required"):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': a tool call cannot be required when no 'tools' are specified.",
            param="tool_choice", code="invalid_value",
        )
    if isinstance(choice, ToolChoiceIn):
        if choice.function.name not in {t.name for t in tools}:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': no tool named '{choice.function.name}' is in 'tools'.",
                param="tool_choice", code="invalid_value",
            )
        return ToolChoice("function", choice.function.name)
    return ToolChoice(choice)  # type: ignore[arg-type]
