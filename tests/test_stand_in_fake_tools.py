"""The stand-in's tools and its OpenAI-compatible API, with FAKE models (fast tier, no llama.cpp).

The fake chat model calls the first tool it may call (tests/support/fake_standin.py); everything else is real: the
stand-in's own app on a loopback port, reached by the official `ollama` client, httpx and the `openai` client.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import httpx
import numpy as np
import ollama
import pytest

from tests.support.fake_standin import CHAT, EMBED, USER, Record, serve_fake


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Iterator[tuple[str, object, Record]]:
    """(base URL, server, record) of the stand-in's real HTTP server over fake models."""
    with serve_fake(tmp_path_factory.mktemp("fake-models")) as running:
        yield running


@pytest.fixture
def api(fake) -> ollama.Client:
    """The official client on the fake-model stand-in (this module's own, not conftest's real one)."""
    return ollama.Client(host=fake[0])


# ---- tools and the OpenAI-compatible API (the fake model calls the first tool it may call) ------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "look a thing up",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}},
]


def test_a_user_turn_with_tools_gets_a_tool_call_streamed_and_whole(api):
    whole = api.chat(model=CHAT, messages=USER, tools=TOOLS)
    assert whole.message.content == "" and [c.function.name for c in whole.message.tool_calls] == ["lookup"]
    assert whole.message.tool_calls[0].function.arguments == {} and whole.done_reason == "stop"
    parts = list(api.chat(model=CHAT, messages=USER, tools=TOOLS, stream=True))
    assert [p.message.tool_calls[0].function.name for p in parts if p.message.tool_calls] == ["lookup"]
    assert parts[-1].done and not parts[-1].message.tool_calls


def test_a_tool_result_gets_plain_text_that_sees_the_result(fake, api):
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "lookup", "arguments": {}}}]}
    result = {"role": "tool", "content": "RESULT-42", "tool_name": "lookup"}
    r = api.chat(model=CHAT, messages=[*USER, call, result], tools=TOOLS, options={"num_predict": 3})
    assert r.message.content == "w0 w1 w2 " and not r.message.tool_calls
    prompt = fake[2].served[-1]
    assert "RESULT-42" in prompt and "lookup returned" in prompt and "Calling lookup" in prompt


def test_tools_are_in_tags_and_show_capabilities(api):
    caps = {m["model"]: m["capabilities"] for m in httpx.get(api._client.base_url.join("/api/tags")).json()["models"]}
    assert caps == {CHAT: ["completion", "tools"], EMBED: ["embedding"]}
    assert api.show(CHAT).capabilities == ["completion", "tools"]


def openai_client(fake):
    import openai

    return openai.OpenAI(base_url=fake[0] + "/v1", api_key="ollama", max_retries=0)


