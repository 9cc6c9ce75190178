"""A GGUF chat model run by llama-cpp-python, with the chat template stored in the file."""

from __future__ import annotations

import codecs
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from infra.standin.errors import TemplateRejectedError
from infra.standin.models.files import ModelFilesMissingError, refuse_if_forbidden, smollm2_gguf
from infra.standin.models.grammar import CHECKED_FIRST
from infra.standin.models.sampling import (
    DEFAULT_NUM_CTX,
    STAND_IN_NUM_PREDICT,
    GenerationStats,
    SamplingOptions,
    StopScanner,
)

MIN_TAIL = 16  # the last tokens of a prompt are always evaluated again, whatever is cached (see ChatModel._evaluate)
# A chat template block that adds the model maker's own system prompt when a chat has none (SmolLM2's:
# "You are a helpful AI assistant named SmolLM, ..."). Ollama's templates add no system prompt there.
DEFAULT_SYSTEM_BLOCK = re.compile(
    r"\{%-?\s*if loop\.first and messages\[0\]\['role'\] != 'system'\s*-?%\}.*?\{%-?\s*endif\s*-?%\}", re.S
)


def without_default_system(template: str) -> str:
    """The chat template without a block that injects a default system prompt (unchanged if it has none)."""
    return DEFAULT_SYSTEM_BLOCK.sub("", template, count=1)


