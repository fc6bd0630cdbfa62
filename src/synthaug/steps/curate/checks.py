"""Checks on generated text: required words present (TinyStories), and faithfulness to a
source passage (Genie) by an LLM judge or, without one, a lexical support score."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from synthaug.records import Record
from synthaug.steps.base import Each, EachOptions, Filter, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.evol import STOP_WORDS
from synthaug.steps.judges import yes_no
from synthaug.steps.llm import Uses
from synthaug.template import text_field

_POS = {"noun": ("NOUN",), "verb": ("VERB",), "adjective": ("ADJ",), "adverb": ("ADV",)}


def word_forms(word: str, kind: str | None = None) -> set[str]:
    """`word` and its inflections (ran, runs, running for run; trees; bigger), from
    lemminflect's tables; `kind` (noun, verb, adjective, adverb) narrows the part of speech."""
    from lemminflect import getAllInflections, getAllInflectionsOOV, getAllLemmas

    given = word.lower().strip()
    forms = {given}
    for upos in _POS.get(kind or "", ("NOUN", "VERB", "ADJ", "ADV")):
        lemmas = {lemma for found in getAllLemmas(given, upos=upos).values() for lemma in found}
        for lemma in lemmas or {given}:
            table = getAllInflections(lemma, upos=upos) or \
                (getAllInflectionsOOV(lemma, upos=upos) if upos != "ADV" else {})
            forms |= {lemma} | {form.lower() for found in table.values() for form in found}
    return forms


def contains_word(text: str, word: str, kind: str | None = None) -> bool:
    """True if `text` uses `word` in any of its inflected forms (`kind`: its part of speech)."""
    tokens = set(re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower()))
    return not tokens.isdisjoint(word_forms(word, kind))


class MustContainOptions(StepOptions):
    """Options of must-contain."""

    field: str = "story"
    word_fields: list[str] = ["noun", "verb", "adjective"]  # fields each holding a word


class MustContain(Filter[MustContainOptions]):
    """Drops records whose text misses the word held in any of `word_fields` (inflected forms
    count: a field named noun, verb or adjective matches that part of speech's forms)."""

    Options: ClassVar[type[StepOptions]] = MustContainOptions

    def requires(self) -> Requirements:
        return {self.options.field: str, **dict.fromkeys(self.options.word_fields, str)}

    def keep(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        text = text_field(record, o.field)
        missing = [f for f in o.word_fields
                   if not contains_word(text, text_field(record, f), f)]
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


class FaithfulnessOptions(EachOptions):
    """Options of faithfulness."""

    passage_field: str = "passage"
    fields: list[str] = ["answer"]
    judge: str | None = None  # a backend role; without one, the lexical support score
    min_support: float = 0.6


class Faithfulness(Each[FaithfulnessOptions]):
    """Keeps records grounded in their passage; the score or verdict stays in the record."""

    Options: ClassVar[type[StepOptions]] = FaithfulnessOptions

    def requires(self) -> Requirements:
        return {self.options.passage_field: str, **dict.fromkeys(self.options.fields, str)}

    def provides(self) -> set[str]:
        return {"faithfulness"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.judge)] if self.options.judge else []

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        answer = "\n".join(text_field(record, f) for f in o.fields)
        passage = text_field(record, o.passage_field)
        verdict: dict[str, Any]
        if o.judge:
            supported, _ = await yes_no(ctx, _JUDGE.format(passage=passage, answer=answer),
                                        key=record)
            verdict = {"method": "judge", "supported": supported}
        else:
            score = support_score(answer, passage)
            verdict = {"method": "lexical", "score": round(score, 3),
                       "supported": score >= o.min_support}
        out = {**record, "faithfulness": verdict}
        if not verdict["supported"]:
            ctx.drop(out, f"unfaithful ({verdict['method']})")
            return []
        return [out]
