"""chataug-paraphrase: ChatAug / AugGPT (Dai et al. 2023, arXiv:2302.13007) paraphrase
augmentation with a diversity filter.

1. For each labelled training sentence, one request asks the model for `k` rephrasings (the
   paper: six), each keeping the meaning but changing wording and structure; the items of the
   numbered list it writes are the candidates (at most `k`). One completion is read, so `n`
   stays 1 (for more candidates raise `k`).
2. Diversity filter, in order, each drop counted by reason (dropped.jsonl keeps the text):
   a candidate identical to the original or to a kept one (after case and punctuation are
   ignored) is dropped; with an `embedder`, a candidate whose cosine similarity to the
   original is above `max_similarity` is too close to it, one below `min_similarity` has
   drifted from its meaning (the paper's evaluation measures exactly these cosines), and
   one above `max_pairwise` to a paraphrase kept before it adds no diversity.
3. Every kept paraphrase carries the source's fields, its label included; `augmentation`
   holds the method, the cosine to the original and the original text; `_meta.parents`
   names the source. The original is kept too (`keep_original`), as the paper trains on both.

The filter helpers (`normalized`, `screen`) are shared with round-trip-translate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator, model_validator

from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.lists import parse_list
from synthaug.steps.llm import Prompt, Reply, Sampling
from synthaug.template import text_field

if TYPE_CHECKING:
    from synthaug.embed import Embedder

_SYSTEM = ("You help build training data for a text classifier by rewording its examples. "
           "A rewording says the same thing as the original, so it belongs to the same class, "
           "but it is written with other words and another sentence structure.")
_NOT_WORD = re.compile(r"[\W_]+")
_LABEL = re.compile(r"^(?:sentence|rewording|paraphrase|version)\s*\d*\s*:\s*", re.IGNORECASE)


def normalized(text: str) -> str:
    """`text` lower-cased with punctuation and spacing removed (for identity checks)."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def text_and_label(field: str, label_field: str | None) -> Requirements:
    """The text a rewriting step reads, and the label it carries over when there is one."""
    found: dict[str, type | tuple[type, ...]] = {field: str}
    if label_field:
        found[label_field] = (str, int, bool, list)
    return found


def embedder_of(name: str | None) -> Embedder | None:
    """The named embedder (loaded once per process), or None."""
    if name is None:
        return None
    from synthaug.embed import get_embedder

    return get_embedder(name)


@dataclass(frozen=True)
class Bounds:
    """The similarity window a candidate must fall in (cosines; None: not checked)."""

    min_similarity: float | None
    max_similarity: float | None
    max_pairwise: float | None


@dataclass(frozen=True)
class Screened:
    """One candidate and the filter's verdict (reason None: kept)."""

    text: str
    similarity: float | None
    reason: str | None


def screen(original: str, candidates: list[str], embedder: Embedder | None,
           bounds: Bounds) -> list[Screened]:
    """The diversity filter's verdict on each candidate, in order (see the module doc)."""
    vectors = embedder.encode([original, *candidates]) if embedder and candidates else None
    seen, kept, verdicts = {normalized(original)}, list[int](), list[Screened]()
    for i, text in enumerate(candidates):
        key, sim, reason = normalized(text), None, None
        if vectors is not None:
            sim = float(vectors[i + 1] @ vectors[0])
        if key in seen:
            reason = "same as the original" if key == normalized(original) else "duplicate"
        elif sim is not None and bounds.max_similarity is not None \
                and sim > bounds.max_similarity:
            reason = "too close to the original"
        elif sim is not None and bounds.min_similarity is not None \
                and sim < bounds.min_similarity:
            reason = "semantic drift"
        elif vectors is not None and bounds.max_pairwise is not None and kept and \
                max(float(vectors[i + 1] @ vectors[j + 1]) for j in kept) > bounds.max_pairwise:
            reason = "too close to another paraphrase"
        seen.add(key)
        if reason is None:
            kept.append(i)
        verdicts.append(Screened(text, sim, reason))
    return verdicts


class ParaphraseOptions(LLMOptions):
    """Options of chataug-paraphrase."""

    field: str = "text"
    label_field: str | None = "label"  # required on every input record (None: unlabelled)
    k: int = Field(6, ge=1)  # rephrasings asked per sentence (the paper: six)
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=512)
    embedder: str | None = "static"  # None: only the identity checks
    min_similarity: float | None = Field(0.5, ge=-1, le=1)  # below: semantic drift
    max_similarity: float | None = Field(0.95, ge=-1, le=1)  # above: too close to original
    max_pairwise: float | None = Field(0.95, ge=-1, le=1)  # above: too close to a kept one
    keep_original: bool = True

    @field_validator("n")
    @classmethod
    def _one_completion(cls, n: int) -> int:
        if n != 1:
            raise ValueError("chataug-paraphrase reads one completion (its list of k "
                             "rewordings); ask for more with k, not n")
        return n

    @model_validator(mode="after")
    def _window(self) -> ParaphraseOptions:
        low, high = self.min_similarity, self.max_similarity
        if low is not None and high is not None and low >= high:
            raise ValueError("min_similarity must be below max_similarity")
        return self


class Paraphrase(LLMStep[ParaphraseOptions]):
    """Asks for k rephrasings of each sentence and keeps the diverse, faithful ones."""

    Options: ClassVar[type[StepOptions]] = ParaphraseOptions

    def requires(self) -> Requirements:
        return text_and_label(self.options.field, self.options.label_field)

    def provides(self) -> set[str]:
        return {"augmentation"}

    def prepare(self) -> None:
        embedder_of(self.options.embedder)  # a missing extra fails before any call

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        k = self.options.k
        ask = (f"Write {k} different rewordings of the sentence below. Each must keep its full "
               "meaning but change the words and the way the sentence is built, and each "
               f"should differ from the others. Number them 1 to {k}, one per line, and write "
               f"nothing else.\n\nSentence: {text_field(record, self.options.field)}")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": ask}]

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        original = text_field(record, o.field)
        candidates = [_LABEL.sub("", c).strip() for c in parse_list(reply.text)[:o.k]]
        bounds = Bounds(o.min_similarity, o.max_similarity, o.max_pairwise)
        base = content(record)
        if o.keep_original:
            yield {**base, "augmentation": {"method": "chataug", "op": "original"}}
        for verdict in screen(original, candidates, embedder_of(o.embedder), bounds):
            sim = None if verdict.similarity is None else round(verdict.similarity, 4)
            made = {**base, o.field: verdict.text,
                    "augmentation": {"method": "chataug", "op": "paraphrase",
                                     "similarity": sim, "original": original}}
            if verdict.reason is None:
                yield made
            else:
                ctx.drop({**made, "_meta": record.get("_meta", {})}, verdict.reason,
                         f"cosine {sim}" if sim is not None else None)
