"""helpers.metrics: records from real streamed calls, the DataFrame, Prometheus text, and cost arithmetic."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import QdrantClient, models

from helpers.metrics import CallRecord, MetricsLog, cost_usd, count_usage, generation_record

CHAT = "smollm2:135m"
EMBED = "all-minilm"
QUESTION = [{"role": "user", "content": "Name two colours of the sea."}]
OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 20}


def samples(text: str) -> dict[tuple, float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_record_from_a_real_stream_matches_the_final_chunk(client):
    log, seen = MetricsLog(), []

    def tee(stream):
        for chunk in stream:
            seen.append(chunk)
            yield chunk

    text, record = log.stream(
        tee(client.chat(model=CHAT, messages=QUESTION, stream=True, options=OPTIONS)), request_id="r1"
    )
    final = seen[-1]
    assert final.done and text == "".join(c.message.content for c in seen)
    assert record.prompt_tokens == final.prompt_eval_count > 0
    assert record.completion_tokens == final.eval_count > 0
    assert record.duration_s > 0 and 0 < record.ttft_s <= record.duration_s
    assert record.tokens_per_s == pytest.approx(final.eval_count / (final.eval_duration / 1e9))
    assert record.eval_s > 0 and record.prompt_eval_s > 0
    assert record.model == final.model and record.request_id == "r1" and log.records == [record]


def test_generation_record_by_hand(client):
    final = None
    for chunk in client.chat(model=CHAT, messages=QUESTION, stream=True, options=OPTIONS):
        final = chunk
    record = generation_record("generate", final, wall_s=1.5, ttft_s=0.25)
    assert (record.prompt_tokens, record.completion_tokens) == (final.prompt_eval_count, final.eval_count)
    assert record.duration_s == 1.5 and record.ttft_s == 0.25 and record.tokens_per_s > 0


def test_stream_without_final_piece_is_an_error():
    with pytest.raises(RuntimeError, match="final piece"):
        MetricsLog().stream(iter([]))


def test_dataframe_has_one_row_per_call(client):
    log = MetricsLog()
    qdrant = QdrantClient(":memory:")
    with log.timed("embed", model=EMBED, request_id="q1") as rec:
        response = client.embed(model=EMBED, input="Where is the clinic?")
        rec.prompt_tokens = response.prompt_eval_count
    vector = response.embeddings[0]
    qdrant.create_collection("t", vectors_config=models.VectorParams(size=len(vector), distance=models.Distance.COSINE))
    qdrant.upsert("t", points=[models.PointStruct(id=1, vector=vector, payload={})])
    with log.timed("search", model="qdrant", request_id="q1"):
        qdrant.query_points("t", query=vector, limit=1)
    log.stream(client.chat(model=CHAT, messages=QUESTION, stream=True, options=OPTIONS), request_id="q1")
    df = log.dataframe()
    assert list(df["stage"]) == ["embed", "search", "generate"] and len(df) == len(log.records) == 3
    assert (df["duration_s"] > 0).all() and set(df["request_id"]) == {"q1"}
    assert df.loc[0, "prompt_tokens"] > 0 and math.isnan(df.loc[0, "ttft_s"])
    assert list(df.columns) == list(CallRecord.__dataclass_fields__)


def test_empty_log_has_an_empty_dataframe_with_the_columns():
    df = MetricsLog().dataframe()
    assert len(df) == 0 and "ttft_s" in df.columns


def test_prometheus_text_has_the_right_totals():
    log = MetricsLog()
    for i in range(3):
        log.add(
            CallRecord(
                "generate", "m", duration_s=0.2 * (i + 1), prompt_tokens=100 + i, completion_tokens=10, ttft_s=0.1
            )
        )
    log.add(CallRecord("embed", "e", duration_s=0.01, prompt_tokens=7))
    log.add(CallRecord("search", "qdrant", duration_s=0.002))
    text = log.prometheus_text()
    got = samples(text)
    gen = (("model", "m"), ("stage", "generate"))
    assert got[("rag_tokens_total", (("direction", "prompt"),) + gen)] == 303
    assert got[("rag_tokens_total", (("direction", "completion"),) + gen)] == 30
    assert got[("rag_tokens_total", (("direction", "prompt"), ("model", "e"), ("stage", "embed")))] == 7
    assert got[("rag_stage_seconds_count", gen)] == 3
    assert got[("rag_stage_seconds_sum", gen)] == pytest.approx(1.2)
    assert got[("rag_time_to_first_token_seconds_count", (("model", "m"),))] == 3
    assert got[("rag_stage_seconds_count", (("model", "qdrant"), ("stage", "search")))] == 1
    assert not any(name == "rag_tokens_total" and ("stage", "search") in labels for name, labels in got)
    assert "# TYPE rag_tokens_total counter" in text and "# TYPE rag_stage_seconds histogram" in text


def test_cost_usd_arithmetic():
    assert cost_usd(1_000_000, 0, 0.15, 0.60) == pytest.approx(0.15)
    assert cost_usd(0, 1_000_000, 0.15, 0.60) == pytest.approx(0.60)
    assert cost_usd(2_000, 500, 0.15, 0.60) == pytest.approx(0.0003 + 0.0003)
    assert cost_usd(0, 0, 5, 15) == 0


@pytest.mark.slow
def test_count_usage_adds_a_non_streamed_calls_tokens(client):
    log = MetricsLog()
    with log.timed("rewrite", model=CHAT, request_id="r") as rec:
        response = client.chat(model=CHAT, messages=QUESTION, options=OPTIONS)
        count_usage(rec, response)
    assert rec.prompt_tokens == response.prompt_eval_count > 0
    assert rec.completion_tokens == response.eval_count > 0 and log.records == [rec]


@pytest.mark.slow
def test_should_stop_ends_a_real_stream_early(client):
    log, seen = MetricsLog(), []
    text, record = log.stream(
        client.chat(
            model=CHAT,
            messages=[{"role": "user", "content": "Tell a long story."}],
            stream=True,
            options={**OPTIONS, "num_predict": 300},
        ),
        on_text=seen.append,
        should_stop=lambda: len(seen) >= 5,
    )
    assert record.stopped and record.completion_tokens == 5 and text == "".join(seen[:5]) and text
    assert record.ttft_s is not None and log.records == [record]


def test_should_stop_closes_the_stream():
    """A fake stream (fast tier; the real one is above): stopping calls close(), which ends the HTTP response."""
    closed = []

    def chunks():
        try:
            while True:
                yield type("Chunk", (), {"response": "x", "done": False, "model": "m"})()
        finally:
            closed.append(True)

    text, record = MetricsLog().stream(
        chunks(), should_stop=lambda: len(text_seen) >= 2, on_text=(text_seen := []).append
    )
    assert closed == [True] and text == "xx" and record.stopped and record.model == "m"
