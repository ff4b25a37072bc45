"""Request keys, semantic scopes and embedded text of chat-completions requests."""

from __future__ import annotations

import math

import pytest

from semcache.errors import InvalidInputError, SerializationError
from semcache.keys import (
    EXCLUDED_PARAMS,
    analyze_request,
    embed_text,
    request_key,
    semantic_scope,
)


def base_request(**overrides):
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    }
    request.update(overrides)
    return request


# Every generation parameter, with a value different from "not given".
GENERATION_PARAMS = {
    "temperature": 0.2,
    "max_tokens": 50,
    "max_completion_tokens": 60,
    "top_p": 0.9,
    "n": 2,
    "stop": ["\n"],
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 3,
    "seed": 7,
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "functions": [{"name": "f", "parameters": {}}],
    "function_call": "auto",
    "reasoning_effort": "low",
    "modalities": ["text"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "Paris"},
    "verbosity": "low",
    "web_search_options": {},
    "service_tier": "flex",
    "extra_body": {"top_k": 5},
    "some_future_param": 1,
}


def test_key_is_32_bytes_and_deterministic():
    key = request_key(base_request())
    assert isinstance(key, bytes) and len(key) == 32
    assert request_key(base_request()) == key


@pytest.mark.parametrize("name", sorted(EXCLUDED_PARAMS))
def test_excluded_params_do_not_change_key_or_scope(name):
    value = {"stream": True, "stream_options": {"include_usage": True}}.get(name, "x")
    with_param = base_request(**{name: value})
    assert request_key(with_param) == request_key(base_request())
    assert semantic_scope(with_param) == semantic_scope(base_request())


def test_transport_options_are_excluded():
    noisy = base_request(
        stream=True,
        timeout=30,
        metadata={"trace": "1"},
        user="u-1",
        extra_headers={"X-Trace": "abc"},
        extra_query={"api-version": "2024"},
        semcache={"ttl": 5},
    )
    assert request_key(noisy) == request_key(base_request())


@pytest.mark.parametrize("name", sorted(GENERATION_PARAMS))
def test_every_generation_param_changes_key_and_scope(name):
    changed = base_request(**{name: GENERATION_PARAMS[name]})
    assert request_key(changed) != request_key(base_request())
    assert semantic_scope(changed) != semantic_scope(base_request())


@pytest.mark.parametrize("name", ["temperature", "seed", "top_p", "max_tokens"])
def test_param_values_matter(name):
    a = base_request(**{name: 1})
    b = base_request(**{name: 0.5})
    assert request_key(a) != request_key(b)


def test_model_and_messages_change_key():
    assert request_key(base_request(model="gpt-4o")) != request_key(base_request())
    other = base_request()
    other["messages"][1]["content"] = "What is the capital of Spain?"
    assert request_key(other) != request_key(base_request())


def test_canonical_form_ignores_dict_order_and_equivalent_numbers():
    a = base_request(temperature=1, response_format={"type": "json_schema", "strict": True})
    b = base_request(temperature=1.0, response_format={"strict": True, "type": "json_schema"})
    assert request_key(a) == request_key(b)
    b_reordered = dict(reversed(list(b.items())))
    assert request_key(b_reordered) == request_key(a)


def test_none_and_sdk_sentinels_mean_not_given():
    from openai import NOT_GIVEN, omit

    assert request_key(base_request(temperature=None)) == request_key(base_request())
    assert request_key(base_request(temperature=NOT_GIVEN)) == request_key(base_request())
    assert request_key(base_request(top_p=omit)) == request_key(base_request())


def test_tuples_and_generators_are_lists():
    a = base_request(stop=("a", "b"))
    b = base_request(stop=["a", "b"])
    assert request_key(a) == request_key(b)
    c = base_request()
    c["messages"] = tuple(c["messages"])
    assert request_key(c) == request_key(base_request())


def test_pydantic_messages_equal_plain_dicts():
    from openai.types.chat import ChatCompletionMessage

    model_msg = ChatCompletionMessage(role="assistant", content="Paris.")
    as_model = base_request()
    as_model["messages"] = [*as_model["messages"], model_msg, {"role": "user", "content": "And?"}]
    as_dict = base_request()
    as_dict["messages"] = [
        *as_dict["messages"],
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And?"},
    ]
    assert request_key(as_model) == request_key(as_dict)


