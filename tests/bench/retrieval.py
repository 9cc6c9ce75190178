"""Retrieval quality of the workshop's own ingest and search on a BEIR dataset, beside the published MTEB figure.

    .venv/bin/python -m tests.bench.retrieval DATASET_DIR [--limit-docs N] [--limit-queries N] [--json PATH]

DATASET_DIR holds corpus.jsonl, queries.jsonl and qrels/test.tsv (BEIR format), e.g. ../shared/datasets/scifact.
(a) one vector per document, title + " " + text cut by the model at 256 tokens, as the published MTEB run;
(b) the workshop's chunked pipeline (chunk_documents with the lesson defaults), a document scored by its best chunk.
Embeddings go through the Ollama API (official client) to a private stand-in on a free port, or to OLLAMA_HOST
when WORKSHOP_BENCH_USE_OLLAMA=1; vectors live in embedded Qdrant (:memory:). As in BEIR/MTEB, only the test
queries are scored, with the graded relevance of the qrels, and a document with the query's own id is left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import ollama
from qdrant_client import QdrantClient, models

from helpers.chunking import Chunk, chunk_documents, count_tokens
from helpers.config import EMBED_MODEL, read_settings
from helpers.corpus import Document
from helpers.evaluation import dedupe, ndcg_at_k, recall_at_k
from helpers.index import chunk_payload, embed_texts, embedding_text, ensure_collection, point_id
from helpers.offline.models import EMBED_MAX_TOKENS
from helpers.rag import retrieve
from tests.bench.common import load_note, private_stand_in, progress, table

DATASET_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
BATCH_SIZE = 32
DEPTH = 100  # documents ranked per query: enough for recall@100
ACCEPTANCE_NDCG10 = {"scifact": 0.635}  # the bar for (a), per dataset folder name
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


def ingest(qdrant: QdrantClient, client: ollama.Client, model: str, collection: str, chunks: Sequence[Chunk]) -> float:
    """Embed and upsert chunks with the workshop's helpers.index functions; returns seconds taken."""
    start = time.perf_counter()
    vectors = embed_texts(client, model, [embedding_text(c) for c in chunks], BATCH_SIZE, progress=True)
    ensure_collection(qdrant, collection, len(vectors[0]))
    points = [models.PointStruct(id=point_id(c.id), vector=v, payload=chunk_payload(c)) for c, v in zip(chunks, vectors)]
    for i in range(0, len(points), 256):
        qdrant.upsert(collection, points=points[i : i + 256], wait=True)
    return time.perf_counter() - start


def ranked_docs(qdrant: QdrantClient, client: ollama.Client, model: str, collection: str, query_id: str,
                text: str, limit: int) -> tuple[list[str], bool]:
    """The top DEPTH document ids by their best chunk (helpers.rag.retrieve), and whether the query's own id was dropped."""
    ranked = dedupe([h.doc_id for h in retrieve(qdrant, client, collection, model, text, k=limit)])
    return [d for d in ranked if d != query_id][:DEPTH], query_id in ranked


def evaluate(qdrant: QdrantClient, client: ollama.Client, model: str, collection: str, name: str,
             chunks: Sequence[Chunk], data: Dataset) -> Result:
    """Ingest one configuration into its own collection, run every test query, and score the rankings."""
    progress(f"{name}: embedding {len(chunks)} texts from {len(data.docs)} documents")
    ingest_s = ingest(qdrant, client, model, collection, chunks)
    limit = (DEPTH + 1) * (max(c.index for c in chunks) + 1)  # chunks enough to hold DEPTH + 1 documents
    ndcg, recall, own_hits = [], [], 0
    start = time.perf_counter()
    for i, (query_id, text) in enumerate(data.queries.items(), 1):
        ranked, own = ranked_docs(qdrant, client, model, collection, query_id, text, limit)
        own_hits += own
        ndcg.append(ndcg_at_k(ranked, data.qrels[query_id], 10))
        recall.append(recall_at_k(ranked, set(data.qrels[query_id]), 100))
        if i % 50 == 0:
            progress(f"{name}: {i}/{len(data.queries)} queries")
    search_s = time.perf_counter() - start
    return Result(name, len(chunks), statistics.fmean(ndcg), statistics.fmean(recall), ingest_s, search_s,
                  len(data.docs) / ingest_s, len(data.queries) / search_s, own_hits)


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
    facts = (f"{split} of {len(data.docs)} documents are split into several chunks; (a) truncates {long_docs} "
             f"documents at {EMBED_MAX_TOKENS} tokens")
    if abs(delta) < 0.005:
        return f"(b) - (a) = {delta:+.4f} nDCG@10, within noise: {facts}, (b) reads all of them."
    if delta < 0:
        return (f"(b) - (a) = {delta:+.4f} nDCG@10: {facts}; a claim tends to match an abstract as a whole, and "
                "(b) scores each document by one chunk, which carries only part of it.")
    return (f"(b) - (a) = {delta:+.4f} nDCG@10: {facts}; (b) also reads the text past the cut and matches a claim "
            "against the one passage that states it.")


