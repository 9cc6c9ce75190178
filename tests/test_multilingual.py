"""multilingual-e5-small in the offline stand-in, over real HTTP with the official ollama client (slow tier)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from helpers.embedders import with_prefix
from helpers.index import embed_texts

pytestmark = pytest.mark.slow

E5 = "multilingual-e5-small"
RU = "Евгений Онегин приезжает в деревню, чтобы вступить в наследство после смерти дяди."
EN = "Eugene Onegin comes to the countryside to take up his inheritance after his uncle's death."
OTHER = "Preheat the oven to 200 degrees and bake the bread for forty minutes."


def test_listed_and_shown_next_to_all_minilm(client):
    names = {m.model for m in client.list().models}
    assert {"all-minilm:latest", f"{E5}:latest"} <= names
    shown = client.show(E5)
    assert shown.capabilities == ["embedding"] and shown.details.quantization_level == "Q4_0"
    assert shown.modelinfo["bert.embedding_length"] == 384 and shown.modelinfo["bert.context_length"] == 512


def test_identical_input_gives_identical_unit_vectors(client):
    texts = with_prefix(E5, [RU, EN, OTHER], as_query=False)
    batch = np.array(client.embed(model=E5, input=texts).embeddings)
    again = np.array(client.embed(model=E5, input=texts).embeddings)
    single = np.array([client.embed(model=E5, input=t).embeddings[0] for t in texts])
    assert batch.shape == (3, 384)
    assert np.array_equal(batch, again) and np.array_equal(batch, single)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)


def test_a_translation_is_closer_than_an_unrelated_sentence(client):
    ru, en, other = np.array(embed_texts(client, [RU, EN, OTHER], model=E5))
    # measured: ru-en 0.909, ru-other 0.765, en-other 0.770 (e5 cosines sit high; the order is what counts)
    assert ru @ en > 0.8 and ru @ en - max(ru @ other, en @ other) > 0.08
    (question,) = embed_texts(client, ["Кто такой Онегин?"], model=E5, as_query=True)
    assert question @ ru > question @ other and question @ en > question @ other


def test_the_prefix_reaches_the_model_unchanged(client):
    query, passage, bare = client.embed(model=E5, input=[f"query: {RU}", f"passage: {RU}", RU]).embeddings
    assert query != passage and passage == bare, "a text without a prefix is embedded as a passage"


def test_v1_embeddings_give_the_same_vectors(stand_in):
    url = stand_in[0]
    body = httpx.post(url + "/v1/embeddings", json={"model": E5, "input": [RU]}, timeout=60).json()
    ollama_body = httpx.post(url + "/api/embed", json={"model": E5, "input": [RU]}, timeout=60).json()
    assert body["data"][0]["embedding"] == ollama_body["embeddings"][0] and body["model"] == E5
