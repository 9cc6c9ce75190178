"""The official `ollama` client against the offline stand-in with its real models, over real HTTP (slow tier).

tests/test_stand_in_protocol.py checks the HTTP layer itself with fake models (fast tier).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import httpx
import jsonschema
import numpy as np
import ollama
import pytest

pytestmark = pytest.mark.slow

CHAT = "smollm2:135m"
EMBED = "all-minilm"
E5 = "multilingual-e5-small:latest"
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
Q = [{"role": "user", "content": "Name three colours."}]


def test_binds_loopback_only(stand_in):
    _, server = stand_in
    assert server.server_address[0] == "127.0.0.1"


def test_root_and_version(stand_in):
    assert httpx.get(stand_in[0] + "/").text == "Ollama is running"
    body = httpx.get(stand_in[0] + "/api/version").json()
    assert body["version"] and body["workshop_stand_in"] is True
    assert body["port"] == stand_in[1].server_address[1] and body["models"] == [CHAT, "all-minilm:latest", E5]


def test_list_models(client):
    models = {m.model: m for m in client.list().models}
    assert set(models) == {CHAT, "all-minilm:latest", E5}
    for m in models.values():
        assert isinstance(m.modified_at, datetime) and m.size > 1_000_000 and len(m.digest) == 64


def test_show_and_ps(client):
    chat = client.show(CHAT)
    assert chat.modelinfo["llama.context_length"] > 0 and "completion" in chat.capabilities
    assert chat.template and chat.details.format == "gguf"
    embed = client.show(EMBED)
    assert embed.modelinfo["bert.embedding_length"] == 384 and embed.capabilities == ["embedding"]
    assert {m.model for m in client.ps().models} >= {CHAT}


def test_chat_not_streamed_has_metrics(client):
    r = client.chat(model=CHAT, messages=Q, options={"temperature": 0, "num_predict": 12})
    assert r.message.role == "assistant" and r.message.content.strip()
    assert r.done and r.done_reason in {"stop", "length"}
    for field in METRICS:
        assert isinstance(getattr(r, field), int), field
    assert r.prompt_eval_count > 5 and 0 < r.eval_count <= 12
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration > 0


def test_chat_streamed(client):
    parts = list(client.chat(model=CHAT, messages=Q, stream=True, options={"num_predict": 20, "seed": 1}))
    assert len(parts) >= 3
    assert all(p.message.role == "assistant" for p in parts)
    assert not any(p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].eval_count >= len(parts) - 2  # one line per token, some multi-token pieces merged
    assert all(getattr(parts[-1], f) is not None for f in METRICS)
    assert "".join(p.message.content for p in parts).strip()


def test_identical_request_identical_output_cold_and_warm(client):
    """The prompt cache must not change the logits: cold, after a request sharing a long prefix, repeated."""
    system = {"role": "system", "content": "You are the assistant of Halvorsen Ridge Station. " * 12}  # >128 tokens
    question = [system, {"role": "user", "content": "Name three colours and say why you like them."}]
    opts = {"temperature": 0, "seed": 42, "num_predict": 40}
    client.chat(model=CHAT, messages=[], keep_alive=0)  # unloaded: the next request runs on a cold model
    cold = client.chat(model=CHAT, messages=question, options=opts).message.content
    client.chat(
        model=CHAT, messages=[system, {"role": "user", "content": "What is the capital of France?"}], options=opts
    )
    after_shared_prefix = client.chat(model=CHAT, messages=question, options=opts).message.content
    repeated = client.chat(model=CHAT, messages=question, options=opts).message.content
    streamed = "".join(p.message.content for p in client.chat(model=CHAT, messages=question, options=opts, stream=True))
    assert cold == after_shared_prefix == repeated == streamed  # main gave a different `repeated`


def test_seed_at_temperature_above_zero(client):
    """Sampling with a seed: the same seed gives the same text, other seeds other text."""

    def sample(seed: int) -> str:
        return client.chat(
            model=CHAT,
            messages=[{"role": "user", "content": "Write a short poem about the sea."}],
            options={"temperature": 0.9, "seed": seed, "num_predict": 40},
        ).message.content

    first = sample(1)
    assert sample(1) == first
    assert {sample(2), sample(3)} - {first}, "other seeds gave the same text"


def test_no_default_system_prompt_is_injected(stand_in, client):
    """ "Hello" costs its own tokens and the template's, not SmolLM2's default system prompt (main: 31 tokens)."""
    model, _ = stand_in[1].registry.models[CHAT].get()
    prompt = model.chat_prompt([{"role": "user", "content": "Hello"}], 4096)
    assert prompt == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    r = client.chat(model=CHAT, messages=[{"role": "user", "content": "Hello"}], options={"num_predict": 1})
    assert r.prompt_eval_count == model.count(prompt) <= 12
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert model.chat_prompt(with_system, 4096).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_num_predict_caps_length(client):
    r = client.generate(model=CHAT, prompt="Write a long story about the sea.", options={"num_predict": 5})
    assert r.eval_count == 5 and r.done_reason == "length"


def test_stop_sequence_is_not_emitted(client):
    r = client.generate(
        model=CHAT,
        prompt="List the numbers from 1 to 20, separated by commas.",
        options={"temperature": 0, "num_predict": 60, "stop": ["5"]},
    )
    assert "5" not in r.response


def test_generate_streamed_and_not(client):
    r = client.generate(model=CHAT, prompt="Hello", system="Answer briefly.", options={"num_predict": 8})
    assert r.response and r.done and r.eval_count <= 8
    parts = list(client.generate(model=CHAT, prompt="Hello", stream=True, options={"num_predict": 8}))
    assert parts[-1].done and not parts[0].done and "".join(p.response for p in parts)


def test_json_schema_format_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "population": {"type": "integer"},
            "size": {"type": "string", "enum": ["small", "large"]},
        },
        "required": ["city", "population", "size"],
    }
    r = client.chat(
        model=CHAT,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        format=schema,
        options={"temperature": 0, "num_predict": 120},
    )
    jsonschema.validate(json.loads(r.message.content), schema)


def test_json_format(client):
    r = client.generate(
        model=CHAT,
        prompt="Give a JSON object with a key 'ok'.",
        format="json",
        options={"temperature": 0, "num_predict": 80},
    )
    assert isinstance(json.loads(r.response), (dict, list))


def test_embed_one_and_many(client):
    one = client.embed(model=EMBED, input="The supply ship arrives every six weeks.")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 384
    many = client.embed(model=EMBED, input=["first text", "second text", "third, longer text " * 50])
    vectors = np.array(many.embeddings)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert many.prompt_eval_count > 0
    assert client.embed(model=EMBED, input=[]).embeddings == []


def test_embed_truncate_false_rejects_long_input(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=EMBED, input="word " * 400, truncate=False)
    assert err.value.status_code == 400 and "context length" in err.value.error


def test_legacy_embeddings(client):
    v = client.embeddings(model=EMBED, prompt="hello").embedding
    assert len(v) == 384


def test_unknown_model_is_404_naming_served_models(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3.2:3b", messages=Q)
    assert err.value.status_code == 404
    assert CHAT in err.value.error and "ollama pull llama3.2:3b" in err.value.error
    assert "unset WORKSHOP_OFFLINE" not in err.value.error


def test_wrong_kind_of_model_is_400(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=CHAT, input="x")
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=EMBED, messages=Q)
    assert err.value.status_code == 400


def test_pull(client):
    assert client.pull(EMBED).status == "success"
    assert [p.status for p in client.pull(CHAT, stream=True)][-1] == "success"
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("mistral:7b")
    assert err.value.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"model": 5, "messages": []}',
        b'{"model": "smollm2:135m", "messages": "hi"}',
        b'{"model": "smollm2:135m", "messages": [], "options": {"temperature": "hot"}}',
        b'{"model": "smollm2:135m", "messages": [{"role": "user", "content": "x"}], "format": "xml"}',
    ],
)
def test_malformed_body_is_400(stand_in, body):
    r = httpx.post(stand_in[0] + "/api/chat", content=body)
    assert r.status_code == 400 and r.json()["error"]


def test_unknown_endpoint_is_404(stand_in):
    assert httpx.post(stand_in[0] + "/api/nothing", json={}).status_code == 404


def test_concurrent_requests_are_queued_not_dropped(client):
    results, errors = [], []

    def ask(i: int) -> None:
        try:
            results.append(client.chat(model=CHAT, messages=Q, options={"num_predict": 6, "seed": i}))
        except Exception as exc:  # recorded and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4 and all(r.done for r in results)


def test_hang_up_mid_stream_stops_generation(stand_in, client):
    url, server = stand_in
    lock = server.registry.models[CHAT].lock
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "options": {"num_predict": 3000},
    }
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=30) as r:
        lines = r.iter_lines()
        first = [json.loads(next(lines)) for _ in range(3)]
    assert all(not line["done"] for line in first)
    deadline = time.monotonic() + 15  # a 3000-token generation would hold the lock for ~30 s or more
    while lock.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.waiting == 0, "generation kept running after the client hung up"
    r = client.chat(model=CHAT, messages=Q, options={"num_predict": 4})
    assert r.done and r.eval_count <= 4


def test_prompt_eval_duration_is_the_prompts_evaluation(client):
    """A long cold prompt: prompt_eval_duration is most of the wait for the first piece (main reported ~5 ms of 21 s)."""
    client.chat(model=CHAT, messages=[], keep_alive=0)  # unloaded: the prompt is evaluated cold
    client.chat(model=CHAT, messages=[], keep_alive="5m")  # loaded again, so load time is not in the wait below
    words = " ".join(f"station{i} rule {i}: keep the hatch closed." for i in range(60))
    start = time.perf_counter()
    first = None
    for part in client.chat(
        model=CHAT, messages=[{"role": "user", "content": words}], stream=True, options={"num_predict": 3}
    ):
        first = first or time.perf_counter()
        final = part
    assert first is not None and final.done and final.prompt_eval_count > 400
    waited_ns = (first - start) * 1e9
    assert final.prompt_eval_duration >= 0.5 * waited_ns, (final.prompt_eval_duration, waited_ns)
    assert final.total_duration >= final.load_duration + final.prompt_eval_duration + final.eval_duration