class ChatModel:
    """A GGUF chat model run by llama-cpp-python, with the chat template stored in the file."""

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        refuse_if_forbidden("ChatModel")  # before importing llama_cpp: the fast tier may not have it
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path) if path else smollm2_gguf()
        if not self.path.is_file():
            raise ModelFilesMissingError(f"GGUF file not found: {self.path}")
        self.llm = Llama(
            str(self.path),
            n_ctx=DEFAULT_NUM_CTX,  # memory: the f16 KV cache is 30 layers x 2 x 192 x 2 bytes a token: 94 MB at 4096
            n_threads=threads or min(4, os.cpu_count() or 1),
            verbose=False,
        )
        meta = self.llm.metadata
        self.eos = self.llm.token_eos()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.is_end = lambda tok: tok == self.eos or bool(llama_cpp.llama_vocab_is_eog(vocab, tok))
        eos_text = self.llm.detokenize([self.eos], special=True).decode("utf-8", "ignore")
        template = without_default_system(meta.get("tokenizer.chat_template") or CHATML_TEMPLATE)
        self.template = template
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token="")
        self.template_stops = [eos_text] if eos_text else []
        self.metadata = meta

    def count(self, text: str) -> int:
        """Number of tokens in text."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def chat_prompt(self, messages: list[dict], num_ctx: int) -> str:
        """Format messages with the chat template, dropping the oldest non-system turns to fit num_ctx."""
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        from jinja2 import TemplateError

        while True:
            try:
                prompt = self.formatter(messages=msgs).prompt  # type: ignore[arg-type]  # plain dicts, as the template reads them
            except (TemplateError, ValueError) as exc:  # raise_exception() in a template is a ValueError
                raise TemplateRejectedError(
                    f"the chat template of {self.path.name} rejects these messages: {exc}"
                ) from exc
            non_system = [i for i, m in enumerate(msgs) if m["role"] != "system"]
            if self.count(prompt) < num_ctx - 16 or len(non_system) <= 1:
                return prompt
            del msgs[non_system[0]]

    def stream(
        self, prompt: str, opts: SamplingOptions, grammar=None, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are decoded; fills `stats` as it goes."""
        stats = stats if stats is not None else GenerationStats()
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        budget = min(opts.num_ctx, self.llm.n_ctx())
        if len(tokens) >= budget - 1:
            tokens = tokens[-(budget - 64) :]  # keep the end of an over-long prompt, as Ollama does
        stats.prompt_eval_count = len(tokens)
        limit = opts.num_predict if opts.num_predict is not None else STAND_IN_NUM_PREDICT
        limit = budget - len(tokens) if limit < 0 else min(limit, budget - len(tokens))
        self.llm.set_seed(opts.seed if opts.seed is not None else random.randrange(2**31))
        started = time.perf_counter_ns()  # prompt_eval_duration: the prompt's evaluation and the first token's sampling
        self._evaluate(tokens)
        scanner = StopScanner(opts.stop + self.template_stops)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        first = None
        stats.done_reason = "length"
        if limit <= 0:
            stats.prompt_eval_duration = time.perf_counter_ns() - started
            return
        record = LogprobRecorder(self.llm, opts.top_logprobs) if stats.logprobs is not None else None
        if getattr(grammar, "checked_first", False):
            tokens_out = self._constrained(grammar, opts, record)
        else:
            tokens_out = self.llm.generate(  # the prompt is evaluated: sample from its last logits on
                [],
                top_k=opts.top_k,
                top_p=opts.top_p,
                min_p=opts.min_p,
                temp=opts.temperature,
                repeat_penalty=opts.repeat_penalty,
                grammar=grammar,
                reset=False,
                logits_processor=[record] if record else None,  # type: ignore[arg-type]  # a plain list works
            )
        try:
            for token in tokens_out:
                now = time.perf_counter_ns()
                if first is None:
                    first = now
                    stats.prompt_eval_duration = now - started
                if self.is_end(token):
                    stats.done_reason = "stop"
                    break
                stats.eval_count += 1
                stats.eval_duration = now - first
                if record and stats.logprobs is not None:
                    stats.logprobs.append(record.entry(token))
                piece = scanner.feed(decoder.decode(self.llm.detokenize([token])))
                if piece:
                    yield piece
                if scanner.stopped:
                    stats.done_reason = "stop"
                    break
                if stats.eval_count >= limit:
                    break
        finally:
            tokens_out.close()  # type: ignore[attr-defined]  # Llama.generate returns a generator
        tail = scanner.flush() + decoder.decode(b"", final=True)
        if tail and not scanner.stopped:
            yield tail
        if first is not None:
            stats.eval_duration = time.perf_counter_ns() - first

    def _constrained(self, grammar, opts: SamplingOptions, record: LogprobRecorder | None = None) -> Iterator[int]:
        """Tokens that follow `grammar`, checking it on the CHECKED_FIRST most likely tokens first.

        llama.cpp's sampler chain checks the grammar on all 49,152 tokens of the vocabulary at every step (about
        0.2 s a token here); the likely tokens almost always include a valid one, and only when none is valid is
        the whole vocabulary checked. Sampling: greedy at temperature 0, else temperature, top_k, top_p and min_p
        over the valid tokens with a generator seeded like llama.cpp's (repeat_penalty is not applied here).
        """
        import ctypes

        import llama_cpp

        llm = self.llm
        n_vocab = llm.n_vocab()
        sampler = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        data = np.recarray(
            (n_vocab,), dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        )
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(llama_cpp.llama_token_data_p), size=0, selected=-1, sorted=False
        )
        rng = np.random.default_rng(opts.seed if opts.seed is not None else random.randrange(2**31))

        def valid(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
            data.id[: len(ids)], data.logit[: len(ids)], data.p[: len(ids)] = ids, logits, 0.0
            array.size, array.sorted, array.selected = len(ids), False, -1
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            return np.isfinite(data.logit[: len(ids)].copy())

        try:
            while True:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).copy()
                if record:
                    record(None, logits)
                top = np.argpartition(-logits, CHECKED_FIRST)[:CHECKED_FIRST]
                ok = valid(top, logits[top])
                ids = top[ok]
                if not len(ids):
                    everything = np.arange(n_vocab, dtype=np.intc)
                    ids = everything[valid(everything, logits)]
                token = int(self._pick(ids, logits[ids], opts, rng))
                llama_cpp.llama_sampler_accept(sampler, token)
                yield token
                llm.eval([token])
        finally:
            llama_cpp.llama_sampler_free(sampler)

    @staticmethod
    def _pick(ids: np.ndarray, logits: np.ndarray, opts: SamplingOptions, rng: np.random.Generator) -> int:
        """One token of `ids`: the most likely at temperature 0, else sampled with top_k, top_p and min_p."""
        order = np.argsort(-logits, kind="stable")
        ids, logits = ids[order], logits[order]
        if opts.temperature <= 0 or len(ids) == 1:
            return ids[0]
        if opts.top_k > 0:
            ids, logits = ids[: opts.top_k], logits[: opts.top_k]
        probs = np.exp((logits - logits[0]) / opts.temperature)
        probs /= probs.sum()
        keep = max(1, int(np.searchsorted(np.cumsum(probs), opts.top_p) + 1)) if opts.top_p < 1 else len(ids)
        keep = min(keep, int((probs >= opts.min_p * probs[0]).sum()) or 1)
        probs = probs[:keep] / probs[:keep].sum()
        return ids[rng.choice(keep, p=probs)]

    def _evaluate(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the longest prefix it shares with the cached one but its last MIN_TAIL tokens.

        As llama.cpp's server, the cache is reused token by token up to where the previous prompt diverged; unlike
        llama-cpp-python's own reuse (which re-evaluates a single token when the whole prompt is cached, and with
        which an identical request gave other text cold and warm), at least the last MIN_TAIL tokens are always
        evaluated again, in one call. Measured on this build (llama-cpp-python 0.3.36, CPU): the last token's
        logits are bit-identical whether the prompt is evaluated whole or as a cached prefix and a tail of
        MIN_TAIL or more tokens, wherever the cut falls; a 1-token tail differs in the last bits. The
        repeatability test (tests/test_stand_in_api.py) checks cold, warm and repeated requests.
        """
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        n = min(len(cached), len(tokens))
        if n:
            differs = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
            common = int(differs[0]) if len(differs) else n
        else:
            common = 0
        keep = max(0, min(common, len(tokens) - MIN_TAIL))
        llm.n_tokens = keep  # eval() drops the KV cache from here on
        llm.eval(tokens[keep:])

    def close(self) -> None:
        """Free the model's memory (keep_alive 0 unloads it)."""
        self.llm.close()


