"""Retrieval quality of the workshop's own ingest and search on a BEIR dataset, beside the published MTEB figure.

    .venv/bin/python -m bench.retrieval DATASET_DIR [--limit-docs N] [--limit-queries N] [--json PATH]

DATASET_DIR holds corpus.jsonl, queries.jsonl and qrels/test.tsv (BEIR format), e.g. ../shared/datasets/scifact.
(a) one vector per document, title + " " + text cut by the model at 256 tokens, as the published MTEB run;
(b) the workshop's chunked pipeline (chunk_documents with the lesson defaults), a document scored by its best chunk;
(c) BM25 over the same chunks (Qdrant's full-text index with scoring, helpers.hybrid.bm25_points);
(d) hybrid: (b) and (c) as two prefetch branches fused by RRF (helpers.rag.retrieve(..., hybrid=True)).
Chunk embeddings are cached under WORKSHOP_STATE_DIR/bench-cache, keyed by dataset, model, backend and chunking,
so a rerun skips the embedding (its ingest speed then reads "cached").
Embeddings go through the Ollama API (official client) to a private stand-in on a free port, or to OLLAMA_HOST
when WORKSHOP_BENCH_USE_OLLAMA=1; vectors live in embedded Qdrant (:memory:). As in BEIR/MTEB, only the test
queries are scored, with the graded relevance of the qrels, and a document with the query's own id is left out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ollama
from qdrant_client import QdrantClient, models

from bench.common import load_note, private_stand_in, progress, table
from helpers.chunking import Chunk, chunk_documents, count_tokens
from helpers.config import EMBED_MODEL, read_settings
from helpers.corpus import Document
from helpers.evaluation import dedupe, ndcg_at_k, recall_at_k
from helpers.hybrid import RRF_K, bm25_points, rrf
from helpers.index import embed_texts, embedding_text, ensure_collection, index_payload, point_id
from helpers.rag import retrieve, to_hit
from infra.standin.models import EMBED_MAX_TOKENS

DATASET_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
BATCH_SIZE = 32
DEPTH = 100  # documents ranked per query: enough for recall@100
ACCEPTANCE_NDCG10 = {"scifact": 0.635}  # the bar for (a), per dataset folder name
ACCEPTANCE_HYBRID_NDCG10 = {"scifact": 0.70}  # issue 9's bar for (d): above both published single-method figures
PUBLISHED_BM25 = {
    "scifact": (0.665, 0.679, "BEIR paper (Thakur et al. 2021) 0.665; Anserini BM25 flat/multifield 0.679")
}
BUILT_IN_REFERENCE = {"scifact": (0.6451, 0.925, "MTEB paper (Muennighoff et al. 2022, arXiv 2210.07316), built in")}
REFERENCE_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Dataset:
    """A BEIR dataset: documents, the test queries that have judgements, and their graded qrels."""

    name: str
    docs: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Reference:
    """A published figure to compare with, and where it came from."""

    ndcg10: float
    recall100: float
    source: str


@dataclass
class Result:
    """One configuration's quality and speed."""

    name: str
    vectors: int
    ndcg10: float
    recall100: float
    ingest_s: float
    search_s: float
    docs_per_s: float
    queries_per_s: float
    own_id_excluded: int  # queries whose own id came back as a document and was left out
    cached: bool = False  # the embeddings came from the on-disk cache: ingest speed not measured


def read_jsonl(path: Path) -> Iterator[dict]:
    """The JSON objects of a .jsonl file."""
    with open(path, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """query id -> {doc id: grade} for grades > 0, from a BEIR qrels .tsv with a header line."""
    qrels: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows, None)
        for query_id, doc_id, grade in rows:
            if float(grade) > 0:
                qrels.setdefault(query_id, {})[doc_id] = float(grade)
    return qrels


def load_dataset(folder: Path, limit_docs: int | None = None, limit_queries: int | None = None) -> Dataset:
    """The test split; limits keep the first queries, and the first documents plus every one they judge."""
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    texts = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    kept = [q for q in qrels if q in texts][:limit_queries]
    judged = {d for q in kept for d in qrels[q]}
    docs = []
    for row in read_jsonl(folder / "corpus.jsonl"):
        if limit_docs is None or len(docs) < limit_docs or row["_id"] in judged:
            docs.append(Document(row["_id"], row.get("title") or "", row.get("text") or ""))
    return Dataset(folder.resolve().name, docs, {q: texts[q] for q in kept}, {q: qrels[q] for q in kept})


