"""judge-rate: absolute ratings against rubrics, with the judge's rationale (Prometheus-style
feedback then score, Kim et al. 2023; UltraFeedback's per-aspect ratings, Cui et al. 2023).

`mode: each` asks once per completion and aspect; `mode: together` shows all completions of
a record in one prompt per aspect (UltraFeedback's way), which costs one call per aspect; the
texts are shown in a seeded shuffled order per aspect, and each judgement entry keeps the
`position` (0-based) its text was shown at. The judge is shown the user turns of the record's
`prompt` (what `completions` asked) when there are any, else `prompt_field` (and `input`).
A reply without a readable score, with disagreeing scores, or (when `rationale` is on)
without a rationale is a failure, never a guess.
"""

from __future__ import annotations

import re
from statistics import fmean
from typing import Any, ClassVar

from pydantic import Field, model_validator

from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import Each, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.judges import score_of
from synthaug.steps.llm import Reply, Uses
from synthaug.steps.prefer.common import (
    JudgeOptions,
    completions_of,
    judgement,
    prompt_text,
    reference_block,
    settled,
    with_judgements,
)
from synthaug.template import text_field

DEFAULT_RUBRIC = ("How well does the response fulfil the instruction: is it correct, "
                  "helpful and complete? 1: fails the instruction or is wrong; 3: partly "
                  "fulfils it or has noticeable errors; 5: fully and correctly fulfils it.")
_SYSTEM = ("You evaluate responses to an instruction against a rubric. Judge only what the "
           "rubric asks about; a longer response is not better for being longer.")
_MARK = re.compile(r"(\[RESULT\]|\b(?:score|rating)\b\s*(?:\(\d[^)]*\))?\s*[:=])",
                   re.IGNORECASE)
Verdict = tuple[float, str, str, int | None]  # score, rationale, judge, position shown
_TEXT = re.compile(r"^\W*text\s*(\d+)\b\W*$", re.IGNORECASE | re.MULTILINE)


class RateOptions(JudgeOptions):
    """Options of judge-rate."""

    aspects: dict[str, str] = Field(default_factory=lambda: {"quality": DEFAULT_RUBRIC},
                                    min_length=1)  # aspect -> rubric
    scale: tuple[int, int] = (1, 5)
    rationale: bool = True
    mode: str = Field("each", pattern="^(each|together)$")
    response_field: str | None = None  # rate this one field instead of a completions list
    min_completions: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> RateOptions:
        if self.scale[0] >= self.scale[1]:
            raise ValueError(f"scale must go from low to high, got {list(self.scale)}")
        return self


def _ask(o: RateOptions) -> str:
    low, high = o.scale
    if o.rationale:
        return (f"First write feedback: a short paragraph that checks the response against "
                f"the rubric. Then end with a line 'Score: N', N a whole number from {low} to "
                f"{high}.")
    return f"Reply with one line, 'Score: N', N a whole number from {low} to {high}."


def parse_rating(text: str, low: int, high: int, rationale: bool) -> tuple[float, str]:
    """(score, rationale) from a feedback-then-score reply; ParseError if either is missing."""
    marks = list(_MARK.finditer(text))
    cut = marks[-1].start() if marks else len(text)
    score = score_of(text[cut:] if marks else text, low, high)
    said = re.sub(r"^\W*(feedback|rationale)\s*:\s*", "", text[:cut].strip(), flags=re.I)
    if rationale and len(said.split()) < 3:
        raise ParseError(f"the judge gave no rationale: {text[:80]!r}", raw=[text])
    return score, said.strip()


def parse_together(text: str, count: int, low: int, high: int,
                   rationale: bool) -> list[tuple[float, str]]:
    """One (score, rationale) per text of a multi-text rating reply, in text order."""
    marks = list(_TEXT.finditer(text))
    parts: dict[int, str] = {}
    for mark, nxt in zip(marks, [*marks[1:], None], strict=False):  # none: no parts
        parts.setdefault(int(mark.group(1)), text[mark.end(): nxt.start() if nxt else None])
    missing = [i for i in range(1, count + 1) if i not in parts]
    if missing:
        raise ParseError(f"the judge rated no text {missing[0]}: {text[:80]!r}", raw=[text])
    return [parse_rating(parts[i], low, high, rationale) for i in range(1, count + 1)]


