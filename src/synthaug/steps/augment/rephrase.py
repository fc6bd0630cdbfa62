"""WRAP, Web Rephrase Augmented Pre-training (Maini et al. 2024, arXiv:2401.16380).

- `wrap-chunk` splits each document into chunks of at most `max_tokens` tokens (the paper
  rephrases pieces of at most 300 tokens, since longer inputs lose information in the
  rephrase), at sentence boundaries where it can; tokens are counted as words and
  punctuation marks (a model-free stand-in for the generator's tokenizer).
- `wrap-rephrase` asks an instruction-tuned model to rephrase each chunk in every chosen
  style: easy (words a toddler understands), medium (high-quality encyclopedic English),
  hard (terse, abstruse scholarly language) and qa (a conversation of Question:/Answer:
  pairs; a qa reply without such a pair is dropped). It also emits the real chunk, so that
  real and synthetic records come out in the ratio `real_ratio` (the paper: 1:1); when a
  chunk has several synthetic records the real one is repeated, as sampling the two halves
  equally does in the paper. A chunk none of whose rephrases survived is still emitted once
  (it is real data; the ratio is about the synthetic share).

Both steps handle one record at a time, so a corpus streams through them.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Map, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.template import text_field

Style = Literal["easy", "medium", "hard", "qa"]
ALL_STYLES: list[Style] = ["easy", "medium", "hard", "qa"]
_SYSTEM = ("You are a helpful assistant who rewrites passages on request. You keep every fact "
           "of the passage and add none.")
# what each style asks of the rewrite (own wording of the paper's four style prompts)
STYLE_ASKS: dict[Style, str] = {
    "easy": ("Rewrite the passage below for a very young child: use only the most common, "
             "simple words and very short sentences."),
    "medium": ("Rewrite the passage below in clear, varied, high-quality English, the way an "
               "encyclopedia article such as one on Wikipedia would put it."),
    "hard": ("Rewrite the passage below in dense, terse and erudite language that only a "
             "learned scholar would follow, choosing rare and sophisticated words over plain "
             "ones."),
    "qa": ("Turn the passage below into a conversation of questions and answers that covers "
           "its content. Start each question with 'Question:' and each answer with "
           "'Answer:'."),
}
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")
_QA = re.compile(r"Question\s*:.+?Answer\s*:\s*\S", re.IGNORECASE | re.DOTALL)
_PREAMBLE = re.compile(r"^\s*(?:here is|here's|sure)[^\n]*:[ \t]*\n", re.IGNORECASE)


def rephrased(reply: str) -> str:
    """The rewrite in a reply, without a lead-in line such as "Here is the rewrite:"."""
    return _PREAMBLE.sub("", reply.strip(), count=1).strip()


def count_tokens(text: str) -> int:
    """Tokens as counted here: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _pieces(sentence: str, limit: int) -> list[str]:
    """A sentence longer than `limit` tokens cut at word boundaries into pieces that fit."""
    pieces, current = [], list[str]()
    for word in sentence.split():
        if current and count_tokens(" ".join([*current, word])) > limit:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    return [*pieces, " ".join(current)] if current else pieces


def _units(text: str, limit: int) -> list[tuple[str, bool]]:
    """(sentence or piece, whether it starts a paragraph), each at most `limit` tokens."""
    units: list[tuple[str, bool]] = []
    for paragraph in _PARAGRAPH.split(text.strip()):
        sentences = [s for s in _SENTENCE_END.split(" ".join(paragraph.split())) if s]
        for n, sentence in enumerate(sentences):
            for m, piece in enumerate(_pieces(sentence, limit)):
                units.append((piece, n == 0 and m == 0))
    return units


def chunk_text(text: str, limit: int) -> list[str]:
    """`text` packed into consecutive chunks of at most `limit` tokens, whole sentences
    together where they fit, paragraph breaks kept inside a chunk."""
    chunks, current, size = list[str](), "", 0
    for unit, starts_paragraph in _units(text, limit):
        tokens = count_tokens(unit)
        if current and size + tokens > limit:
            chunks.append(current)
            current, size = "", 0
        sep = "" if not current else ("\n\n" if starts_paragraph else " ")
        current, size = current + sep + unit, size + tokens
    return [*chunks, current] if current else chunks