def whole_documents(docs: Sequence[Document]) -> list[Chunk]:
    """One chunk per document; embedding_text gives title + newline + text, the same tokens as title + " " + text."""
    return [Chunk(f"{d.id}#0", d.id, 0, d.text, {"title": d.title, "section": ""}) for d in docs]


def published_reference(folder: Path) -> Reference | None:
    """The MTEB-paper figure for this dataset from ../reference_numbers/ if there, else a built-in one."""
    name = folder.resolve().name.lower()
    for path in sorted((folder.parent / "reference_numbers").glob(f"mtebpaper_{REFERENCE_MODEL}_*.json")):
        task = path.stem.split("_", 2)[2]
        if task.lower() == name:
            test = json.loads(path.read_text())["test"]
            return Reference(test["ndcg_at_10"], test["recall_at_100"], str(path))
    built_in = BUILT_IN_REFERENCE.get(name)
    return Reference(*built_in) if built_in else None


def cache_file(data: Dataset, model: str, backend: str, config: str, texts: Sequence[str]) -> Path:
    """Where the embeddings of these texts are cached: keyed by dataset, model, backend kind, config and the texts."""
    digest = hashlib.sha256("\x00".join([model, backend, config, *texts]).encode()).hexdigest()[:16]
    return read_settings().state_dir / "bench-cache" / f"{data.name}-{model.replace(':', '_')}-{config}-{digest}.npy"


def embed_cached(client: ollama.Client, model: str, texts: Sequence[str], path: Path) -> tuple[list, bool]:
    """The texts' embeddings from path if cached there, else embedded now and saved; and whether all were cached.

    Progress is saved every SAVE_EVERY texts to a .partial.npy beside it, so an interrupted run resumes there.
    """
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors.tolist(), True
    partial = path.with_suffix(".partial.npy")
    done = np.load(partial) if partial.is_file() else np.zeros((0, 0), dtype=np.float32)
    vectors = done.tolist()[: len(texts)]
    if vectors:
        progress(f"resuming from {len(vectors)} cached embeddings in {partial.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(len(vectors), len(texts), SAVE_EVERY):
        vectors.extend(
            embed_texts(client, texts[start : start + SAVE_EVERY], model=model, batch_size=BATCH_SIZE, progress=True)
        )
        save_npy(partial, vectors)
        progress(f"embedded {len(vectors)}/{len(texts)}")
    save_npy(path, vectors)
    partial.unlink(missing_ok=True)
    return vectors, False


def save_npy(path: Path, vectors: Sequence) -> None:
    """Write vectors as float32 .npy atomically (a temporary file, then a rename)."""
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(vectors, dtype=np.float32))
    tmp.replace(path)


def ingest(
    qdrant: QdrantClient,
    client: ollama.Client,
    model: str,
    collection: str,
    chunks: Sequence[Chunk],
    cache: Path | None = None,
) -> tuple[float, bool]:
    """Embed (or load cached vectors) and upsert chunks with helpers.index functions; (seconds taken, cached)."""
    start = time.perf_counter()
    texts = [embedding_text(c) for c in chunks]
    if cache is None:
        vectors, cached = embed_texts(client, texts, model=model, batch_size=BATCH_SIZE, progress=True), False
    else:
        vectors, cached = embed_cached(client, model, texts, cache)
    ensure_collection(qdrant, collection, size=len(vectors[0]))
    points = [
        models.PointStruct(id=point_id(c.id), vector=v, payload=index_payload(c)) for c, v in zip(chunks, vectors)
    ]
    for i in range(0, len(points), 256):
        qdrant.upsert(collection, points=points[i : i + 256], wait=True)
    return time.perf_counter() - start, cached


SAVE_EVERY = 640  # texts embedded between two saves of the partial cache
CHECKED_FUSIONS = 20  # queries on which the client-side fusion of (d) is checked against Qdrant's own, and timed


def ranked_docs(
    qdrant: QdrantClient, client: ollama.Client, model: str, collection: str, query_id: str, text: str, limit: int
) -> tuple[list[str], bool]:
    """The top DEPTH document ids by their best chunk (helpers.rag.retrieve), and whether the query's own id was dropped."""
    ranked = dedupe([h.doc_id for h in retrieve(client, qdrant, collection, text, embed_model=model, k=limit)])
    return [d for d in ranked if d != query_id][:DEPTH], query_id in ranked


def to_docs(chunk_ids: Sequence[str], doc_of: dict[str, str], query_id: str) -> tuple[list[str], bool]:
    """Chunk ids best first -> the top DEPTH document ids by best chunk, and whether the query's own id was dropped."""
    ranked = dedupe([doc_of[c] for c in chunk_ids])
    return [d for d in ranked if d != query_id][:DEPTH], query_id in ranked


