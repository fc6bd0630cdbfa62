"""Benchmark decontamination: n-gram overlap, embedding neighbours, and an optional LLM judge.

1. n-gram: any shared word n-gram (13 by default, as lm-evaluation-harness; GPT-3 used 8-13)
   with a benchmark item is a hit. Items shorter than n match on their whole text.
2. embedding: each record's `top_k` nearest benchmark items by cosine similarity (the LLM
   Decontaminator, Yang et al., 2023: top-k similar pairs, k = 1 in its tool). The nearest at
   >= `embedding_threshold` (near-verbatim) is a hit; the top-k pairs (optionally only those
   >= `candidate_threshold`) are the candidates.
3. judge: an LLM decides, pair by pair (nearest first, stopping at the first yes), whether a
   record is the benchmark item rephrased: at most `top_k` calls per record, so k x N for N
   records. Without a judge, candidates are kept, annotated in
   `_meta.contamination_candidates` (nearest first) and counted: similarity alone does not
   separate a light rephrasing from a different problem on the same topic.
Every hit names the benchmark, the item and the method; hits are dropped or flagged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from synthaug import benchmarks
from synthaug.errors import BackendError, ParseError
from synthaug.records import Record, meta
from synthaug.steps.base import Requirements, Scope, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.textkey import TEXTLIKE, record_text, words
from synthaug.steps.judges import yes_no
from synthaug.steps.llm import Uses

if TYPE_CHECKING:
    import numpy as np


class DecontaminateOptions(StepOptions):
    """Options of decontaminate."""

    fields: list[str] = ["text"]
    benchmarks: list[str] = ["gsm8k", "humaneval"]
    ngram: int = Field(13, ge=1)
    embedder: str | None = "static"
    embedding_threshold: float = 0.99
    top_k: int = Field(1, ge=1)  # nearest benchmark items judged per record
    candidate_threshold: float | None = None  # a similarity floor for candidates (None: none)
    judge: str | None = None  # a backend role; enables the LLM judge
    action: Literal["drop", "flag"] = "drop"
    batch_size: int = Field(256, ge=1)

    tuning: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    @field_validator("benchmarks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in benchmarks.PACKS and not Path(name).is_file():
                raise ValueError(f"unknown benchmark '{name}': use {sorted(benchmarks.PACKS)} "
                                 "or a JSONL path")
        return names


def _ngrams(tokens: list[str], n: int) -> list[int]:
    if len(tokens) <= n:
        return [hash(tuple(tokens))] if tokens else []
    return list(map(hash, zip(*(tokens[i:] for i in range(n)), strict=False)))


@cache
def benchmark_matrix(embedder: str, names: tuple[str, ...]) -> np.ndarray:
    """The unit embeddings of every item of the named packs (computed once per process)."""
    from synthaug.embed import get_embedder

    return get_embedder(embedder).encode([i.text for i in benchmarks.load(list(names))])


_JUDGE = ("Here are two texts. Say whether TEXT B is the same problem as TEXT A, possibly "
          "reworded, reordered, translated or with names and numbers changed. For two "
          "programs, compare what they are for, what they take and what they give back, not "
          "how they are written. Answer only 'yes' or 'no'.\n\nTEXT A:\n{a}\n\n"
          "TEXT B:\n{b}\n\nSame problem?")


class Decontaminate(Step[DecontaminateOptions]):
    """Finds records that copy or rephrase benchmark items."""

    Options: ClassVar[type[StepOptions]] = DecontaminateOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._items: list[benchmarks.BenchmarkItem] | None = None

    def uses(self) -> list[Uses]:
        return [Uses(self.options.judge)] if self.options.judge else []

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def scope(self) -> Scope:
        return "record"  # each record is checked against the benchmarks alone

    def prepare(self) -> None:
        """Load the benchmark packs and build the n-gram index and embeddings."""
        if self._items is not None:
            return
        self._items = benchmarks.load(self.options.benchmarks)
        self._index: dict[int, int] = {}
        for position, item in enumerate(self._items):
            for key in _ngrams(words(item.text), self.options.ngram):
                self._index.setdefault(key, position)
        self._matrix = None
        if self.options.embedder:
            from synthaug.embed import get_embedder

            self._embedder = get_embedder(self.options.embedder)
            self._matrix = benchmark_matrix(self.options.embedder,
                                            tuple(self.options.benchmarks))

    def ngram_hit(self, text: str) -> tuple[int, int] | None:
        """(item position, shared n-grams) of the item sharing most n-grams, if any."""
        hits: dict[int, int] = {}
        for key in _ngrams(words(text), self.options.ngram):
            position = self._index.get(key)
            if position is not None:
                hits[position] = hits.get(position, 0) + 1
        if not hits:
            return None
        best = max(hits, key=lambda p: hits[p])
        return best, hits[best]

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        await asyncio.to_thread(self.prepare)
        batch: list[Record] = []
        async for record in stream:
            batch.append(record)
            if len(batch) >= self.options.batch_size:
                for out in await self._batch(batch, ctx):
                    yield out
                batch = []
        for out in await self._batch(batch, ctx):
            yield out

    async def _batch(self, batch: list[Record], ctx: StepContext) -> list[Record]:
        texts = [record_text(r, self.options.fields) for r in batch]
        found: list[dict[str, Any] | None] = [None] * len(batch)
        for i, text in enumerate(texts):
            hit = self.ngram_hit(text)
            if hit:
                found[i] = self._finding(hit[0], float(hit[1]), "ngram")
        rest = [i for i, f in enumerate(found) if f is None]
        if self._matrix is not None and rest:
            nearest = self.nearest([texts[i] for i in rest])
            judged = await asyncio.gather(*(self._decide(texts[i], pairs, ctx)
                                            for i, pairs in zip(rest, nearest, strict=True)))
            for i, finding in zip(rest, judged, strict=True):
                found[i] = finding
        return [out for r, f in zip(batch, found, strict=True)
                if (out := self._apply(r, f, ctx)) is not None]

    def nearest(self, texts: list[str]) -> list[list[tuple[int, float]]]:
        """Each text's `top_k` nearest benchmark items as (position, cosine), nearest first."""
        import numpy as np

        assert self._matrix is not None
        sims = self._embedder.encode(texts) @ self._matrix.T
        k = min(self.options.top_k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        return [[(int(p), float(row[p])) for p in picks] for row, picks in zip(sims, top,
                                                                               strict=True)]

    async def _decide(self, text: str, pairs: list[tuple[int, float]],
                      ctx: StepContext) -> dict[str, Any] | None:
        """A hit (near-verbatim, or the judge's yes on a pair), candidates, or None."""
        o = self.options
        if pairs and pairs[0][1] >= o.embedding_threshold:
            return self._finding(*pairs[0], "embedding")
        floor = o.candidate_threshold
        pairs = [(p, s) for p, s in pairs if floor is None or s >= floor]
        if not pairs:
            return None
        if o.judge is None:
            return {"method": "candidate", "candidates": [self._finding(p, s, "candidate")
                                                          for p, s in pairs]}
        unjudged = []
        for position, score in pairs:
            same = await self._judge(text, position, score, ctx)
            if same:
                return self._finding(position, score, "judge")
            if same is None:
                unjudged.append(self._finding(position, score, "candidate"))
        return {"method": "candidate", "candidates": unjudged} if unjudged else None

    async def _judge(self, text: str, position: int, score: float,
                     ctx: StepContext) -> bool | None:
        """The judge's verdict on one pair; None if it could not give one (a failure row)."""
        assert self._items is not None
        prompt = _JUDGE.format(a=self._items[position].text, b=text)
        try:
            same, _ = await yes_no(ctx, prompt, key=None, salt=prompt)
        except (BackendError, ParseError) as exc:
            # the pair stays a candidate, flagged unjudged: the record itself is not lost
            ctx.stats.notes["judge failures"] += 1
            ctx.fail({"text": text, "candidate": self._finding(position, score, "candidate")},
                     f"judge: {exc}")
            return None
        ctx.stats.notes["judged pairs"] += 1
        return bool(same)

    def _finding(self, position: int, score: float, method: str) -> dict[str, Any]:
        assert self._items is not None
        item = self._items[position]
        return {"benchmark": item.benchmark, "item": item.item, "method": method,
                "score": round(score, 4)}

    def _apply(self, record: Record, finding: dict[str, Any] | None,
               ctx: StepContext) -> Record | None:
        if finding is None:
            return record
        if finding["method"] == "candidate":
            ctx.stats.notes["records with unjudged candidates"] += 1
            return {**record, "_meta": {**meta(record),
                                        "contamination_candidates": finding["candidates"]}}
        ctx.stats.notes[f"hits:{finding['benchmark']}:{finding['method']}"] += 1
        marked = {**record, "_meta": {**meta(record), "contamination": finding}}
        if self.options.action == "flag":
            return {**marked, "contamination": finding}
        ctx.drop(marked, f"contaminated ({finding['benchmark']})",
                 f"{finding['method']} match with {finding['benchmark']} {finding['item']}")
        return None
