"""The stand-in's request models (infra/standin/types.py): what they accept, and the one sentence a bad body gets."""

from __future__ import annotations

import pytest

from infra.standin.body import parse
from infra.standin.errors import ApiError
from infra.standin.models.sampling import SamplingOptions
from infra.standin.types import ChatCompletionRequest, ChatRequest, EmbeddingRequest, EmbedRequest, GenerateRequest

USER = [{"role": "user", "content": "hi"}]


def test_extra_fields_are_allowed_and_null_means_not_sent():
    req = parse(ChatRequest, {"model": "m", "messages": USER, "stream": None, "options": None, "mirostat": 1})
    assert req.stream is True and req.options.temperature is None and req.keep_alive is None
    assert req.message_dicts() == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "keep_alive, seconds", [(0, 0.0), ("0", 0.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1s", -1.0), (2.5, 2.5)]
)
def test_keep_alive_takes_seconds_or_a_go_duration(keep_alive, seconds):
    assert parse(ChatRequest, {"model": "m", "keep_alive": keep_alive}).keep_alive == seconds


def test_options_become_sampling_options_with_ollamas_defaults():
    req = parse(GenerateRequest, {"model": "m", "options": {"temperature": 0, "seed": 7.0, "stop": "x", "top_k": 3}})
    o = SamplingOptions.from_options(req.options)
    assert (o.temperature, o.seed, o.stop, o.top_k, o.top_p, o.num_ctx) == (0.0, 7, ["x"], 3, 0.9, 4096)


@pytest.mark.parametrize(
    "kind, body, sentence",
    [
        (
            ChatRequest,
            {"model": "m", "stream": "false"},
            "'stream' must be true or false (a JSON boolean), got \"false\"",
        ),
        (ChatRequest, {"model": "m", "options": {"seed": True}}, "options.seed must be an integer, got true"),
        (ChatRequest, {"model": "m", "options": {"num_ctx": 8}}, "options.num_ctx must be at least 64, got 8"),
        (ChatRequest, {"model": "m", "messages": [{"content": "a"}]}, "messages[0].role is required"),
        (ChatRequest, {"model": "m", "keep_alive": "soon"}, "'keep_alive' is not a duration"),
        (ChatRequest, {"model": "m", "top_logprobs": 21}, "'top_logprobs' must be at most 20, got 21"),
        (ChatRequest, {"model": 5}, "model is required"),
        (
            ChatRequest,
            {"model": "m", "tools": [{"function": {"name": "f"}}, {"function": {"name": "f"}}]},
            "tools[1]: the tool name 'f' is declared twice",
        ),
        (EmbedRequest, {"model": "m", "input": [1]}, "'input' must be a string or a list of strings, got [1]"),
        (EmbeddingRequest, {"model": "m", "input": []}, "'input' must be a string or a non-empty list of strings"),
        (
            ChatCompletionRequest,
            {"model": "m", "messages": USER, "response_format": {"type": "xml"}},
            "response_format.type must be 'text', 'json_object' or 'json_schema', got \"xml\"",
        ),
    ],
)
def test_a_bad_body_is_a_400_in_one_sentence(kind, body, sentence):
    with pytest.raises(ApiError) as err:
        parse(kind, body)
    assert err.value.status == 400 and err.value.message.startswith(sentence)
    assert "\n" not in err.value.message and "pydantic" not in err.value.message
