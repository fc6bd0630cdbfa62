"""What the self-training methods share: reading a problem, the SFT record a kept solution
becomes, and `SelfTraining`, the rounds base of STaR and ReST-EM.

Each round of a `SelfTraining` step solves every problem of the pool again with the model the
role answers with now (the `between_rounds` hook may have switched it to the model trained on
the previous round's records); `solve` is the step's one idea.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from synthaug.errors import RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Requirements, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Sampling, Uses
from synthaug.steps.reason.common import GOLD_TYPES, gold_of_record, question_of, verified
from synthaug.verify.answers import Verdict


def sft_messages(question: str, rationale: str) -> list[dict[str, str]]:
    """The training pair a kept solution becomes: the bare question, the rationale."""
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": rationale.strip()}]


def solution_record(record: Record, question: str, rationale: str, verdict: Verdict,
                    **fields: Any) -> Record:
    """A kept solution: the problem's fields, the rationale, SFT `messages`, the verdict."""
    made = {**content(record), **fields, "rationale": rationale.strip(),
            "messages": sft_messages(question, rationale)}
    return verified(made, verdict)


class SelfTrainOptions(RoundsOptions):
    """Options of a self-training loop over math word problems."""

    backend: str = "default"
    question_field: str = "question"
    answer_field: str = "answer"
    shots: int = Field(4, ge=0)  # worked examples in the generation prompt
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=384)


SelfTrainOptionsT = TypeVar("SelfTrainOptionsT", bound=SelfTrainOptions)


class SelfTraining(Rounds[SelfTrainOptionsT]):
    """Solves every problem again each round; kept solutions are the round's records."""

    Options: ClassVar[type[StepOptions]] = SelfTrainOptions

    def requires(self) -> Requirements:
        o = self.options
        return {o.question_field: str, o.answer_field: GOLD_TYPES}

    def provides(self) -> set[str]:
        return {"rationale", "messages", "round"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def planned_rounds(self) -> int:
        """The rounds asked for when a command trains a new model between them; else one
        (the same model would only sample the same distribution again)."""
        return self.options.rounds if self.options.between_rounds else 1

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        if self.planned_rounds() < self.options.rounds:
            ctx.stats.notes["one round: no between_rounds command trains a new model"] = 1
        self.problems: list[Record] = []
        for record in pool:
            try:
                question_of(record, self.options.question_field)
                gold_of_record(record, self.options.answer_field)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            self.problems.append(record)

    @abstractmethod
    async def solve(self, record: Record, index: int, ctx: StepContext) -> list[Record]:
        """The kept solutions of one problem in round `index` (drops recorded with ctx.drop)."""

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        found = await asyncio.gather(*(ctx.attempt(self.solve(record, index, ctx), record)
                                       for record in self.problems))
        kept = [record for records in found for record in records or ()]
        solved = sum(1 for records in found if records)
        ctx.note_round(index, problems=len(self.problems), solved=solved)
        return kept, not self.problems