def score_rows(
    names: Sequence[str],
    rankings: dict[str, list[list[str]]],
    data: Dataset,
    chunks: Sequence[Chunk],
    ingest_s: float,
    cached: bool,
    seconds: dict[str, float],
) -> list[Result]:
    """One Result per row from its document rankings (one per test query, in order)."""
    results = []
    for name, ranked_lists in rankings.items():
        ndcg, recall, own = [], [], 0
        for (query_id, _), (ranked, dropped) in zip(data.queries.items(), ranked_lists):
            own += dropped
            ndcg.append(ndcg_at_k(ranked, data.qrels[query_id], k=10))
            recall.append(recall_at_k(ranked, set(data.qrels[query_id]), k=100))
        results.append(
            Result(
                name,
                len(chunks),
                statistics.fmean(ndcg),
                statistics.fmean(recall),
                ingest_s,
                seconds[name],
                len(data.docs) / ingest_s,
                len(data.queries) / seconds[name],
                own,
                cached,
            )
        )
    return results


def evaluate_whole(qdrant: QdrantClient, client: ollama.Client, model: str, data: Dataset, backend: str) -> Result:
    """(a): one vector per document, dense search only."""
    chunks = whole_documents(data.docs)
    progress(f"(a): embedding {len(chunks)} texts from {len(data.docs)} documents")
    ingest_s, cached = ingest(
        qdrant, client, model, "a", chunks, cache_file(data, model, backend, "a", [embedding_text(c) for c in chunks])
    )
    limit, lists, start = DEPTH + 1, [], time.perf_counter()
    for query_id, text in data.queries.items():
        lists.append(ranked_docs(qdrant, client, model, "a", query_id, text, limit))
    name = "(a) one vector per document"
    return score_rows([name], {name: lists}, data, chunks, ingest_s, cached, {name: time.perf_counter() - start})[0]


def evaluate_chunks(
    qdrant: QdrantClient, client: ollama.Client, model: str, data: Dataset, chunks: Sequence[Chunk], backend: str
) -> tuple[list[Result], dict]:
    """(b) dense, (c) BM25 and (d) their RRF on one chunked collection, in one pass over the queries.

    (d) fuses the (b) and (c) chunk rankings with helpers.hybrid.rrf, the formula of Qdrant's RRF, instead of a third
    search: local BM25 is the slow part and would run twice. On the first CHECKED_FUSIONS queries the real
    retrieve(..., hybrid=True) (one query_points, two prefetch branches) runs too: its ranking is compared and timed.
    """
    progress(f"(b): embedding {len(chunks)} texts from {len(data.docs)} documents")
    ingest_s, cached = ingest(
        qdrant, client, model, "b", chunks, cache_file(data, model, backend, "b", [embedding_text(c) for c in chunks])
    )
    limit = (DEPTH + 1) * (max(c.index for c in chunks) + 1)  # chunks enough to hold DEPTH + 1 documents
    doc_of = {c.id: c.doc_id for c in chunks}
    names = [
        "(b) workshop chunks, best chunk per doc",
        "(c) BM25 over the chunks (Qdrant)",
        "(d) hybrid: (b) + (c) fused by RRF",
    ]
    lists: dict[str, list] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    check = {"queries": 0, "same_top10_docs": 0, "qdrant_hybrid_s": 0.0, "ndcg10_qdrant": 0.0, "ndcg10_rrf": 0.0}
    for i, (query_id, text) in enumerate(data.queries.items(), 1):
        t0 = time.perf_counter()
        dense = [h.chunk_id for h in retrieve(client, qdrant, "b", text, embed_model=model, k=limit)]
        t1 = time.perf_counter()
        bm25 = [to_hit(p).chunk_id for p in bm25_points(qdrant, "b", text, k=limit)]
        t2 = time.perf_counter()
        fused = [c for c, _ in rrf([dense, bm25])][:limit]
        t3 = time.perf_counter()
        seconds[names[0]] += t1 - t0
        seconds[names[1]] += t2 - t1
        seconds[names[2]] += t3 - t0
        for name, ranking in zip(names, (dense, bm25, fused)):
            lists[name].append(to_docs(ranking, doc_of, query_id))
        if i <= CHECKED_FUSIONS:
            t4 = time.perf_counter()
            real = [h.chunk_id for h in retrieve(client, qdrant, "b", text, embed_model=model, k=limit, hybrid=True)]
            check["qdrant_hybrid_s"] += time.perf_counter() - t4
            check["queries"] += 1
            real_docs, ours = to_docs(real, doc_of, query_id)[0], lists[names[2]][-1][0]
            check["same_top10_docs"] += real_docs[:10] == ours[:10]  # ties (equal RRF scores) may order apart
            check["ndcg10_qdrant"] += ndcg_at_k(real_docs, data.qrels[query_id], k=10) / CHECKED_FUSIONS
            check["ndcg10_rrf"] += ndcg_at_k(ours, data.qrels[query_id], k=10) / CHECKED_FUSIONS
        if i % 50 == 0:
            progress(f"(b)-(d): {i}/{len(data.queries)} queries")
    return score_rows(names, lists, data, chunks, ingest_s, cached, seconds), check


