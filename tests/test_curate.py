"""Curation steps, each against the mechanism it names."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from synthaug import Pipeline, Step
from synthaug.pipeline import BackendSpec
from synthaug.steps.context import StepContext, StepStats
from synthaug.steps.curate import quality
from synthaug.steps.curate.dedup import ExactDedup, MinHashDedup, optimal_bands
from synthaug.steps.curate.pii import PIIRedact
from synthaug.steps.curate.rate import LLMRate
from synthaug.steps.curate.semantic import SemanticDedup
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl


class Side:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def write(self, kind: str, row: dict[str, Any]) -> None:
        self.rows.append((kind, row))


def apply(step: Step, texts: list[str]) -> tuple[list[dict[str, Any]], Side, StepStats]:
    side, stats = Side(), StepStats("s")
    ctx = StepContext(label="s", recipe="t", seed=0, stats=stats, side=side)

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i, text in enumerate(texts):
            yield {"text": text, "_meta": {"id": f"r{i}"}}

    async def go() -> list[dict[str, Any]]:
        return [r async for r in step.run(source(), ctx)]

    return asyncio.run(go()), side, stats


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["_meta"]["id"] for r in records]


def essay(seed: int, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(5000)}" for _ in range(n)]


def test_exact_dedup_normalizes_and_names_the_cluster() -> None:
    kept, side, _ = apply(ExactDedup(), ["Hello, World!", "hello   world", "Goodbye world"])
    assert ids(kept) == ["r0", "r2"] and kept[0]["_meta"]["cluster"] == "r0"
    [(kind, row)] = side.rows
    assert kind == "dropped" and row["reason"] == "exact duplicate"
    assert row["record"]["_meta"]["cluster"] == "r0"


@pytest.mark.parametrize("workers", [1, 2])
def test_minhash_drops_near_copies_only(workers: int) -> None:
    base = essay(1)
    near = list(base)
    for position in (10, 150, 290):
        near[position] = "changed"
    texts = [" ".join(base), " ".join(essay(2)), " ".join(near), " ".join(essay(3)),
             " ".join(base[:150] + essay(4, 150))]  # half shared: Jaccard far below 0.8
    kept, side, stats = apply(MinHashDedup(threshold=0.8, workers=workers, batch_size=2), texts)
    assert ids(kept) == ["r0", "r1", "r3", "r4"]
    assert [row["record"]["_meta"]["cluster"] for _, row in side.rows] == ["r0"]
    assert stats.notes["duplicates"] == 1


def test_banding_follows_the_threshold() -> None:
    low, high = optimal_bands(0.5, 128), optimal_bands(0.9, 128)
    assert low[0] > high[0] and low[0] * low[1] <= 128  # lower threshold: more, shorter bands


def test_semantic_dedup_prunes_within_clusters() -> None:
    texts = ["The cat sat on the warm mat by the door.",
             "The cat sat on the warm mat near the door.",
             "Quarterly revenue grew eight percent on strong cloud sales.",
             "Volcanic eruptions inject sulfur dioxide into the stratosphere."]
    kept, side, _ = apply(SemanticDedup(eps=0.15, clusters=2), texts)  # static: 0.91
    assert len(kept) == 3 and {"r2", "r3"} <= set(ids(kept))
    [(_, row)] = side.rows
    assert row["reason"] == "semantic duplicate" and row["record"]["_meta"]["cluster"] in (
        "r0", "r1")


def test_quality_filters_drop_with_reasons() -> None:
    cases = [
        (quality.RepetitionFilter(), "line one\nline one\nline one\nline two", "repeated lines"),
        (quality.RepetitionFilter(), "buy now " * 40, "repeated 2-gram"),
        (quality.LanguageFilter(languages=["en"]),
         "Le chat dort sur le canapé depuis ce matin.", "language fr"),
        (quality.RefusalFilter(), "As an AI language model, I cannot do that.", "refusal"),
        (quality.NonPrintableFilter(), "ok\x00\x01\x02\x03text", "non-printable characters"),
    ]
    good = "The quick brown fox jumps over the lazy dog near the river bank today."
    for step, bad, reason in cases:
        kept, side, _ = apply(step, [good, bad])
        assert ids(kept) == ["r0"], reason
        assert side.rows[0][1]["reason"] == reason


def test_pii_is_redacted_and_counted() -> None:
    text = ("Mail jane.roe@example.org or call +1 415-555-0132; card 4111 1111 1111 1111 "
            "from 10.1.2.3")
    [out], _, _ = apply(PIIRedact(), [text])
    assert "jane.roe" not in out["text"] and "4111" not in out["text"]
    assert "<EMAIL_ADDRESS>" in out["text"] and "<CREDIT_CARD>" in out["text"]
    assert out["_meta"]["pii"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1,
                                   "IP_ADDRESS": 1}


def test_llm_rating_then_threshold(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.enqueue(Reply(text="4. Correct and complete."), Reply(text="Score: 2 - vague."))
    data = write_jsonl(tmp_path / "in.jsonl", [
        {"instruction": "Add 2 and 2.", "output": "4"},
        {"instruction": "Explain gravity.", "output": "It is a thing."}])
    backend = BackendSpec(use="openai", with_={"base_url": server.url, "model": "judge",
                                               "concurrency": 1})
    pipeline = Pipeline.from_steps(LLMRate(), quality.ScoreFilter(field="score", min=3),
                                   backends={"default": backend})
    run(pipeline, tmp_path / "out", data)
    [kept] = read_jsonl(tmp_path / "out" / "records.jsonl")
    [dropped] = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert (kept["score"], kept["score_reason"]) == (4, "Correct and complete")
    assert dropped["reason"] == "score < 3" and dropped["record"]["score"] == 2
    assert "Explain gravity." in server.calls[1]["messages"][0]["content"]


@pytest.mark.model
def test_minilm_embedder_from_its_package() -> None:
    texts = ["The cat sat on the warm mat by the door.",
             "A cat was sitting on the warm mat near the door.",
             "Quarterly revenue grew eight percent on strong cloud sales."]
    kept, side, _ = apply(SemanticDedup(embedder="minilm", eps=0.1, clusters=1), texts)
    assert len(kept) == 2 and side.rows[0][1]["reason"] == "semantic duplicate"
    from synthaug.embed import get_embedder

    vectors = get_embedder("minilm").encode(texts)
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > 0.9 > 0.2 > float(vectors[0] @ vectors[2])


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_minhash_finds_copies_within_and_across_batches(batch_size: int) -> None:
    docs = [" ".join(essay(i)) for i in range(6)]
    step = MinHashDedup(threshold=0.8, batch_size=batch_size)
    kept, side, _ = apply(step, [docs[0], docs[1], docs[0], docs[2], docs[3], docs[1],
                                 docs[4], docs[5], docs[4], docs[2]])
    assert ids(kept) == ["r0", "r1", "r3", "r4", "r6", "r7"]
    assert [row["record"]["_meta"]["cluster"] for _, row in side.rows] == [
        "r0", "r1", "r6", "r3"]


@pytest.mark.parametrize(("text", "word", "kind"), [
    ("The tree was tall.", "tree", "noun"), ("Her knees hurt.", "knee", "noun"),
    ("They were free.", "free", "adjective"), ("We agreed.", "agree", "verb"),
    ("He ran home.", "run", "verb"), ("It stopped.", "stop", "verb"),
    ("She carried it.", "carry", "verb"), ("The mice hid.", "mouse", "noun"),
    ("A bigger dog.", "big", "adjective"),
])
def test_required_words_match_their_inflections(text: str, word: str, kind: str) -> None:
    from synthaug.steps.curate.checks import contains_word

    assert contains_word(text, word, kind)


@pytest.mark.parametrize(("text", "word", "kind"), [
    ("A tea party.", "tree", "noun"), ("He is a runner.", "run", "verb"),
    ("Knowledge helps.", "know", "verb"), ("Free the bird.", "tree", "noun"),
])
def test_other_words_sharing_letters_do_not_count(text: str, word: str, kind: str) -> None:
    from synthaug.steps.curate.checks import contains_word

    assert not contains_word(text, word, kind)
