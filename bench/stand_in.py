"""Stand-in vs the same models called directly: decode tokens/s, time to first token, embed chunks/s, memory.

    .venv/bin/python -m bench.stand_in [--rounds 5] [--num-predict 128] [--json PATH]
    .venv/bin/python -m bench.stand_in --embedders [--rounds 3]   # all-minilm vs multilingual-e5-small only

Both sides run on the same model files with the same settings, never at the same time: a private stand-in
(a child process on a free port, as the workshop runs it) reached over real HTTP with the official `ollama`
client, and a Llama / Embedder of our own in this process, called directly. Rounds alternate which side
goes first; medians are reported. Each round uses a different prompt, the same on both sides, and every
prompt is cold on both sides: its system message opens with a word of its own (Alpha, Bravo, ...), so a
prompt shares with the one before only the chat template's opening tokens (the count is printed), and both
sides, which see the prompts in the same order, reuse exactly those (the stand-in reuses the longest cached
prefix but its last 16 tokens; the direct side is llama-cpp-python as it comes, which reuses the whole shared
prefix). Decoding is compared on the same GGUF file, n_ctx, n_batch, threads, sampling and num_predict (the
direct side is a ChatModel of our own, called without the server). A last measurement asks the same prompt
twice in a row, where the direct side's prefix cache saves almost all prompt processing: what the stand-in's
repeatability costs at most. The stand-in's resident memory is read (from the operating system, by its pid)
once its warm models are loaded, after the lessons' largest embed batch (32 chunks in one request, the longest
of the corpus), and with both embedders loaded after each has embedded that batch, against a 600 MB target.
With --embedders it measures only the stand-in's two embedding models on the same chunks over HTTP (chunks/s,
rounds alternating which goes first) and its resident memory before and after multilingual-e5-small is loaded.
"""

from __future__ import annotations

import argparse
import codecs
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import ollama

from bench.common import load_note, private_stand_in, progress, rss_mb, stand_in_memory, table
from helpers.chunking import Chunk, chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents
from helpers.index import chunk_payload, embedding_text
from helpers.rag import Hit, build_messages
from infra.standin.models import ChatModel, Embedder, SamplingOptions
from infra.standin.models.embedder import EMBED_RUN_ROWS

T = TypeVar("T")

# Greedy, with every other sampling option spelled out so that both sides get the same values.
SAMPLING = {"temperature": 0.0, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1, "seed": 0}
# A RAG-style request that SmolLM2 answers at length (the lessons' "be brief" prompt often stops after
# ~20 tokens, too few to time decoding): the benchmark wants num_predict tokens in every round.
SYSTEM = "You answer using only the numbered sources given, citing them like [1]."
QUESTION = "Summarise the sources in detail, as a numbered list of every fact they state."
# The first word of each prompt's system message: consecutive prompts differ from their first content token on.
OPENINGS = "Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliett Kilo Lima Mike November Oscar".split()
TARGET_RATIO = 0.95  # stand-in throughput / direct throughput
TARGET_TTFT_OVERHEAD_MS = 50.0
TARGET_MEMORY_MB = 600.0  # the stand-in's resident memory, both models loaded (Binder gives a session 1-2 GB)


@dataclass(frozen=True)
class Generation:
    """One streamed generation: time to first token, decode rate after it, and what was made."""

    ttft_s: float
    decode_tps: float
    tokens: int
    prompt_tokens: int
    text: str


@dataclass
class Side:
    """Per-round measurements of one side (stand-in or direct)."""

    ttft_ms: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    embed_cps: list[float] = field(default_factory=list)
    repeat_ttft_ms: list[float] = field(default_factory=list)  # the same prompt asked again right away

    def medians(self) -> dict[str, float]:
        """Median of each measurement."""
        return {k: statistics.median(v) for k, v in asdict(self).items() if v}