class JudgeRate(Each[RateOptions]):
    """Rates each completion (or `response_field`) on every aspect's rubric; stores
    `ratings` {aspect: {score, rationale}} and their mean `rating` on each, and one
    `judgements` entry per verdict."""

    Options: ClassVar[type[StepOptions]] = RateOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        o = self.options
        return {o.prompt_field: str, (o.response_field or o.completions_field):
                (str if o.response_field else list)}

    def provides(self) -> set[str]:
        o = self.options
        return {"judgements", *(("ratings", "rating") if o.response_field else
                                (o.completions_field,))}

    def _head(self, record: Record, aspect: str) -> str:
        o = self.options
        return (f"Instruction:\n{prompt_text(record, o.prompt_field)}\n\n"
                f"{reference_block(record, o.reference_field)}"
                f"Rubric ({aspect}):\n{o.aspects[aspect]}\n\n")

    async def _call(self, record: Record, ctx: StepContext, prompt: str, *salt: Any) -> Reply:
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]
        return await ctx.generate(messages, self.options.sampling, role=self.options.backend,
                                  seed=ctx.seed_for(record, "rate", *salt))

    async def _each(self, record: Record, ctx: StepContext, aspect: str, index: int,
                    text: str) -> tuple[float, str, Reply]:
        o = self.options
        reply = await self._call(record, ctx, f"{self._head(record, aspect)}Response:\n{text}"
                                 f"\n\n{_ask(o)}", aspect, index)
        score, why = parse_rating(reply.text, *o.scale, o.rationale)
        return score, why, reply

    async def _together(self, record: Record, ctx: StepContext, aspect: str,
                        texts: list[str]) -> tuple[list[tuple[float, str, int]], Reply]:
        """(score, rationale, position shown) per text of `texts`, in the order given."""
        o = self.options
        order = list(range(len(texts)))
        ctx.rng(record, "shown", aspect).shuffle(order)
        shown = "".join(f"<text {p}>\n{texts[i]}\n</text {p}>\n" for p, i in enumerate(order, 1))
        low, high = o.scale
        ask = (f"Rate each of the {len(texts)} texts below separately. For each, write "
               f"'Text i' on its own line, then "
               + ("'Rationale: ...' (a sentence or two) and " if o.rationale else "")
               + f"'Rating: N', N a whole number from {low} to {high}.")
        reply = await self._call(record, ctx, f"{self._head(record, aspect)}{ask}\n\n{shown}",
                                 aspect)
        said = parse_together(reply.text, len(texts), *o.scale, o.rationale)
        return [(*said[order.index(i)], order.index(i)) for i in range(len(texts))], reply

    async def _verdicts(self, record: Record, ctx: StepContext, texts: list[str]
                        ) -> tuple[dict[tuple[str, int], Verdict], list[Reply]]:
        o = self.options
        found: dict[tuple[str, int], Verdict] = {}
        if o.mode == "together":
            results = await settled(*(self._together(record, ctx, a, texts)
                                      for a in o.aspects))
            for aspect, (scores, reply) in zip(o.aspects, results, strict=True):
                for i, (score, why, position) in enumerate(scores):
                    found[aspect, i] = (score, why, reply.model, position)
            return found, [reply for _, reply in results]
        jobs = [(a, i) for a in o.aspects for i in range(len(texts))]
        each = await settled(*(self._each(record, ctx, a, i, texts[i]) for a, i in jobs))
        for (aspect, i), (score, why, reply) in zip(jobs, each, strict=True):
            found[aspect, i] = (score, why, reply.model, None)
        return found, [reply for *_, reply in each]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        items: list[dict[str, Any]] = [{"text": text_field(record, o.response_field),
                                        "model": record.get("model")}] if o.response_field else \
            completions_of(record, o.completions_field, o.min_completions)
        verdicts, replies = await self._verdicts(record, ctx, [c["text"] for c in items])
        entries = []
        for i, item in enumerate(items):
            item["ratings"] = {a: {"score": verdicts[a, i][0], "rationale": verdicts[a, i][1]}
                               for a in o.aspects}
            item["rating"] = round(fmean(verdicts[a, i][0] for a in o.aspects), 4)
            entries += [judgement("rate", verdicts[a, i][2], completion=i, aspect=a,
                                  score=verdicts[a, i][0], length=len(item["text"]),
                                  model=item.get("model"),
                                  **({} if verdicts[a, i][3] is None else
                                     {"position": verdicts[a, i][3]}))
                        for a in o.aspects]
        made = {**content(record), "judgements": with_judgements(record, entries)}
        if o.response_field:
            made.update(ratings=items[0]["ratings"], rating=items[0]["rating"])
        else:
            made[o.completions_field] = items
        return [ctx.derive([record], made, 0, *replies)]
