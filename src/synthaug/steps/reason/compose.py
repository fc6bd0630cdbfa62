"""Iterative Question Composing (IQC; Liu & Yao et al., 2024, the MMIQC data).

Each iteration, a composer model turns every seed (a problem with its solution and answer)
into a new problem that contains the seed as a sub-problem, with its own solution and answer.
A sampler model then solves the new problem several times (rejection sampling): a solution
is kept when its final answer agrees with the composer's. The composed problems are the
seeds of the next iteration, so problems grow one reasoning step per iteration.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from synthaug.errors import ParseError, RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Requirements, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import solve_prompt, verified
from synthaug.steps.reason.metamath import problem
from synthaug.verify.answers import check, extract_answer

_COMPOSE = (
    "Below is a math problem with a solution and an answer, which may contain mistakes.\n\n"
    "{seed}\n\n"
    "Compose one new problem that contains the problem above as a sub-problem or an "
    "intermediate step, so that solving it takes at least one more step of reasoning. Then "
    "solve the new problem step by step, briefly, without quoting the result of the original "
    "problem. Reply in exactly this form:\n"
    "Problem: <the new problem>\nSolution: <the step-by-step solution>\n"
    "Answer: <the final answer only>")
_REPLY = re.compile(r"Problem:\s*(?P<problem>.+?)\s*\n\s*Solution:\s*(?P<solution>.+?)"
                    r"(?:\n\s*Answer:\s*(?P<answer>[^\n]+))?\s*$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Seed:
    """A problem to compose from: its record, text, solution (if known) and answer."""

    record: Record
    question: str
    solution: str | None
    answer: str

    def shown(self) -> str:
        """The seed as the composer sees it."""
        solution = f"Solution: {self.solution}\n" if self.solution else ""
        return f"Problem: {self.question}\n{solution}Answer: {self.answer}"


def parse_composed(text: str) -> tuple[str, str, str]:
    """(problem, solution, answer) of a composer reply; ParseError if it lacks one."""
    found = _REPLY.search(text.strip())
    if not found:
        raise ParseError("the composer's reply has no 'Problem:' and 'Solution:' parts",
                         raw=[text])
    solution = found.group("solution").strip()
    answer = (found.group("answer") or "").strip() or extract_answer(solution)
    if not answer:
        raise ParseError("the composer's reply states no answer", raw=[text])
    return found.group("problem").strip(), solution, answer


class ComposeOptions(RoundsOptions):
    """Options of question-compose."""

    rounds: int = 4  # iterations of composing
    composer_backend: str = "default"
    sampler_backend: str = "default"
    samples: int = Field(3, ge=1)  # rejection samples per composed problem
    keep_composed: bool = True  # also emit the composer's own solution, when self-consistent
    shots: int = Field(4, ge=0)
    compose_sampling: Sampling = Sampling(temperature=0.7, max_tokens=512)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)  # rejection sampling
    question_field: str = "question"
    answer_field: str = "answer"
    solution_field: str = "solution"  # used for input seeds that have one


class IterativeCompose(Rounds[ComposeOptions]):
    """Composes harder problems from seeds, iteration by iteration, with rejection sampling."""

    Options: ClassVar[type[StepOptions]] = ComposeOptions

    def requires(self) -> Requirements:
        return {self.options.question_field: str,
                self.options.answer_field: (str, int, float)}

    def provides(self) -> set[str]:
        return {"question", "response", "answer", "type", "iteration", "seed_question"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.composer_backend), Uses(self.options.sampler_backend)]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        o = self.options
        self.seeds: list[Seed] = []
        for record in pool:
            try:
                question, answer = problem(record, o.question_field, o.answer_field)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            solution = record.get(o.solution_field)
            self.seeds.append(Seed(record, question, solution if isinstance(solution, str)
                                   else None, answer))

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        done = await asyncio.gather(*(ctx.attempt(self._compose(seed, index, ctx), seed.record)
                                      for seed in self.seeds))
        found = [d for d in done if d is not None]
        self.seeds = [seed for seed, _ in found]  # the next iteration composes from these
        ctx.stats.notes[f"iteration {index} composed"] = len(self.seeds)
        return [out for _, outputs in found for out in outputs], not self.seeds

    async def _compose(self, seed: Seed, index: int,
                       ctx: StepContext) -> tuple[Seed, list[Record]]:
        o = self.options
        reply = await ctx.generate([{"role": "user", "content": _COMPOSE.format(
            seed=seed.shown())}], o.compose_sampling, seed=ctx.seed_for(seed.record, "compose",
                                                                      index),
            role=o.composer_backend)
        question, solution, answer = parse_composed(reply.text)
        fields = {"question": question, "response": solution, "answer": answer,
                  "type": "composed", "iteration": index, "seed_question": seed.question}
        own = check(solution, answer)
        composed = ctx.derive([seed.record], verified(fields, own, checked="composer's "
                                                      "solution against its own answer"),
                              f"compose.{index}", reply)
        outputs = await self._reject_sample(composed, answer, index, ctx)
        if o.keep_composed:
            if own.correct:
                outputs.insert(0, composed)
            else:
                ctx.drop(composed, "composer's solution disagrees with its answer",
                         f"{own.reason}: {own.predicted} vs {own.gold}")
        return Seed(composed, question, solution, answer), outputs

    async def _reject_sample(self, composed: Record, answer: str, index: int,
                             ctx: StepContext) -> list[Record]:
        """The sampler's solutions to the composed problem that reach the composer's answer."""
        o = self.options
        reply: Reply = await ctx.generate(
            solve_prompt(str(composed["question"]), o.shots), o.sampling,
            seed=ctx.seed_for(composed, "sample", index), role=o.sampler_backend, n=o.samples)
        kept = []
        for k, text in enumerate(reply.texts):
            verdict = check(text, answer)
            fields = {**content(composed), "response": text, "type": "rejection-sampled"}
            made = ctx.derive([composed], verified(fields, verdict), f"sample.{index}.{k}",
                              reply)
            if verdict.correct:
                kept.append(made)
            else:
                ctx.drop(made, "inconsistent with the composer's answer",
                         f"{verdict.reason}: {verdict.predicted} vs {verdict.gold}")
        return kept
