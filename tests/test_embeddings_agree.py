"""The stand-in's /api/embed agrees with all-MiniLM-L6-v2 run directly, as published (fp32 weights)."""

from __future__ import annotations

import numpy as np

from tests.support.reference_minilm import ReferenceMiniLM

TEXTS = [
    "Boat operations stop when the wind exceeds 10 m/s.",
    "hello",
    "Quiet hours at the station are from 22:30 to 06:30.",
    "A recipe for bread: flour, water, salt and yeast, left to rise overnight.",
    "Die Station liegt auf einer Insel im Norden.",
    "Numbers in tables: G1 160 kW, G2 160 kW, W1 45 kW.",
    "This sentence is repeated to exceed the 256-token window of the model. " * 30,
]


def test_served_embeddings_match_reference(client):
    served = np.array(client.embed(model="all-minilm", input=TEXTS).embeddings)
    ref = ReferenceMiniLM()
    cosines = [float(ref.embed(t) @ v) for t, v in zip(TEXTS, served)]
    assert min(cosines) >= 0.99, cosines


def test_embedding_is_independent_of_batch(client):
    batch = np.array(client.embed(model="all-minilm", input=TEXTS).embeddings)
    single = np.array([client.embed(model="all-minilm", input=t).embeddings[0] for t in TEXTS])
    assert np.allclose(batch, single, atol=1e-4)
