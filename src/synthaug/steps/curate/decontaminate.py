"""Benchmark decontamination: n-gram overlap, embedding neighbours, and an optional LLM judge.

1. n-gram: any shared word n-gram (13 by default, as lm-evaluation-harness; GPT-3 used 8-13)
   with a benchmark item is a hit. Items shorter than n match on their whole text.
2. embedding: the nearest benchmark item by cosine similarity. A similarity >=
   `embedding_threshold` (near-verbatim) is a hit; >= `candidate_threshold` is a candidate.
3. judge (LLM Decontaminator, Yang et al., 2023): an LLM decides whether a candidate is the
   benchmark item rephrased. Without a judge, candidates are kept, annotated in
   `_meta.contamination_candidate` and counted: similarity alone does not separate a light
   rephrasing from a different problem on the same topic.
Every hit names the benchmark, the item and the method; hits are dropped or flagged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from synthaug import benchmarks
from synthaug.errors import BackendError, ParseError
from synthaug.records import Record, meta
from synthaug.steps.base import Requirements, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.textkey import TEXTLIKE, record_text, words
from synthaug.steps.judges import yes_no
from synthaug.steps.llm import Uses


class DecontaminateOptions(StepOptions):
    """Options of decontaminate."""

    fields: list[str] = ["text"]
    benchmarks: list[str] = ["gsm8k", "humaneval"]
    ngram: int = Field(13, ge=1)
    embedder: str | None = "static"
    embedding_threshold: float = 0.99
    candidate_threshold: float = 0.8
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


_JUDGE = ("Here are two texts. Say whether TEXT B is the same problem as TEXT A, possibly "
          "reworded, reordered, translated or with names and numbers changed. Answer only "
          "'yes' or 'no'.\n\nTEXT A:\n{a}\n\nTEXT B:\n{b}\n\nSame problem?")


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
            self._matrix = self._embedder.encode([i.text for i in self._items])

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
                found[i] = self._finding(hit[0], "ngram", float(hit[1]))
        rest = [i for i, f in enumerate(found) if f is None]
        if self._matrix is not None and rest:
            sims = self._embedder.encode([texts[i] for i in rest]) @ self._matrix.T
            best, scores = sims.argmax(axis=1), sims.max(axis=1)
            judged = await asyncio.gather(*(
                self._decide(texts[i], int(b), float(s), ctx)
                for i, b, s in zip(rest, best, scores, strict=True)))
            for i, finding in zip(rest, judged, strict=True):
                found[i] = finding
        return [out for r, f in zip(batch, found, strict=True)
                if (out := self._apply(r, f, ctx)) is not None]

    async def _decide(self, text: str, position: int, score: float,
                      ctx: StepContext) -> dict[str, Any] | None:
        o = self.options
        if score >= o.embedding_threshold:
            return self._finding(position, "embedding", score)
        if score < o.candidate_threshold:
            return None
        if o.judge is None:
            return self._finding(position, "candidate", score)
        assert self._items is not None
        prompt = _JUDGE.format(a=self._items[position].text, b=text)
        try:
            same, _ = await yes_no(ctx, prompt, key=None, salt=prompt)
        except (BackendError, ParseError) as exc:
            # the candidate is kept, flagged unjudged: the record itself is not lost
            ctx.stats.notes["judge failures"] += 1
            ctx.fail({"text": text, "candidate": self._finding(position, "candidate", score)},
                     f"judge: {exc}")
            return self._finding(position, "candidate", score)
        ctx.stats.notes["judged candidates"] += 1
        if same:
            return self._finding(position, "judge", score)
        return None

    def _finding(self, position: int, method: str, score: float) -> dict[str, Any]:
        assert self._items is not None
        item = self._items[position]
        return {"benchmark": item.benchmark, "item": item.item, "method": method,
                "score": round(score, 4)}

    def _apply(self, record: Record, finding: dict[str, Any] | None,
               ctx: StepContext) -> Record | None:
        if finding is None:
            return record
        if finding["method"] == "candidate":
            ctx.stats.notes["candidates (unjudged)"] += 1
            return {**record, "_meta": {**meta(record), "contamination_candidate": finding}}
        ctx.stats.notes[f"hits:{finding['benchmark']}:{finding['method']}"] += 1
        marked = {**record, "_meta": {**meta(record), "contamination": finding}}
        if self.options.action == "flag":
            return {**marked, "contamination": finding}
        ctx.drop(marked, f"contaminated ({finding['benchmark']})",
                 f"{finding['method']} match with {finding['benchmark']} {finding['item']}")
        return None
