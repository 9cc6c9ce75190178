"""all-MiniLM-L6-v2 (int8 ONNX) run by onnxruntime: WordPiece tokens, mean pooling, unit vectors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from infra.standin.models.files import minilm_onnx, minilm_tokenizer_json, refuse_if_forbidden

EMBED_MAX_TOKENS = 256  # all-MiniLM-L6-v2's sentence-transformers max_seq_length
EMBED_DIM = 384
# Texts per onnxruntime run. Each run's attention tensors take rows x 12 heads x width^2 x 4 bytes (100 MB each at 32
# rows of 256 tokens), allocated for the run: 32 rows lifted the stand-in by ~0.4 GB at every request of 32 long chunks
# (gone after it: RSS read after a request misses it). 8 rows: +139 MB against +412 MB, and faster (less padding):
# 14.0 against 8.1 chunks/s, the handbook's 458 chunks sent 32 a request, in-process, 2026-12-07, load 4.
EMBED_RUN_ROWS = 8


class Embedder:
    """all-MiniLM-L6-v2: WordPiece tokens (max 256), mean pooling over the mask, L2 normalised."""

    def __init__(self, onnx_path: Path | None = None, threads: int | None = None) -> None:
        refuse_if_forbidden("Embedder")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = onnx_path or minilm_onnx()
        self.tokenizer = Tokenizer.from_file(str(minilm_tokenizer_json()))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        # Memory: onnxruntime's CPU arena keeps every buffer it ever grew to, and a memory pattern is planned (and
        # kept) per input shape; with batches of varying width the embedder alone grew by ~1.2 GB over two
        # 32-text batches. Without them each run allocates and frees its own buffers (same speed within noise).
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts with [CLS]/[SEP], before truncation."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str], batch_size: int = EMBED_RUN_ROWS) -> tuple[np.ndarray, int]:
        """Unit vectors (n, 384) and the number of tokens processed, after truncation."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = [e.ids[:EMBED_MAX_TOKENS] for e in encodings]
        for seq, enc in zip(ids, encodings):
            if len(enc.ids) > EMBED_MAX_TOKENS:
                seq[-1] = enc.ids[-1]  # keep [SEP] last, as the reference tokenizer does
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths, less padding
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            (hidden,) = self.session.run(
                ["last_hidden_state"],
                {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)},
            )
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            out[batch] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out, sum(len(s) for s in ids)
