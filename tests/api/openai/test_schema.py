"""Bad requests get a 400 that names the field, in words a client can act on."""

from __future__ import annotations

import pytest

from chatbridge.api.openai.schema import parse_chat_request
from chatbridge.core.errors import InvalidRequest

OK = b'"model":"m","messages":[{"role":"user","content":"hi"}]'


@pytest.mark.parametrize(
    "body,param",
    [
        (b"{", None),
        (b"[]", None),
        (b"", None),
        (b'{"messages":[{"role":"user","content":"hi"}]}', "model"),
        (b'{"model":"m"}', "messages"),
        (b'{"model":"m","messages":[]}', "messages"),
        (b'{"model":"m","messages":[{"role":"robot","content":"hi"}]}', "messages[0].role"),
        (b'{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}', "messages[0].content[0].text"),
        (b'{"model":"m","messages":[{"role":"user"}]}', "messages[0].content"),
        (b'{"model":"m","messages":[{"role":"tool","content":"r"}]}', "messages[0].tool_call_id"),
        (b"{" + OK + b',"temperature":3}', "temperature"),
        (b"{" + OK + b',"top_p":-1}', "top_p"),
        (b"{" + OK + b',"max_tokens":0}', "max_tokens"),
        (b"{" + OK + b',"stream":"yes"}', "stream"),
        (b"{" + OK + b',"tool_choice":"sometimes"}', "tool_choice"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"bad name"}}]}', "tools[0].function.name"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}}', "tool_choice"),
        (b"{" + OK + b',"n":2}', "n"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}]}', "tools[1].function.name"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"string"}}}]}', "tools[0].function.parameters"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object","properties":{"x":{"type":"strng"}}}}}]}', "tools[0].function.parameters"),
        (b"{" + OK + b',"tool_choice":{"type":"function","function":{"name":"b"}}}', "tool_choice"),
        (b"{" + OK + b',"tool_choice":"required"}', "tool_choice"),
    ],
)
def test_invalid_requests_name_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body)
    assert caught.value.param == param
    assert caught.value.status == 400
    if param:
        assert param in caught.value.message


def test_valid_request_keeps_everything() -> None:
    request = parse_chat_request(
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"stop":"END","seed":3,'
        b'"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"look"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},'
        b'{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},'
        b'{"role":"tool","tool_call_id":"call_1","content":"42"}],"max_completion_tokens":9}'
    )
    assert request.stream and request.include_usage and request.stop == ["END"] and request.max_tokens == 9
    assert request.extra == {"seed": 3}
    assert request.messages[1].has_images and request.messages[2].tool_calls[0].name == "f"
    assert request.messages[3].tool_call_id == "call_1"


@pytest.mark.parametrize("choice", [b'"auto"', b'"none"'])
def test_tool_choice_that_demands_nothing_is_accepted_without_tools(choice: bytes) -> None:
    request = parse_chat_request(b"{" + OK + b',"tool_choice":' + choice + b"}")
    assert request.tools == [] and request.tool_choice.mode == choice.strip(b'"').decode()


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_a_number_that_is_not_finite_is_refused_as_such(field: str, value: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(b"{" + OK + b',"' + field.encode() + b'":' + value + b"}")
    assert caught.value.param == field and "finite number" in caught.value.message
