"""Keys, scopes and embedded text of Responses API requests (``responses.create``)."""

from __future__ import annotations

import pytest

from semcache.errors import InvalidInputError, InvalidTypeError
from semcache.keys import EXCLUDED_PARAMS, analyze_request, analyze_responses_request

QUESTION = "What is the capital of France?"


def base(**overrides):
    request = {"model": "gpt-4o-mini", "instructions": "You are terse.", "input": QUESTION}
    request.update(overrides)
    return request


def test_chat_keys_are_unchanged_so_existing_entries_keep_matching():
    # Pinned from the key function before the Responses API was added.
    keys = analyze_request(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": QUESTION},
            ],
            "temperature": 0,
        }
    )
    assert keys.key.hex() == "c127c030934a8235782eeec8d2542b8b81590bb477f78d8a929bf1455639e5bd"
    assert keys.scope == "ec8a8285daa8593bc45b0cdc919ee7070e1930535372d5eacb6ad28825580839"


def test_chat_and_responses_never_share_key_or_scope():
    chat = analyze_request({"model": "m", "messages": [{"role": "user", "content": QUESTION}]})
    responses = analyze_responses_request(
        {"model": "m", "input": [{"role": "user", "content": QUESTION}]}
    )
    assert chat.key != responses.key and chat.scope != responses.scope
    assert chat.text == responses.text == QUESTION


def test_string_input_is_the_user_message_it_stands_for():
    as_text = analyze_responses_request(base())
    as_items = analyze_responses_request(base(input=[{"role": "user", "content": QUESTION}]))
    assert as_text == as_items
    assert as_text.text == QUESTION


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-other"},
        {"instructions": "You are verbose."},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"max_output_tokens": 20},
        {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
        {"tool_choice": "required"},
        {"text": {"format": {"type": "json_object"}}},
        {"reasoning": {"effort": "low"}},
        {"include": ["message.output_text.logprobs"]},
        {"previous_response_id": "resp_123"},
        {"truncation": "auto"},
        {"input": [{"role": "user", "content": "Hi"}, {"role": "user", "content": QUESTION}]},
        {"extra_body": {"top_k": 3}},
    ],
)
def test_every_parameter_and_earlier_input_is_in_key_and_scope(change):
    reference = analyze_responses_request(base())
    changed = analyze_responses_request(base(**change))
    assert changed.key != reference.key
    assert changed.scope != reference.scope


@pytest.mark.parametrize("name", sorted(EXCLUDED_PARAMS))
def test_excluded_params_do_not_change_key_or_scope(name):
    value = {"stream": True, "stream_options": {"include_obfuscation": False}}.get(name, "x")
    assert analyze_responses_request(base(**{name: value})) == analyze_responses_request(base())


def test_scope_ignores_only_the_last_user_text():
    first = analyze_responses_request(base())
    paraphrase = analyze_responses_request(base(input="Which city is the capital of France?"))
    assert first.scope == paraphrase.scope
    assert first.key != paraphrase.key
    assert paraphrase.text == "Which city is the capital of France?"


def test_last_user_message_is_embedded_after_other_items():
    request = base(
        input=[
            {"role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": "Hello"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                             {"type": "input_text", "text": "b"}]},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ]
    )
    assert analyze_responses_request(request).text == "a\nb"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        {"type": "input_file", "file_id": "file-1"},
    ],
)
def test_non_text_input_is_exact_only(part):
    request = base(input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}, part]}])
    assert analyze_responses_request(request).text is None


def test_prompt_template_without_model_or_input_is_exact_only():
    keys = analyze_responses_request({"prompt": {"id": "pmpt_1", "version": "2"}})
    assert keys.text is None and len(keys.key) == 32


@pytest.mark.parametrize(
    "request_, error",
    [
        ({"input": QUESTION}, InvalidInputError),
        ({"model": "m", "input": 7}, InvalidInputError),
        ({"model": "m", "input": ["text"]}, InvalidTypeError),
        ("not a dict", InvalidTypeError),
    ],
)
def test_malformed_requests_rejected(request_, error):
    with pytest.raises(error):
        analyze_responses_request(request_)