def truthy(value: str | None) -> bool:
    """True for 1/true/yes/on (any case)."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def embedding_backend(url: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(base URL, model, description): the stand-in at url, or OLLAMA_HOST if WORKSHOP_BENCH_USE_OLLAMA=1, or our own."""
    if url:
        yield url, EMBED_MODEL, f"the workshop's stand-in at {url}"
        return
    if truthy(os.environ.get("WORKSHOP_BENCH_USE_OLLAMA")):  # a benchmark switch, not a workshop setting
        settings = read_settings()
        yield settings.ollama_host, settings.embed_model, f"Ollama at {settings.ollama_host}"
        return
    with private_stand_in() as url:
        yield url, EMBED_MODEL, f"the workshop's stand-in (private, {url})"


def explain(a: Result, b: Result, data: Dataset, chunks: Sequence[Chunk]) -> str:
    """One line on why (b) differs from (a)."""
    split = len({c.doc_id for c in chunks if c.index > 0})
    long_docs = sum(count_tokens(embedding_text(c)) + 2 > EMBED_MAX_TOKENS for c in whole_documents(data.docs))
    delta = b.ndcg10 - a.ndcg10
    facts = (
        f"{split} of {len(data.docs)} documents are split into several chunks; (a) truncates {long_docs} "
        f"documents at {EMBED_MAX_TOKENS} tokens"
    )
    if abs(delta) < 0.005:
        return f"(b) - (a) = {delta:+.4f} nDCG@10, within noise: {facts}, (b) reads all of them."
    if delta < 0:
        return (
            f"(b) - (a) = {delta:+.4f} nDCG@10: {facts}; a claim tends to match an abstract as a whole, and "
            "(b) scores each document by one chunk, which carries only part of it."
        )
    return (
        f"(b) - (a) = {delta:+.4f} nDCG@10: {facts}; (b) also reads the text past the cut and matches a claim "
        "against the one passage that states it."
    )


def run(
    folder: Path,
    limit_docs: int | None = None,
    limit_queries: int | None = None,
    url: str | None = None,
    skip_whole: bool = False,
) -> dict:
    """Every configuration on the dataset (embedding with the stand-in at url if given); every number printed."""
    started, load_at_start = time.perf_counter(), load_note()
    data = load_dataset(folder, limit_docs, limit_queries)
    chunked = chunk_documents(data.docs)
    with embedding_backend(url) as (base_url, model, backend):
        client = ollama.Client(host=base_url)
        qdrant = QdrantClient(":memory:")
        kind = "ollama" if backend.startswith("Ollama") else "stand-in"
        whole_row = [] if skip_whole else [evaluate_whole(qdrant, client, model, data, kind)]
        chunk_rows, fusion_check = evaluate_chunks(qdrant, client, model, data, chunked, kind)
        results = [*whole_row, *chunk_rows]
    reference = published_reference(folder)
    bm25_ref = PUBLISHED_BM25.get(data.name.lower())
    return {
        "dataset": data.name,
        "path": str(folder.resolve()),
        "documents": len(data.docs),
        "queries": len(data.queries),
        "subset": limit_docs is not None or limit_queries is not None,
        "backend": backend,
        "embed_model": model,
        "batch_size": BATCH_SIZE,
        "results": [asdict(r) for r in results],
        "explanation": "" if skip_whole else explain(results[0], results[1], data, chunked),
        "fusion_check": fusion_check,
        "reference": asdict(reference) if reference else None,
        "acceptance_ndcg10": ACCEPTANCE_NDCG10.get(data.name.lower()),
        "acceptance_hybrid_ndcg10": ACCEPTANCE_HYBRID_NDCG10.get(data.name.lower()),
        "published_bm25": list(bm25_ref) if bm25_ref else None,
        "wall_s": time.perf_counter() - started,
        "load": f"{load_at_start} at the start, {load_note()} at the end",
    }