class LogprobRecorder:
    """A llama-cpp-python logits processor that keeps each step's log-softmax, for Ollama's `logprobs`.

    The log-probabilities are the model's, before temperature, penalties and any grammar are applied (what the
    model thinks, not what the sampler was allowed to pick). Costs one log-softmax over the vocabulary a token.
    """

    def __init__(self, llm: Any, top: int) -> None:
        self.llm, self.top, self.last = llm, top, None

    def __call__(self, input_ids: object, logits: np.ndarray) -> np.ndarray:
        shifted = logits.astype(np.float64) - logits.max()
        self.last = shifted - np.log(np.exp(shifted).sum())
        return logits

    def text(self, token: int) -> tuple[str, list[int]]:
        raw = self.llm.detokenize([token], special=True)
        return raw.decode("utf-8", "replace"), list(raw)

    def entry(self, token: int) -> dict:
        """The Logprob entry of the token just sampled."""
        lp = self.last
        if lp is None:
            return {"token": self.text(token)[0], "logprob": 0.0, "bytes": self.text(token)[1], "top_logprobs": []}
        best = np.argpartition(-lp, self.top)[: self.top] if self.top else np.array([], dtype=int)
        best = best[np.argsort(-lp[best])]
        alternatives = [
            {"token": self.text(int(t))[0], "logprob": float(lp[t]), "bytes": self.text(int(t))[1]} for t in best
        ]
        text, raw = self.text(token)
        return {"token": text, "logprob": float(lp[token]), "bytes": raw, "top_logprobs": alternatives}


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