def test_unicode_is_hashed_verbatim():
    a = base_request()
    a["messages"][1]["content"] = "Qu'est-ce que l'été ?"
    b = base_request()
    b["messages"][1]["content"] = "Qu'est-ce que l'ete ?"
    assert request_key(a) != request_key(b)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_rejected_naming_the_key(bad):
    with pytest.raises(SerializationError, match="temperature"):
        request_key(base_request(temperature=bad))


def test_unserializable_param_rejected_naming_the_key():
    with pytest.raises(SerializationError, match="tools"):
        request_key(base_request(tools=[{"type": "function", "function": object()}]))
    with pytest.raises(SerializationError, match="logit_bias"):
        request_key(base_request(logit_bias={(1, 2): 3}))
    with pytest.raises(SerializationError, match="extra_body"):
        request_key(base_request(extra_body={"raw": b"bytes"}))
    # SerializationError is a ValueError for callers that do not know semcache
    with pytest.raises(ValueError):
        request_key(base_request(seed={1, 2}))


def test_missing_model_or_messages():
    with pytest.raises(InvalidInputError):
        request_key({"messages": []})
    with pytest.raises(InvalidInputError):
        request_key({"model": "m"})


# -- list-of-parts content ------------------------------------------------------------


def parts_request(parts):
    return {"model": "m", "messages": [{"role": "user", "content": parts}]}


def test_text_parts_are_joined():
    request = parts_request(
        [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this city."}]
    )
    assert embed_text(request) == "Describe\nthis city."


def test_parts_content_key_differs_from_string_content():
    parts = parts_request([{"type": "text", "text": "hello"}])
    plain = parts_request("hello")
    assert request_key(parts) != request_key(plain)


def test_image_parts_make_request_exact_only():
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    request = parts_request([{"type": "text", "text": "What is this?"}, image])
    assert embed_text(request) is None
    other_image = {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}
    other = parts_request([{"type": "text", "text": "What is this?"}, other_image])
    assert request_key(request) != request_key(other)


def test_embed_text_is_last_user_message():
    request = base_request()
    request["messages"] += [
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert embed_text(request) == "And of Italy?"
    assert embed_text(base_request()) == "What is the capital of France?"


def test_embed_text_none_without_user_text():
    assert embed_text({"model": "m", "messages": [{"role": "system", "content": "x"}]}) is None
    assert embed_text(parts_request("   ")) is None


# -- scope ---------------------------------------------------------------------------------


def with_last_user(request, text):
    request = {**request, "messages": [dict(m) for m in request["messages"]]}
    request["messages"][-1]["content"] = text
    return request


def test_scope_ignores_last_user_message():
    a = base_request()
    b = with_last_user(base_request(), "Name the French capital")
    assert semantic_scope(a) == semantic_scope(b)
    assert request_key(a) != request_key(b)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: {**r, "model": "gpt-4o"},
        lambda r: {**r, "temperature": 0.7},
        lambda r: {**r, "tools": [{"type": "function", "function": {"name": "g"}}]},
        lambda r: {
            **r,
            "messages": [{"role": "system", "content": "You are verbose."}, *r["messages"][1:]],
        },
        lambda r: {**r, "messages": r["messages"][1:]},  # no system prompt
        lambda r: {
            **r,
            "messages": [
                *r["messages"][:1],
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                *r["messages"][1:],
            ],
        },
        lambda r: {
            **r,
            "messages": [*r["messages"][:-1], {**r["messages"][-1], "name": "alice"}],
        },
    ],
    ids=["model", "params", "tools", "system", "no-system", "earlier-turns", "user-name"],
)
def test_scope_changes_with_everything_but_last_user_text(change):
    assert semantic_scope(change(base_request())) != semantic_scope(base_request())


def test_scope_is_hex_sha256():
    scope = semantic_scope(base_request())
    assert len(scope) == 64 and int(scope, 16) >= 0


def test_messages_after_last_user_message_are_in_scope():
    request = base_request()
    request["messages"] += [{"role": "assistant", "content": "Let me check."}]
    other = base_request()
    other["messages"] += [{"role": "assistant", "content": "Hmm."}]
    assert semantic_scope(request) != semantic_scope(other)


def test_analyze_request_matches_the_three_functions():
    request = base_request(temperature=0)
    keys = analyze_request(request)
    assert keys.key == request_key(request)
    assert keys.scope == semantic_scope(request)
    assert keys.text == embed_text(request)
