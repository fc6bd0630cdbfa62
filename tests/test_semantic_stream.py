"""Semantic dedup in bounded memory: spooled to disk, same result as the in-memory algorithm
with exact k-means, mini-batch k-means over blocks for large inputs."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans

from synthaug.embed import get_embedder
from synthaug.steps.context import StepContext, StepStats
from synthaug.steps.curate.semantic import SemanticDedup

DATA = Path(__file__).resolve().parent.parent / "src" / "synthaug" / "data"
EPS = 0.1


class Side:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, kind: str, row: dict[str, Any]) -> None:
        self.rows.append(row)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], set[int]]:
    """600 sentences from 8 topic vocabularies, a quarter with a one-word-changed copy."""
    words = sorted({w.lower() for f in sorted(DATA.glob("*.jsonl"))
                    for w in re.findall(r"[A-Za-z]{4,}", f.read_text())})
    rng = random.Random(0)
    rng.shuffle(words)
    topics = [words[i * 250:(i + 1) * 250] for i in range(8)]
    texts: list[str] = []
    planted: set[int] = set()
    for i in range(480):
        base = [rng.choice(topics[i % 8]) for _ in range(16)]
        texts.append(" ".join(base))
        if i % 4 == 0:
            base[rng.randrange(16)] = rng.choice(topics[i % 8])
            texts.append(" ".join(base))
            planted.add(len(texts) - 1)
    return texts, planted


def dedup(texts: list[str], out_dir: Path | None = None, **options: Any
          ) -> tuple[set[int], list[dict[str, Any]], SemanticDedup, StepContext]:
    step = SemanticDedup(eps=EPS, **options)
    ctx = StepContext(label="s", recipe="t", seed=0, stats=StepStats("s"), side=Side(),
                      out_dir=out_dir)

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i, text in enumerate(texts):
            yield {"text": text, "_meta": {"id": i}}

    async def kept() -> set[int]:
        return {r["_meta"]["id"] async for r in step.run(source(), ctx)}

    result = asyncio.run(kept())
    return result, ctx.side.rows, step, ctx  # type: ignore[attr-defined]


def in_memory(texts: list[str]) -> set[int]:
    """The algorithm the step replaced: every vector held, exact k-means, greedy pruning."""
    vectors = get_embedder("static").encode(texts)
    k = max(1, round(len(texts) ** 0.5))
    labels = KMeans(k, n_init=3, random_state=0).fit_predict(vectors)
    keep = [True] * len(texts)
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        order = members[np.argsort(vectors[members] @ vectors[members].mean(axis=0))]
        kept: list[int] = []
        for index in order:
            if kept and (vectors[kept] @ vectors[index]).max() > 1 - EPS:
                keep[index] = False
                continue
            kept.append(int(index))
    return {i for i, k in enumerate(keep) if k}


def resolved(planted: set[int], kept: set[int]) -> int:
    """Planted pairs of which exactly one side was kept."""
    return sum((i in kept) != (i - 1 in kept) for i in planted)


def test_spooled_exact_path_matches_the_in_memory_algorithm(
        corpus: tuple[list[str], set[int]], tmp_path: Path) -> None:
    texts, planted = corpus
    kept, dropped, _, _ = dedup(texts, tmp_path, batch_size=100)
    assert kept == in_memory(texts)
    assert resolved(planted, kept) >= 0.8 * len(planted)
    for row in dropped:  # each drop names a kept record as the one it duplicates
        assert row["record"]["_meta"]["cluster"] in kept


def test_records_and_vectors_wait_on_disk_not_in_memory(
        corpus: tuple[list[str], set[int]], tmp_path: Path) -> None:
    texts, _ = corpus
    step = SemanticDedup(eps=EPS, batch_size=64)
    ctx = StepContext(label="s", recipe="t", seed=0, stats=StepStats("s"), side=Side(),
                      out_dir=tmp_path)
    for i, text in enumerate(texts[:200]):
        list(step.observe({"text": text, "_meta": {"id": i}}, ctx))
    [folder] = list((tmp_path / ".spool").iterdir())
    assert step._spool is not None and step._spool.count == 200
    # 3 batches of 64 embedded so far, float32 rows of the embedder's width
    assert (folder / "vectors.f32").stat().st_size == 192 * 4 * step._spool.dim
    assert len(step._texts) == 8  # only the batch not yet embedded is held
    kept = list(step.finish(ctx))
    assert len(kept) + len(ctx.side.rows) == 200  # type: ignore[attr-defined]
    assert not folder.exists()  # the spool is removed once the stream is out


def test_mini_batch_clustering_for_large_inputs(corpus: tuple[list[str], set[int]]) -> None:
    texts, planted = corpus
    exact, _, _, _ = dedup(texts)
    mini, dropped, _, _ = dedup(texts, exact_up_to=0, batch_size=64)
    # only planted copies are close enough to drop; clustering decides how many pairs meet
    assert {row["record"]["_meta"]["id"] for row in dropped} <= planted | {
        i - 1 for i in planted}
    assert resolved(planted, mini) >= 0.9 * resolved(planted, exact)
    reduced, _, _, _ = dedup(texts, exact_up_to=0, batch_size=64, dims=32)
    assert resolved(planted, reduced) >= 0.8 * resolved(planted, exact)


def test_an_upstream_error_leaves_no_spool_and_no_stale_state(
        corpus: tuple[list[str], set[int]], tmp_path: Path) -> None:
    texts, _ = corpus
    step = SemanticDedup(eps=EPS, batch_size=64)
    ctx = StepContext(label="s", recipe="t", seed=0, stats=StepStats("s"), side=Side(),
                      out_dir=tmp_path)

    async def failing() -> AsyncIterator[dict[str, Any]]:
        for i, text in enumerate(texts[:100]):
            yield {"text": text, "_meta": {"id": i}}
        raise RuntimeError("upstream broke")

    async def drain(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r async for r in step.run(stream, ctx)]

    with pytest.raises(RuntimeError, match="upstream broke"):
        asyncio.run(drain(failing()))
    assert list((tmp_path / ".spool").iterdir()) == []

    async def three() -> AsyncIterator[dict[str, Any]]:
        for i in (2, 3, 4):  # three originals, no planted copy among them
            yield {"text": texts[i], "_meta": {"id": i}}

    assert len(asyncio.run(drain(three()))) == 3  # nothing of the failed stream comes back


def test_spools_of_dead_processes_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".spool" / "spool-semantic-dedup-999999999-abc"
    stale.mkdir(parents=True)
    (stale / "records.jsonl").write_text("{}\n")
    kept, _, _, _ = dedup(["one text here", "another text there"], tmp_path)
    assert len(kept) == 2 and not stale.exists()

