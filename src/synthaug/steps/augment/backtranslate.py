"""round-trip-translate: back-translation augmentation through pivot languages with a
round-trip fidelity filter (back-translation: Sennrich et al. 2016, arXiv:1511.06709; as
augmentation: Xie et al. 2020, UDA, arXiv:1904.12848).

1. Each record's text is translated into every pivot language (sampled, as UDA samples
   instead of decoding greedily to get diverse paraphrases), and each pivot text back into
   the source language, both by the step's model.
2. Fidelity filter per round trip, each drop counted by reason: a pivot text equal to the
   source was never translated; a round trip identical to the source (case and punctuation
   ignored) or with chrF above `max_chrf` adds nothing; one with chrF (sacrebleu, character
   n-gram F-score, 0-100) below `min_chrf`, or with an `embedder`, a cosine to the source
   below `min_similarity`, lost the meaning; one equal to a round trip kept before is a
   duplicate.
3. Kept round trips carry the source's fields, its label included; `augmentation` holds the
   pivot language, the pivot text, chrF and cosine; `_meta.parents` names the source and
   `_meta.calls` both translation calls. The original is kept too (`keep_original`).
"""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar

from pydantic import Field, model_validator

from synthaug.errors import MissingDependency
from synthaug.records import Record, content
from synthaug.steps.augment.paraphrase import embedder_of, normalized, text_and_label
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses
from synthaug.template import text_field

_SYSTEM = "You are a professional translator. You translate faithfully and completely."
_LEAD = re.compile(r"^\s*(?:here is the translation|translation)\s*(?:into \w+)?\s*:\s*",
                   re.IGNORECASE)


def translation_prompt(text: str, source: str, target: str) -> Prompt:
    """The chat request to translate `text` from `source` into `target`."""
    ask = (f"Translate this {source} text into {target}. Reply with the {target} translation "
           f"only, with no notes.\n\n{text}")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": ask}]


def cleaned(reply: str) -> str:
    """The translation in a reply: without a 'Translation:' lead or surrounding quotes."""
    return _LEAD.sub("", reply.strip()).strip().strip('"“”').strip()


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF of `hypothesis` against `reference` (0-100)."""
    try:
        import sacrebleu
    except ImportError:
        raise MissingDependency("sacrebleu", "the round-trip fidelity filter", "curate") from None
    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


class RoundTripOptions(EachOptions):
    """Options of round-trip-translate."""

    backend: str = "default"
    field: str = "text"
    label_field: str | None = "label"  # required on every input record (None: unlabelled)
    language: str = "English"  # the language of the source text
    pivots: list[str] = Field(default_factory=lambda: ["French", "German", "Chinese"],
                              min_length=1)
    sampling: Sampling = Sampling(temperature=0.9, max_tokens=256)
    min_chrf: float = Field(30.0, ge=0, le=100)  # below: the round trip lost the meaning
    max_chrf: float = Field(90.0, ge=0, le=100)  # above: (almost) a copy of the source
    embedder: str | None = "static"  # None: chrF alone judges fidelity
    min_similarity: float | None = Field(0.5, ge=-1, le=1)  # cosine to the source
    keep_original: bool = True

    @model_validator(mode="after")
    def _window(self) -> RoundTripOptions:
        if self.min_chrf >= self.max_chrf:
            raise ValueError("min_chrf must be below max_chrf")
        if any(p.strip().casefold() == self.language.strip().casefold() for p in self.pivots):
            raise ValueError(f"a pivot must differ from the source language {self.language}")
        return self


class RoundTripTranslate(Each[RoundTripOptions]):
    """Back-translates each text through every pivot and keeps the faithful round trips."""

    Options: ClassVar[type[StepOptions]] = RoundTripOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return text_and_label(self.options.field, self.options.label_field)

    def provides(self) -> set[str]:
        return {"augmentation"}

    def prepare(self) -> None:
        chrf("a", "a")  # a missing extra fails before any call
        embedder_of(self.options.embedder)

    async def round_trip(self, text: str, pivot: str, record: Record,
                         ctx: StepContext) -> tuple[Reply, Reply]:
        """The forward (into `pivot`) and backward (from the pivot text) replies."""
        o = self.options
        there = await ctx.generate(translation_prompt(text, o.language, pivot), o.sampling,
                                   seed=ctx.seed_for(record, pivot, "forward"))
        back = await ctx.generate(translation_prompt(cleaned(there.text), pivot, o.language),
                                  o.sampling, seed=ctx.seed_for(record, pivot, "back"))
        return there, back

    def verdict(self, source: str, pivot_text: str, back: str, seen: set[str],
                similarity: float | None) -> tuple[float, str | None]:
        """The round trip's chrF and why it is dropped (None: kept)."""
        o, score = self.options, chrf(back, source)
        if normalized(pivot_text) == normalized(source):
            return score, "pivot not translated"
        if not back or normalized(back) == normalized(source) or score > o.max_chrf:
            return score, "same as the original"
        if score < o.min_chrf:
            return score, "unfaithful round trip (chrF)"
        if similarity is not None and o.min_similarity is not None \
                and similarity < o.min_similarity:
            return score, "unfaithful round trip (cosine)"
        if normalized(back) in seen:
            return score, "duplicate"
        return score, None

    def similarities(self, source: str, backs: list[str]) -> list[float | None]:
        """Each round trip's cosine to the source (None without an embedder)."""
        embedder = embedder_of(self.options.embedder)
        if embedder is None:
            return [None] * len(backs)
        vectors = embedder.encode([source, *backs])
        return [float(vectors[i + 1] @ vectors[0]) for i in range(len(backs))]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        source = text_field(record, o.field)
        trips = await asyncio.gather(*(self.round_trip(source, p, record, ctx)
                                       for p in o.pivots))
        backs = [cleaned(back.text) for _there, back in trips]
        sims = self.similarities(source, backs)
        base, seen = content(record), set[str]()
        made = [ctx.derive([record], {**base, "augmentation": {
            "method": "back-translation", "op": "original"}}, "original")] \
            if o.keep_original else []
        for pivot, (there, back_reply), back, sim in zip(o.pivots, trips, backs, sims,
                                                        strict=True):
            pivot_text = cleaned(there.text)
            score, reason = self.verdict(source, pivot_text, back, seen, sim)
            fields = {**base, o.field: back, "augmentation": {
                "method": "back-translation", "op": "round-trip", "pivot": pivot,
                "pivot_text": pivot_text, "chrf": round(score, 2),
                "similarity": None if sim is None else round(sim, 4)}}
            if reason is None:
                seen.add(normalized(back))
                made.append(ctx.derive([record], fields, pivot, there, back_reply))
            else:
                ctx.drop({**fields, "_meta": record.get("_meta", {})}, reason,
                         f"chrF {score:.1f}")
        return made
