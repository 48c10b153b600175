"""What `skiff serve` makes of a chat completion request (app/server/requests.py): the question,
the history, the route and the options, or a clear ApiError, whatever the body holds."""

from __future__ import annotations

import json

import pytest
from conftest import deterministic
from hypothesis import given
from hypothesis import strategies as st

from skiff.app.server.errors import ApiError
from skiff.app.server.requests import parse_chat_request


def parse(body) -> object:
    return parse_chat_request(body if isinstance(body, bytes) else json.dumps(body).encode(), 512, 1024)


def test_the_last_user_message_is_the_question_and_the_turns_before_it_the_history():
    request = parse({"model": "skiff-cloud", "stream": True, "stream_options": {"include_usage": True},
                     "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "What is a vault?"},
                                  {"role": "assistant", "content": [{"type": "text", "text": "A folder."}]},
                                  {"role": "user", "content": [{"type": "text", "text": "And "},
                                                               {"type": "text", "text": "a canvas?"}]}]})
    assert request.route == "cloud" and request.stream and request.include_usage
    assert request.question == "And a canvas?"
    assert request.history == [{"role": "user", "content": "What is a vault?"},
                               {"role": "assistant", "content": "A folder."}]


def test_a_client_may_lower_the_answer_length_but_not_raise_it():
    asked = {"model": "skiff", "messages": [{"role": "user", "content": "hi"}]}
    assert parse({**asked, "max_tokens": 64, "temperature": 0.3}).overrides == {
        "max_tokens": 64, "cloud_max_tokens": 64, "temperature": 0.3}
    assert parse({**asked, "max_completion_tokens": 5000}).overrides == {"max_tokens": 512, "cloud_max_tokens": 1024}
    assert parse(asked).route is None and parse(asked).overrides == {}


@pytest.mark.parametrize("body, status, param", [
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "stream"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi", "extra": 1}]}, 400, "messages.0.extra"),
    ({"model": "skiff", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, None),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
     400, "response_format"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "skiff-large", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
])
def test_what_skiff_will_not_take_is_named(body, status, param):
    with pytest.raises(ApiError) as refused:
        parse(body)
    assert refused.value.status == status
    if param is not None:
        assert refused.value.param == param
    assert refused.value.body()["error"]["message"]


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=5), max_leaves=20)
_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                                            "content": _json}), max_size=4)


@deterministic(300)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"model": st.sampled_from(["skiff", "skiff-local", "nope"]),
                                        "messages": _messages},
                                       optional={"max_tokens": _json, "stream": _json, "n": _json, "tools": _json,
                                                 "stop": _json, "temperature": _json})
                 .map(lambda v: json.dumps(v).encode())))
def test_any_body_is_a_request_or_an_api_error(body):
    try:
        request = parse(body)
    except ApiError as error:
        assert 400 <= error.status < 500 and error.message
    else:
        assert request.question.strip() and request.model in ("skiff", "skiff-local")
