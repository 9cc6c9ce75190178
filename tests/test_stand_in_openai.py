"""The OpenAI-compatible /v1 API of the stand-in, through the official openai client, with the real models."""

from __future__ import annotations

import json

import httpx
import jsonschema
import numpy as np
import ollama
import openai
import pytest

from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from tests.support.tool_prompts import STATION

USER = [{"role": "user", "content": "Name one colour of the sky."}]


@pytest.fixture(scope="module")
def oa(stand_in) -> openai.OpenAI:
    """The openai client on the stand-in's /v1 (the key is required by the client and ignored by the server)."""
    return openai.OpenAI(base_url=stand_in[0] + "/v1", api_key="ollama", max_retries=0)


def test_chat_whole_and_streamed_give_the_same_text_and_usage(oa):
    whole = oa.chat.completions.create(model=STAND_IN_CHAT_MODEL, messages=USER, max_tokens=12, temperature=0, seed=1)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in {"stop", "length"} and whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens > 10
    chunks = list(
        oa.chat.completions.create(
            model=STAND_IN_CHAT_MODEL,
            messages=USER,
            max_tokens=12,
            temperature=0,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_same_answer_as_the_ollama_api_with_the_same_options(oa, client):
    options = {"temperature": 0, "seed": 3, "num_predict": 10, "top_p": 1.0}
    native = client.chat(model=STAND_IN_CHAT_MODEL, messages=USER, options=options)
    v1 = oa.chat.completions.create(model=STAND_IN_CHAT_MODEL, messages=USER, max_tokens=10, temperature=0, seed=3)
    assert v1.choices[0].message.content == native.message.content
    assert v1.usage.prompt_tokens == native.prompt_eval_count


def test_response_format_json_schema(oa):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}}, "required": ["colour"]}
    r = oa.chat.completions.create(
        model=STAND_IN_CHAT_MODEL,
        messages=USER,
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_tools_call_then_answer(oa):
    messages = [{"role": "user", "content": "Who is the Station Director?"}]
    r = oa.chat.completions.create(model=STAND_IN_CHAT_MODEL, messages=messages, tools=STATION, temperature=0)
    (call,) = r.choices[0].message.tool_calls
    declared = {t["function"]["name"]: t["function"]["parameters"] for t in STATION}
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name in declared
    jsonschema.validate(json.loads(call.function.arguments), declared[call.function.name])
    messages += [
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Station Director: Dr. Maren Ostvold, ext. 201"},
    ]
    answer = oa.chat.completions.create(
        model=STAND_IN_CHAT_MODEL, messages=messages, tools=STATION, temperature=0, max_tokens=40
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


def test_embeddings_are_the_same_vectors_as_api_embed(oa, client):
    texts = ["Where is the muster point?", "Snowmobiles stop above 18 m/s."]
    native = np.array(client.embed(model=EMBED_MODEL, input=texts).embeddings)
    for kwargs in ({}, {"encoding_format": "float"}):  # the openai client asks for base64 unless told otherwise
        r = oa.embeddings.create(model=EMBED_MODEL, input=texts, **kwargs)
        assert np.allclose([d.embedding for d in r.data], native, atol=1e-6) and r.usage.prompt_tokens > 0


def test_models(oa):
    assert {m.id for m in oa.models.list()} == {
        STAND_IN_CHAT_MODEL,
        "all-minilm:latest",
        "multilingual-e5-small:latest",
    }
    assert oa.models.retrieve(STAND_IN_CHAT_MODEL).id == STAND_IN_CHAT_MODEL


def test_errors_in_each_apis_own_shape(oa, client, stand_in):
    with pytest.raises(openai.NotFoundError) as err:
        oa.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert err.value.type == "not_found_error" and STAND_IN_CHAT_MODEL in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(model=STAND_IN_CHAT_MODEL, messages=[])
    assert err.value.type == "invalid_request_error" and "messages" in err.value.message
    with pytest.raises(ollama.ResponseError) as err:  # the same mistake on the Ollama API: its {"error": "..."}
        client.chat(model="gpt-4o-mini", messages=USER)
    assert err.value.status_code == 404 and STAND_IN_CHAT_MODEL in err.value.error
    body = httpx.post(stand_in[0] + "/api/chat", json={"model": "gpt-4o-mini", "messages": USER}).json()
    v1 = httpx.post(stand_in[0] + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER}).json()
    assert isinstance(body["error"], str) and set(v1["error"]) == {"message", "type", "param", "code"}


def test_logprobs_on_both_apis(oa, client):
    options = {"temperature": 0, "num_predict": 4, "repeat_penalty": 1.0}
    r = client.chat(model=STAND_IN_CHAT_MODEL, messages=USER, logprobs=True, top_logprobs=3, options=options)
    assert len(r.logprobs) == r.eval_count and "".join(e.token for e in r.logprobs) == r.message.content
    for e in r.logprobs:  # greedy: the token picked is the most likely one, listed first among 3 alternatives
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token and e.logprob <= 0
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
    g = client.generate(model=STAND_IN_CHAT_MODEL, prompt="Name one colour of the sky.", logprobs=True, options=options)
    assert len(g.logprobs) == g.eval_count and not g.logprobs[0].top_logprobs
    v1 = oa.chat.completions.create(
        model=STAND_IN_CHAT_MODEL, messages=USER, logprobs=True, top_logprobs=2, max_tokens=4, temperature=0
    )
    content = v1.choices[0].logprobs.content
    assert [e.token for e in content] == [e.token for e in r.logprobs] and len(content[0].top_logprobs) == 2
    assert client.chat(model=STAND_IN_CHAT_MODEL, messages=USER, options=options).logprobs is None  # only when asked