def test_v1_chat_whole_and_streamed(fake):
    oa = openai_client(fake)
    r = oa.chat.completions.create(model=CHAT, messages=USER, max_tokens=3)
    assert r.object == "chat.completion" and r.choices[0].message.content == "w0 w1 w2 "
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + 3
    chunks = list(
        oa.chat.completions.create(
            model=CHAT, messages=USER, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 "
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3


def test_v1_tool_choice_decides_between_a_call_and_text(fake):
    oa = openai_client(fake)
    r = oa.chat.completions.create(model=CHAT, messages=USER, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup" and call.type == "function"
    assert json.loads(call.function.arguments) == {} and call.id.startswith("call_")
    named = oa.chat.completions.create(
        model=CHAT, messages=USER, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "other"}}
    )
    assert named.choices[0].message.tool_calls[0].function.name == "other"
    text = oa.chat.completions.create(model=CHAT, messages=USER, tools=TOOLS, tool_choice="none", max_tokens=2)
    assert text.choices[0].message.content == "w0 w1 " and not text.choices[0].message.tool_calls
    back = [
        *USER,
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "RESULT-7"},
    ]
    answer = oa.chat.completions.create(model=CHAT, messages=back, tools=TOOLS, max_tokens=2)
    assert answer.choices[0].message.content == "w0 w1 " and "lookup returned:\nRESULT-7" in fake[2].served[-1]
    streamed = list(
        oa.chat.completions.create(model=CHAT, messages=USER, tools=TOOLS, tool_choice="required", stream=True)
    )
    calls = [c for ch in streamed if ch.choices for c in ch.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["lookup"] and streamed[-1].choices[0].finish_reason == "tool_calls"


def test_v1_errors_are_openai_shaped(fake):
    import openai

    oa = openai_client(fake)
    with pytest.raises(openai.NotFoundError) as err:
        oa.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.status_code == 404 and err.value.type == "not_found_error" and CHAT in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(
            model=CHAT, messages=USER, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert err.value.type == "invalid_request_error" and "'nope'" in err.value.message
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(
            model=CHAT,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ],
        )
    with pytest.raises(openai.APIError) as err:  # a failure after the stream started: an error event
        list(oa.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "FAIL"}], stream=True))
    assert "broke down" in str(err.value)
    r = httpx.post(fake[0] + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(fake[0] + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_v1_embeddings_and_models(fake, api):
    oa = openai_client(fake)
    native = api.embed(model=EMBED, input=["a", "b c"]).embeddings
    for fmt in ({"encoding_format": "float"}, {}):  # unless told, the openai client asks for base64 and decodes it
        r = oa.embeddings.create(model=EMBED, input=["a", "b c"], **fmt)
        assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens == 7
        assert np.allclose([d.embedding for d in r.data], native, atol=1e-7)
    raw = httpx.post(fake[0] + "/v1/embeddings", json={"model": EMBED, "input": "a", "encoding_format": "base64"})
    assert np.allclose(np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), "<f4"), native[0])
    assert len(oa.embeddings.create(model=EMBED, input="a").data) == 1
    assert {m.id for m in oa.models.list()} == {CHAT, EMBED}
    assert oa.models.retrieve(CHAT).owned_by == "library"
    import openai

    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError):
        oa.embeddings.create(model=EMBED, input=[[1, 2, 3]])


def test_embed_echoes_the_model_name_the_client_sent(api):
    assert api.embed(model="fake-embed", input="x").model == "fake-embed"  # as Ollama does (main: fake-embed:latest)
    assert api.embed(model=EMBED, input="x").model == EMBED


def test_a_failed_tool_call_may_be_retried_and_a_good_result_is_answered_in_text(fake, api):
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "lookup", "arguments": {}}}]}
    failed = {"role": "tool", "content": json.dumps({"error": "unknown category 'object'"}), "tool_name": "lookup"}
    retry = api.chat(model=CHAT, messages=[*USER, call, failed], tools=TOOLS)
    assert [c.function.name for c in retry.message.tool_calls] == ["lookup"]  # main forced text here
    ok = {"role": "tool", "content": json.dumps({"result": "42"}), "tool_name": "lookup"}
    answer = api.chat(model=CHAT, messages=[*USER, call, ok], tools=TOOLS, options={"num_predict": 2})
    assert answer.message.content == "w0 w1 " and not answer.message.tool_calls
    text = {"role": "tool", "content": "error: not JSON, so a result", "tool_name": "lookup"}
    assert not api.chat(model=CHAT, messages=[*USER, call, text], tools=TOOLS).message.tool_calls


def test_the_fast_tier_refuses_to_load_a_real_model():
    from infra.standin.models import ChatModel, Embedder
    from infra.standin.models.files import RealModelsForbiddenError

    assert os.environ.get("WORKSHOP_NO_REAL_MODELS") == "1"  # set by tests/conftest.py for every test not slow
    for model in (ChatModel, Embedder):
        with pytest.raises(RealModelsForbiddenError, match="fast test tier"):
            model()
