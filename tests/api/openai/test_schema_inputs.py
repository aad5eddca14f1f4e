"""Inputs real clients send by mistake: wrong types, huge numbers, bytes that are not UTF-8.

Each must be a 400 naming the field (never a coercion that hides the mistake, never a crash
further down the line), while the variations clients legitimately differ on still pass.
"""

from __future__ import annotations

import pytest

from chatbridge.api.openai.schema import parse_chat_request
from chatbridge.core.errors import InvalidRequest, ModelNotFound

OK = b'"model":"m","messages":[{"role":"user","content":"hi"}]'
HUGE = b"1" + b"0" * 30  # parses to an exact Python int that no JSON encoder upstream accepts


@pytest.mark.parametrize(
    "body,param",
    [
        # wrong types are refused, as OpenAI's API refuses them, not silently coerced
        (b"{" + OK + b',"max_tokens":"5"}', "max_tokens"),
        (b"{" + OK + b',"max_tokens":5.5}', "max_tokens"),
        (b"{" + OK + b',"max_completion_tokens":true}', "max_completion_tokens"),
        (b"{" + OK + b',"temperature":true}', "temperature"),
        (b"{" + OK + b',"top_p":"0.5"}', "top_p"),
        (b"{" + OK + b',"n":"1"}', "n"),
        (b"{" + OK + b',"parallel_tool_calls":"no"}', "parallel_tool_calls"),
        (b"{" + OK + b',"stream":true,"stream_options":{"include_usage":"yes"}}', "stream_options.include_usage"),
        (b'{"model":"m","messages":"hi"}', "messages"),
        (b'{"model":"m","messages":["hi"]}', "messages[0]"),
        (b'{"model":5,"messages":[{"role":"user","content":"hi"}]}', "model"),
        (b'{"model":"m","messages":[{"role":"user","content":5}]}', "messages[0].content"),
        (b'{"model":"m","messages":[{"role":"user","content":null}]}', "messages[0].content"),
        (b'{"model":"m","messages":[{"role":"user","content":[{"type":"audio"}]}]}', "messages[0].content[0]"),
        (b'{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"x"}]}]}',
         "messages[0].content[0].image_url"),
        # numbers too big to re-encode: refused here, naming the field
        (b"{" + OK + b',"max_tokens":' + HUGE + b"}", "max_tokens"),
        (b"{" + OK + b',"temperature":1e400}', "temperature"),
        (b"{" + OK + b',"seed":' + HUGE + b"}", "seed"),
        (b"{" + OK + b',"metadata":{"deep":[1,' + HUGE + b"]}}", "metadata"),
        (b"{" + OK + b',"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object",'
         b'"properties":{"n":{"type":"integer","maximum":' + HUGE + b"}}}}}]}", "tools[0].function.parameters"),
        # not JSON a server can read
        (b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}', None),
        (b"\xef\xbb\xbf{" + OK + b"}", None),
        (b"model=m&messages=hi", None),
        (b"null", None),
        (b'"hi"', None),
        (b"{" + OK + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body)
    assert (caught.value.status, caught.value.param) == (400, param)
    if param:
        assert f"'{param}'" in caught.value.message
    else:
        assert caught.value.code == "invalid_json"


def test_what_clients_legitimately_vary_passes() -> None:
    """Integers for float fields, unknown fields, parts arrays, null assistant content, n=1."""
    request = parse_chat_request(
        b'{"model":"m","temperature":1,"top_p":1,"logprobs":true,"response_format":{"type":"json_object"},'
        b'"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},'
        b'{"role":"assistant","content":null},{"role":"user","content":"c","name":"bob"}],"stream":null,"n":1,'
        b'"max_tokens":2147483647,"seed":9223372036854775807}'
    )
    assert request.temperature == 1.0 and request.top_p == 1.0 and not request.stream
    assert request.max_tokens == 2**31 - 1
    assert request.extra == {"logprobs": True, "seed": 2**63 - 1}
    assert request.response_format is not None and request.response_format.wire == {"type": "json_object"}  # modelled now
    assert request.messages[0].text == "ab" and request.messages[1].content is None


def test_a_huge_unknown_model_id_is_not_echoed_in_full() -> None:
    error = ModelNotFound("x" * 100_000)
    assert len(error.message) < 400 and error.code == "model_not_found" and error.param == "model"