@dataclass
class Report:
    """Everything the stand-in benchmark measured."""

    stand_in: Side
    direct: Side
    rounds: int
    num_predict: int
    prompt_tokens: list[int]
    generated_tokens: list[int]
    same_text: int  # rounds whose greedy text was identical on both sides
    embed_chunks: int
    batch_size: int
    embed_max_abs_diff: float
    chat_settings: str  # the llama.cpp settings both sides ran with
    load: str
    memory_mb: dict[str, float] = field(default_factory=dict)  # the stand-in's resident memory, by moment
    shared_tokens: int = 0  # the most tokens a measured prompt shared with the one before it (on both sides)

    def derived(self) -> dict[str, float]:
        """The compared figures: throughput ratios and the TTFT overhead."""
        s, d = self.stand_in.medians(), self.direct.medians()
        return {
            "decode_ratio": s["decode_tps"] / d["decode_tps"],
            "ttft_overhead_ms": s["ttft_ms"] - d["ttft_ms"],
            "embed_ratio": s["embed_cps"] / d["embed_cps"],
            "repeat_ttft_overhead_ms": s["repeat_ttft_ms"] - d["repeat_ttft_ms"],
        }


def decode_rate(tokens: int, first: float, last: float) -> float:
    """Tokens per second after the first token (the first one is paid for by prompt processing)."""
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def stand_in_generation(client: ollama.Client, messages: list[dict], num_predict: int) -> Generation:
    """Stream a chat from the stand-in; TTFT runs from the call to the first non-empty piece."""
    pieces: list[str] = []
    first = last = 0.0
    final = None
    start = time.perf_counter()
    for part in client.chat(
        model=STAND_IN_CHAT_MODEL, messages=messages, stream=True, options={**SAMPLING, "num_predict": num_predict}
    ):
        now = time.perf_counter()
        if part.message.content:
            first, last = first or now, now
            pieces.append(part.message.content)
        if part.done:
            final = part
    if final is None or not first:
        raise RuntimeError("the stand-in streamed no text")
    return Generation(
        first - start,
        decode_rate(final.eval_count or 0, first, last),
        final.eval_count or 0,
        final.prompt_eval_count or 0,
        "".join(pieces),
    )


class DirectChat:
    """A ChatModel of our own (the stand-in's GGUF, n_ctx, threads, template) whose Llama we call directly."""

    def __init__(self, threads: int | None = None) -> None:
        import llama_cpp  # here, not at the top: a base install (no llama.cpp) still collects the smoke test

        self.model = ChatModel(threads=threads)
        self.llm = self.model.llm
        self.shared: list[int] = []  # per generation: prompt tokens shared with the previous prompt (reused)
        self.is_eog = lambda token: bool(
            llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(self.llm.model), token)
        )

    def settings(self) -> str:
        """The llama.cpp settings that matter for speed."""
        llm = self.llm
        return f"n_ctx {llm.n_ctx()}, n_batch {llm.n_batch}, n_threads {llm.n_threads}/{llm.n_threads_batch} (decode/prompt)"

    def format(self, messages: list[dict]) -> str:
        """The prompt text the stand-in makes of these messages (same template, same num_ctx)."""
        return self.model.chat_prompt(messages, SamplingOptions.from_request(SAMPLING).num_ctx)

    def generate(self, prompt: str, num_predict: int) -> Generation:
        """Tokenize, generate and detokenize token by token, as any caller of llama-cpp-python must."""
        start = time.perf_counter()
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
        self.shared.append(
            next((i for i, (a, b) in enumerate(zip(cached, tokens)) if a != b), min(len(cached), len(tokens)))
        )
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pieces: list[str] = []
        first = last = 0.0
        n = 0
        stream = self.llm.generate(
            tokens,
            top_k=SAMPLING["top_k"],
            top_p=SAMPLING["top_p"],
            min_p=SAMPLING["min_p"],
            temp=SAMPLING["temperature"],
            repeat_penalty=SAMPLING["repeat_penalty"],
        )
        try:
            for token in stream:
                if self.is_eog(token):
                    break
                piece = decoder.decode(self.llm.detokenize([token]))
                n += 1
                if piece:  # timed like the stand-in's side: when a non-empty piece is there
                    now = time.perf_counter()
                    first, last = first or now, now
                    pieces.append(piece)
                if n >= num_predict:
                    break
        finally:
            stream.close()
        return Generation(first - start, decode_rate(n, first, last), n, len(tokens), "".join(pieces))


