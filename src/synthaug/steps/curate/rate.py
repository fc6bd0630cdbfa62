"""LLM quality rating (AlpaGasus, Chen et al., 2023): a 1-5 score per instruction/response
pair, kept in the record; pair with `score-filter` to keep pairs >= a threshold."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.judges import score_of
from synthaug.steps.llm import Prompt, Reply, Sampling
from synthaug.template import text_field

_PROMPT = (
    "You are reviewing training data for an AI assistant. Rate how accurate, helpful and "
    "complete the response is for the instruction, on a scale from 1 (useless or wrong) to 5 "
    "(excellent). Reply with the score first, then one sentence of reasons.\n\n"
    "Instruction:\n{instruction}\n\n{input_block}Response:\n{response}\n\nScore (1-5):")


class RateOptions(LLMOptions):
    """Options of llm-rate."""

    instruction_field: str = "instruction"
    input_field: str | None = "input"
    response_field: str = "output"
    score_field: str = "score"
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=48)


class LLMRate(LLMStep[RateOptions]):
    """Asks a judge model for a 1-5 quality score; stores it and the judge's reason."""

    Options: ClassVar[type[StepOptions]] = RateOptions

    def requires(self) -> Requirements:
        return {self.options.instruction_field: str, self.options.response_field: str}

    def provides(self) -> set[str]:
        return {self.options.score_field, f"{self.options.score_field}_reason"}

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        o = self.options
        optional = o.input_field and record.get(o.input_field) is not None
        given = text_field(record, o.input_field) if o.input_field and optional else ""
        text = _PROMPT.format(
            instruction=text_field(record, o.instruction_field),
            response=text_field(record, o.response_field),
            input_block=f"Input:\n{given}\n\n" if given.strip() else "")
        return [{"role": "user", "content": text}]

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        score = score_of(reply.text, 1, 5)
        first, _, rest = reply.text.strip().partition("\n")
        reason = (rest or re.sub(r"^[\s*]*(?:score\s*:?\s*)?[\d.]+(?:\s*/\s*5)?", "", first,
                                 flags=re.IGNORECASE)).strip(" .:-\n")
        value: int | float = int(score) if score.is_integer() else score
        yield {**content(record), self.options.score_field: value,
               f"{self.options.score_field}_reason": reason}