def run(folder: Path, limit_docs: int | None = None, limit_queries: int | None = None, url: str | None = None) -> dict:
    """Both configurations on the dataset (embedding with the stand-in at url if given); every number printed."""
    started, load_at_start = time.perf_counter(), load_note()
    data = load_dataset(folder, limit_docs, limit_queries)
    whole, chunked = whole_documents(data.docs), chunk_documents(data.docs)
    configs = [("a", "(a) one vector per document", whole), ("b", "(b) workshop chunks, best chunk per doc", chunked)]
    with embedding_backend(url) as (base_url, model, backend):
        client = ollama.Client(host=base_url)
        qdrant = QdrantClient(":memory:")
        results = [evaluate(qdrant, client, model, *config, data) for config in configs]
    reference = published_reference(folder)
    return {"dataset": data.name, "path": str(folder.resolve()), "documents": len(data.docs),
            "queries": len(data.queries), "subset": limit_docs is not None or limit_queries is not None,
            "backend": backend, "embed_model": model, "batch_size": BATCH_SIZE,
            "results": [asdict(r) for r in results],
            "explanation": explain(*results, data, chunked),
            "reference": asdict(reference) if reference else None,
            "acceptance_ndcg10": ACCEPTANCE_NDCG10.get(data.name.lower()),
            "wall_s": time.perf_counter() - started,
            "load": f"{load_at_start} at the start, {load_note()} at the end"}


def verdict(report: dict) -> str:
    """PASS/MISS of (a) against the acceptance bar, or why there is none."""
    bar = report["acceptance_ndcg10"]
    if bar is None:
        return "no acceptance bar for this dataset"
    if report["subset"]:
        return f"bar {bar} applies to the full dataset only (this run used a subset)"
    return f"{'PASS' if report['results'][0]['ndcg10'] >= bar else 'MISS'} (bar >= {bar})"


def format_report(report: dict) -> str:
    """The results table with the published figure and the acceptance bar."""
    rows = [[r["name"], str(r["vectors"]), f"{r['ndcg10']:.4f}", f"{r['recall100']:.4f}", f"{r['docs_per_s']:.1f}",
             f"{r['queries_per_s']:.1f}"] for r in report["results"]]
    ref = report["reference"]
    if ref:
        rows.append([f"published {REFERENCE_MODEL} (MTEB)", "-", f"{ref['ndcg10']:.4f}", f"{ref['recall100']:.4f}", "-", "-"])
    if report["acceptance_ndcg10"] is not None:
        rows.append(["acceptance bar for (a)", "-", f">= {report['acceptance_ndcg10']}", "-", "-", "-"])
    a, b = report["results"]
    lines = [
        f"Retrieval on {report['dataset']} ({report['path']}): {report['documents']} documents, "
        f"{report['queries']} test queries{' (subset)' if report['subset'] else ''}",
        f"embeddings: {report['embed_model']} via {report['backend']}, batch {report['batch_size']}; "
        f"Qdrant embedded (:memory:), cosine",
        "",
        table(["configuration", "vectors", "nDCG@10", "recall@100", "ingest docs/s", "queries/s"], rows),
        "",
        f"(a) vs acceptance bar: {verdict(report)}",
        report["explanation"],
        f"published figure from: {ref['source'] if ref else 'none found'}",
        f"query's own id left out of its ranking, as BEIR/MTEB do: affected {a['own_id_excluded']} (a) / {b['own_id_excluded']} (b) queries",
        f"ingest = embedding + upsert; wall time {report['wall_s']:.0f} s, measured under {report['load']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on DATASET_DIR and print the table (it reports; it does not fail on a MISS)."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")
    parser.add_argument("--limit-docs", type=int, help="keep the first N documents (plus every judged one)")
    parser.add_argument("--limit-queries", type=int, help="keep the first N test queries")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    missing = [f for f in DATASET_FILES if not (args.dataset / f).is_file()]
    if missing:
        parser.error(f"{args.dataset} is not a BEIR-format dataset folder: missing {', '.join(missing)}")
    report = run(args.dataset, args.limit_docs, args.limit_queries)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