def as_hit(chunk: Chunk) -> Hit:
    """A workshop chunk dressed as a retrieval hit, for helpers.rag.build_messages."""
    return Hit(chunk.id, chunk.doc_id, chunk.metadata.get("title", ""), chunk.text, 0.0, chunk_payload(chunk))


def rag_chat(hits: list[Hit], opening: str = "") -> list[dict]:
    """The benchmark's RAG chat: numbered sources, then QUESTION; the system message starts with `opening`."""
    return build_messages(QUESTION, hits, system=f"{opening}. {SYSTEM}" if opening else SYSTEM)


def trim_last(
    hits: list[Hit], target_tokens: int, n_tokens: Callable[[list[dict]], int], opening: str = ""
) -> list[Hit]:
    """hits with the last source cut to the fewest words that keep the chat at least target_tokens long."""
    words = hits[-1].text.split(" ")
    cut = lambda n: [*hits[:-1], replace(hits[-1], text=" ".join(words[:n]))]  # noqa: E731
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if n_tokens(rag_chat(cut(mid), opening)) >= target_tokens else (mid + 1, hi)
    return cut(lo)


def rag_prompts(
    count: int, target_tokens: int, chunks: Sequence[Chunk], n_tokens: Callable[[list[dict]], int]
) -> list[list[dict]]:
    """`count` different RAG chats from consecutive corpus chunks, each about target_tokens long, each cold."""
    prompts, pos = [], 0
    for i in range(count):
        opening, hits = OPENINGS[i % len(OPENINGS)], []
        while not hits or n_tokens(rag_chat(hits, opening)) < target_tokens:
            hits.append(as_hit(chunks[pos % len(chunks)]))
            pos += 1
        prompts.append(rag_chat(trim_last(hits, target_tokens, n_tokens, opening), opening))
    return prompts


def embed_batches(chunks: Sequence[Chunk], n: int, batch_size: int) -> list[list[str]]:
    """The embedding texts of the first n chunks, in batches."""
    texts = [embedding_text(c) for c in chunks[:n]]
    return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]


