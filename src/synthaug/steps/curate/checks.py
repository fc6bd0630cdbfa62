"""Checks on generated text: required words present (TinyStories), and faithfulness to a
source passage (Genie) by an LLM judge or, without one, a lexical support score."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from synthaug.errors import BackendError
from synthaug.records import Record
from synthaug.steps.base import Filter, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.evol import STOP_WORDS
from synthaug.streams import concurrent_map


def contains_word(text: str, word: str) -> bool:
    """True if `word` occurs in `text` as a word, allowing simple inflections (-s, -ed, -ing)."""
    stem = re.escape(word.lower().rstrip("e") if len(word) > 3 else word.lower())
    return re.search(rf"\b{stem}(?:e|es|s|d|ed|ing|ies|ied|er|est)?\b", text.lower()) is not None


class MustContainOptions(StepOptions):
    """Options of must-contain."""

    field: str = "story"
    word_fields: list[str] = ["noun", "verb", "adjective"]  # fields each holding a word


class MustContain(Filter[MustContainOptions]):
    """Drops records whose text misses the word held in any of `word_fields`."""

    Options: ClassVar[type[StepOptions]] = MustContainOptions

    def requires(self) -> set[str]:
        return {self.options.field, *self.options.word_fields}

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        text = str(record.get(o.field, ""))
        missing = [f for f in o.word_fields if not contains_word(text, str(record.get(f, "")))]
        return (False, f"missing the {missing[0]}") if missing else True


def support_score(answer: str, passage: str) -> float:
    """Share of the answer's content words that occur in the passage."""
    words = [w for w in re.findall(r"[a-z0-9]+", answer.lower()) if w not in STOP_WORDS]
    if not words:
        return 0.0
    source = set(re.findall(r"[a-z0-9]+", passage.lower()))
    return sum(w in source for w in words) / len(words)


_JUDGE = ("Passage:\n{passage}\n\nText:\n{answer}\n\nIs every claim in the text supported by "
          "the passage? Answer only 'yes' or 'no'.")


class FaithfulnessOptions(StepOptions):
    """Options of faithfulness."""

    passage_field: str = "passage"
    fields: list[str] = ["answer"]
    judge: str | None = None  # a backend role; without one, the lexical support score
    min_support: float = 0.6


class Faithfulness(Step[FaithfulnessOptions]):
    """Keeps records grounded in their passage; the score or verdict stays in the record."""

    Options: ClassVar[type[StepOptions]] = FaithfulnessOptions

    def requires(self) -> set[str]:
        return {self.options.passage_field, *self.options.fields}

    def provides(self) -> set[str]:
        return {"faithfulness"}

    def backend_roles(self) -> list[str]:
        return [self.options.judge] if self.options.judge else []

    async def check(self, record: Record, ctx: StepContext) -> Record | None:
        """The record with its faithfulness, or None (dropped, or failed)."""
        o = self.options
        answer = "\n".join(str(record.get(f, "")) for f in o.fields)
        passage = str(record[o.passage_field])
        verdict: dict[str, Any]
        if o.judge:
            try:
                supported = await ctx.judge(_JUDGE.format(passage=passage, answer=answer))
            except BackendError as exc:
                ctx.fail(record, str(exc))
                return None
            verdict = {"method": "judge", "supported": supported}
        else:
            score = support_score(answer, passage)
            verdict = {"method": "lexical", "score": round(score, 3),
                       "supported": score >= o.min_support}
        out = {**record, "faithfulness": verdict}
        if not verdict["supported"]:
            ctx.drop(out, f"unfaithful ({verdict['method']})")
            return None
        return out

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        window = 2 * ctx.client().concurrency if self.options.judge else 64
        async for out in concurrent_map(stream, lambda r: self.check(r, ctx), window):
            if out is not None:
                yield out