def verdict(report: dict, prefix: str = "(a)", key: str = "acceptance_ndcg10") -> str:
    """PASS/MISS of the row named prefix... against its acceptance bar, or why there is none."""
    bar = report.get(key)
    row = next((i for i, r in enumerate(report["results"]) if r["name"].startswith(prefix)), None)
    if bar is None or row is None:
        return "no acceptance bar for this dataset" if bar is None else f"no {prefix} row in this run"
    if report["subset"]:
        return f"bar {bar} applies to the full dataset only (this run used a subset)"
    return f"{'PASS' if report['results'][row]['ndcg10'] >= bar else 'MISS'} (bar >= {bar})"


def format_report(report: dict) -> str:
    """The results table with the published figures and the acceptance bars."""
    rows = [
        [
            r["name"],
            str(r["vectors"]),
            f"{r['ndcg10']:.4f}",
            f"{r['recall100']:.4f}",
            "cached" if r.get("cached") else f"{r['docs_per_s']:.1f}",
            f"{r['queries_per_s']:.1f}",
        ]
        for r in report["results"]
    ]
    ref = report["reference"]
    if ref:
        rows.append(
            [f"published {REFERENCE_MODEL} (MTEB)", "-", f"{ref['ndcg10']:.4f}", f"{ref['recall100']:.4f}", "-", "-"]
        )
    bm25 = report.get("published_bm25")
    if bm25:
        rows.append(["published BM25 (BEIR / Anserini)", "-", f"{bm25[0]:.3f}-{bm25[1]:.3f}", "-", "-", "-"])
    if report["acceptance_ndcg10"] is not None:
        rows.append(["acceptance bar for (a)", "-", f">= {report['acceptance_ndcg10']}", "-", "-", "-"])
    if report.get("acceptance_hybrid_ndcg10") is not None:
        rows.append(["acceptance bar for (d)", "-", f">= {report['acceptance_hybrid_ndcg10']}", "-", "-", "-"])
    own = " / ".join(f"{r['own_id_excluded']} {r['name'][:3]}" for r in report["results"])
    check = report.get("fusion_check") or {}
    lines = [
        f"Retrieval on {report['dataset']} ({report['path']}): {report['documents']} documents, "
        f"{report['queries']} test queries{' (subset)' if report['subset'] else ''}",
        f"embeddings: {report['embed_model']} via {report['backend']}, batch {report['batch_size']}; "
        f"Qdrant embedded (:memory:), cosine; BM25: Qdrant text index with scoring (k1 1.2, b 0.75), "
        "word tokenizer, lowercase, no stemming or stopwords",
        "",
        table(["configuration", "vectors", "nDCG@10", "recall@100", "ingest docs/s", "queries/s"], rows),
        "",
        f"(a) vs acceptance bar: {verdict(report)}",
        f"(d) vs acceptance bar: {verdict(report, '(d)', 'acceptance_hybrid_ndcg10')}",
        *([report["explanation"]] if report["explanation"] else []),
        *(
            [
                f"(d) is helpers.hybrid.rrf (k {RRF_K}) over the (b) and (c) chunk rankings; Qdrant's own fusion "
                f"(retrieve(..., hybrid=True), one query_points with two prefetch branches) gave the same top-10 documents "
                f"on {check['same_top10_docs']} of the first {check['queries']} queries (equal RRF scores may be ordered "
                f"apart; mean nDCG@10 there {check['ndcg10_qdrant'] * CHECKED_FUSIONS / check['queries']:.4f} Qdrant vs "
                f"{check['ndcg10_rrf'] * CHECKED_FUSIONS / check['queries']:.4f} ours), at "
                f"{check['queries'] / check['qdrant_hybrid_s']:.1f} queries/s"
            ]
            if check.get("queries")
            else []
        ),
        f"published figure from: {ref['source'] if ref else 'none found'}" + (f"; BM25: {bm25[2]}" if bm25 else ""),
        f"query's own id left out of its ranking, as BEIR/MTEB do: affected {own} queries",
        f'ingest = embedding + upsert ("cached": embeddings read from the cache); wall time {report["wall_s"]:.0f} s, '
        f"measured under {report['load']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on DATASET_DIR and print the table (it reports; it does not fail on a MISS)."""
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")
    parser.add_argument("--limit-docs", type=int, help="keep the first N documents (plus every judged one)")
    parser.add_argument("--limit-queries", type=int, help="keep the first N test queries")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--skip-whole", action="store_true", help="leave out (a), one vector per document")
    args = parser.parse_args(argv)
    missing = [f for f in DATASET_FILES if not (args.dataset / f).is_file()]
    if missing:
        parser.error(f"{args.dataset} is not a BEIR-format dataset folder: missing {', '.join(missing)}")
    report = run(args.dataset, args.limit_docs, args.limit_queries, skip_whole=args.skip_whole)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