def timed(fn: Callable[[], object]) -> float:
    """Seconds that fn() took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ab_rounds(rounds: int, a: Callable[[int], T], b: Callable[[int], T]) -> tuple[list[T], list[T]]:
    """a(i) and b(i) for each round, alternating which goes first so that drift hits both alike."""
    out_a: list[T] = []
    out_b: list[T] = []
    for i in range(rounds):
        if i % 2 == 0:
            out_a.append(a(i))
            out_b.append(b(i))
        else:
            out_b.append(b(i))
            out_a.append(a(i))
    return out_a, out_b


def bench_generation(
    client: ollama.Client,
    direct: DirectChat,
    chunks: Sequence[Chunk],
    rounds: int,
    num_predict: int,
    prompt_tokens: int,
) -> tuple[list[Generation], list[Generation]]:
    """(stand-in, direct) generations per round, after one warm-up each."""
    prompts = rag_prompts(rounds + 1, prompt_tokens, chunks, lambda m: direct.model.count(direct.format(m)))
    progress("generation: warm-up")
    stand_in_generation(client, prompts[0], num_predict)
    direct.generate(direct.format(prompts[0]), num_predict)

    def a(i: int) -> Generation:
        progress(f"generation round {i + 1}/{rounds}: stand-in")
        return stand_in_generation(client, prompts[i + 1], num_predict)

    def b(i: int) -> Generation:
        progress(f"generation round {i + 1}/{rounds}: direct")
        return direct.generate(direct.format(prompts[i + 1]), num_predict)

    return ab_rounds(rounds, a, b)


def bench_repeat(
    client: ollama.Client, direct: DirectChat, chunks: Sequence[Chunk], rounds: int, prompt_tokens: int
) -> tuple[list[float], list[float]]:
    """(stand-in, direct) time to first token in ms of a prompt asked a second time right after the first."""
    prompts = rag_prompts(
        rounds, prompt_tokens, chunks[len(chunks) // 2 :], lambda m: direct.model.count(direct.format(m))
    )

    def a(i: int) -> float:
        progress(f"repeated prompt round {i + 1}/{rounds}: stand-in")
        stand_in_generation(client, prompts[i], 4)
        return stand_in_generation(client, prompts[i], 4).ttft_s * 1000

    def b(i: int) -> float:
        progress(f"repeated prompt round {i + 1}/{rounds}: direct")
        direct.generate(direct.format(prompts[i]), 4)
        return direct.generate(direct.format(prompts[i]), 4).ttft_s * 1000

    return ab_rounds(rounds, a, b)


def bench_embedding(
    client: ollama.Client, batches: list[list[str]], rounds: int
) -> tuple[list[float], list[float], float]:
    """(stand-in, direct) chunks/s per round, and the largest difference between their vectors."""
    embedder = Embedder()
    n = sum(len(b) for b in batches)
    served = np.array(client.embed(model=EMBED_MODEL, input=batches[0]).embeddings)  # warm-up, and a check
    direct_vectors, _ = embedder.embed(batches[0])  # the stand-in's own rows per onnxruntime run, as it serves
    diff = float(np.abs(served - direct_vectors).max())

    def a(i: int) -> float:
        progress(f"embedding round {i + 1}/{rounds}: stand-in")
        return n / timed(lambda: [client.embed(model=EMBED_MODEL, input=b) for b in batches])

    def b(i: int) -> float:
        progress(f"embedding round {i + 1}/{rounds}: direct")
        return n / timed(lambda: [embedder.embed(b) for b in batches])

    cps_a, cps_b = ab_rounds(rounds, a, b)
    return cps_a, cps_b, diff


def run(
    rounds: int = 5,
    num_predict: int = 128,
    prompt_tokens: int = 300,
    embed_chunks: int = 320,
    batch_size: int = 32,
    threads: int | None = None,
    url: str | None = None,
) -> Report:
    """Measure both sides, A/B alternated, on a private stand-in (or the stand-in at url, started with `threads`)."""
    load_at_start = load_note()
    docs, _ = load_documents()
    chunks = chunk_documents(docs)
    stand_in, direct = Side(), Side()
    direct_chat = DirectChat(threads)
    with nullcontext(url) if url else private_stand_in(threads) as base_url:
        client = ollama.Client(host=base_url)
        memory = stand_in_memory(client, base_url, [embedding_text(c) for c in chunks], batch_size)
        gen_s, gen_d = bench_generation(client, direct_chat, chunks, rounds, num_predict, prompt_tokens)
        shared = max(direct_chat.shared[1:])  # the measured rounds (after the warm-up)
        stand_in.repeat_ttft_ms, direct.repeat_ttft_ms = bench_repeat(
            client, direct_chat, chunks, rounds, prompt_tokens
        )
        batches = embed_batches(chunks, embed_chunks, batch_size)
        stand_in.embed_cps, direct.embed_cps, diff = bench_embedding(client, batches, rounds)
        memory["after the whole benchmark"] = rss_mb(int(httpx.get(base_url + "/api/version").json()["pid"]))
    for side, gens in ((stand_in, gen_s), (direct, gen_d)):
        side.ttft_ms = [g.ttft_s * 1000 for g in gens]
        side.decode_tps = [g.decode_tps for g in gens]
    if any(s.prompt_tokens != d.prompt_tokens for s, d in zip(gen_s, gen_d)):
        raise RuntimeError("the two sides processed different prompts")
    return Report(
        stand_in,
        direct,
        rounds,
        num_predict,
        [g.prompt_tokens for g in gen_s],
        [g.tokens for g in gen_s],
        sum(s.text == d.text for s, d in zip(gen_s, gen_d)),
        sum(len(b) for b in batches),
        batch_size,
        diff,
        direct_chat.settings(),
        f"{load_at_start} at the start, {load_note()} at the end",
        memory,
        shared,
    )


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def cells(r: Report, key: str) -> list[str]:
    """'median [min-max]' of one measurement, stand-in then direct."""
    out = []
    for side in (r.stand_in, r.direct):
        values = getattr(side, key)
        out.append(f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]")
    return out


def format_report(r: Report) -> str:
    """The side-by-side table with ratios and PASS/MISS per target."""
    x = r.derived()
    rows = [
        [
            "decode tokens/s",
            *cells(r, "decode_tps"),
            f"ratio {x['decode_ratio']:.3f}",
            f">= {TARGET_RATIO}",
            verdict(x["decode_ratio"] >= TARGET_RATIO),
        ],
        [
            "time to first token (ms)",
            *cells(r, "ttft_ms"),
            f"overhead {x['ttft_overhead_ms']:+.1f} ms",
            f"<= {TARGET_TTFT_OVERHEAD_MS:.0f} ms",
            verdict(x["ttft_overhead_ms"] <= TARGET_TTFT_OVERHEAD_MS),
        ],
        [
            "embed chunks/s",
            *cells(r, "embed_cps"),
            f"ratio {x['embed_ratio']:.3f}",
            f">= {TARGET_RATIO}",
            verdict(x["embed_ratio"] >= TARGET_RATIO),
        ],
        [
            "TTFT, same prompt again (ms)",
            *cells(r, "repeat_ttft_ms"),
            f"overhead {x['repeat_ttft_overhead_ms']:+.1f} ms",
            "none: the price of repeatability",
            "info",
        ],
    ]
    rows += [
        [
            f"stand-in memory (MB), {moment}",
            f"{mb:.0f}",
            "-",
            "-",
            f"<= {TARGET_MEMORY_MB:.0f}",
            verdict(mb <= TARGET_MEMORY_MB),
        ]
        for moment, mb in r.memory_mb.items()
    ]
    head = [
        f"Stand-in over HTTP (ollama client) vs direct llama-cpp-python / onnxruntime: {r.rounds} A/B rounds, medians",
        f"chat: prompts of {min(r.prompt_tokens)}-{max(r.prompt_tokens)} tokens, num_predict {r.num_predict}, greedy; "
        f"generated {min(r.generated_tokens)}-{max(r.generated_tokens)} tokens; identical text {r.same_text}/{r.rounds}",
        f"llama.cpp on both sides: {r.chat_settings}",
        f"cold prompts: each shares at most {r.shared_tokens} tokens (the chat template's opening) with the one before, "
        "reused alike on both sides",
        f"embed: {r.embed_chunks} workshop chunks, requests of {r.batch_size}, onnxruntime runs of {EMBED_RUN_ROWS} rows on both sides; max |vector difference| {r.embed_max_abs_diff:.1e}",
        f"measured under {r.load}",
        "",
    ]
    return "\n".join(head) + table(
        ["metric", "stand-in [min-max]", "direct [min-max]", "stand-in vs direct", "target", "result"], rows
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (it reports; it does not fail on a MISS)."""
    parser = argparse.ArgumentParser(prog="python -m bench.stand_in", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-predict", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--embed-chunks", type=int, default=320)
    parser.add_argument("--threads", type=int, help="llama.cpp threads on both sides (default: the stand-in's)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--embedders", action="store_true", help="only all-minilm vs multilingual-e5-small")
    args = parser.parse_args(argv)
    if args.embedders:
        from bench.embedders import compare_embedders  # its own module; it reuses this one's timing helpers

        print(compare_embedders(args.rounds, args.embed_chunks))
        return 0
    report = run(args.rounds, args.num_predict, args.prompt_tokens, args.embed_chunks, threads=args.threads)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), **report.derived()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