class ChunkOptions(StepOptions):
    """Options of wrap-chunk."""

    field: str = "text"
    max_tokens: int = Field(300, ge=8)  # the paper: at most 300 tokens per rephrased piece


class WrapChunk(Map[ChunkOptions]):
    """One record per chunk of the document; `chunk` holds its index, count and size."""

    Options: ClassVar[type[StepOptions]] = ChunkOptions

    def requires(self) -> Requirements:
        return {self.options.field}

    def provides(self) -> set[str]:
        return {"chunk"}

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        chunks = chunk_text(text_field(record, o.field), o.max_tokens)
        for i, chunk in enumerate(chunks):
            yield {**content(record), o.field: chunk,
                   "chunk": {"index": i, "count": len(chunks), "tokens": count_tokens(chunk)}}


class RephraseOptions(EachOptions):
    """Options of wrap-rephrase."""

    backend: str = "default"
    field: str = "text"
    styles: list[Style] = Field(default_factory=lambda: list(ALL_STYLES), min_length=1)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=512)
    real_ratio: float = Field(1.0, ge=0)  # real records per synthetic one (the paper: 1:1)

    @field_validator("styles")
    @classmethod
    def _distinct(cls, styles: list[Style]) -> list[Style]:
        if len(set(styles)) != len(styles):
            raise ValueError("a style is listed twice")
        return styles


def style_prompt(style: Style, text: str) -> list[dict[str, str]]:
    """The chat request to rephrase `text` in `style`."""
    ask = f"{STYLE_ASKS[style]} Reply with the rewrite only.\n\nPassage:\n{text}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": ask}]


def real_copies(ratio: float, synthetic: int, draw: float) -> int:
    """How many copies of the real chunk go with `synthetic` rephrases: ratio * synthetic,
    its fraction rounded up when `draw` (uniform in [0, 1)) falls below it; once when no
    rephrase survived (and `ratio` is not 0), so no real chunk is lost from the output."""
    if synthetic == 0:
        return 1 if ratio > 0 else 0
    wanted = ratio * synthetic
    return math.floor(wanted) + (1 if draw < wanted - math.floor(wanted) else 0)


class WrapRephrase(Each[RephraseOptions]):
    """Rephrases each chunk in every style and mixes the real chunk back in."""

    Options: ClassVar[type[StepOptions]] = RephraseOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return {self.options.field}

    def provides(self) -> set[str]:
        return {"style"}

    async def _rephrase(self, style: Style, text: str, record: Record,
                        ctx: StepContext) -> Reply:
        return await ctx.generate(style_prompt(style, text), self.options.sampling,
                                  seed=ctx.seed_for(record, style))

    def _usable(self, style: Style, text: str) -> str | None:
        """Why the rephrase cannot be kept (None: it can)."""
        if not text:
            return "empty rephrase"
        if style == "qa" and not _QA.search(text):
            return "qa rephrase without a Question/Answer pair"
        return None

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        text = text_field(record, o.field)
        replies = await asyncio.gather(*(self._rephrase(s, text, record, ctx)
                                         for s in o.styles))
        base, made = content(record), list[Record]()
        for style, reply in zip(o.styles, replies, strict=True):
            fields = {**base, o.field: rephrased(reply.text), "style": style}
            reason = self._usable(style, fields[o.field])
            if reason is None:
                made.append(ctx.derive([record], fields, style, reply))
            else:
                ctx.drop({**fields, "_meta": record.get("_meta", {})}, reason)
        copies = real_copies(o.real_ratio, len(made), ctx.rng(record, "mix").random())
        real = [ctx.derive([record], {**base, "style": "real"}, f"real-{i}")
                for i in range(copies)]
        return made + real
