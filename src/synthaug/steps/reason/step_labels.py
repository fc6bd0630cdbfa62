"""Math-Shepherd (Wang et al., 2023): automatic process annotation of solution steps.

A generator samples step-by-step solutions. For each step i of a solution, a completer
model is given the problem and steps 1..i and samples N completions to the end; the verifier
checks each completion's final answer against the gold answer. Hard estimation labels the
step good (1) when any completion reaches the gold answer; soft estimation is the fraction
that do. The last step is labelled by the solution's own final answer. The output is one
record per solution in a process-reward shape (`--format prm`: prompt, completions, labels).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pydantic import Field

from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import (
    COT_INSTRUCTION,
    cot_shots,
    solution_steps,
    solve_prompt,
    verified,
)
from synthaug.steps.reason.metamath import problem
from synthaug.verify.answers import check

PREFIX_HEAD = "The solution so far:"
_CONTINUE = ("{question}\n\n" + PREFIX_HEAD + "\n{prefix}\n\n"
             "Continue this solution from the next step to the end. Write only the remaining "
             "steps, one per line, and end with a line of the form 'The answer is N.'")


def completion_prompt(question: str, prefix: list[str], shots: int) -> list[dict[str, str]]:
    """The completer's request: worked examples, then the problem and steps 1..i."""
    messages = [{"role": "system", "content": COT_INSTRUCTION}]
    for shot in cot_shots()[:shots]:
        messages += [{"role": "user", "content": shot["question"]},
                     {"role": "assistant", "content": shot["solution"]}]
    text = _CONTINUE.format(question=question, prefix="\n".join(prefix))
    return [*messages, {"role": "user", "content": text}]


class StepLabelOptions(EachOptions):
    """Options of step-labels."""

    backend: str = "default"  # the generator of the solutions
    completer_backend: str = "default"
    solutions: int = Field(4, ge=1)  # solutions generated per problem
    completions: int = Field(8, ge=1)  # N: completions sampled from each step
    shots: int = Field(4, ge=0)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)  # the generator
    completion_sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)
    solution_field: str | None = None  # label this field's solution instead of generating
    question_field: str = "question"
    answer_field: str = "answer"


class StepLabels(Each[StepLabelOptions]):
    """Labels each step of each solution by rollouts from it (hard and soft estimation)."""

    Options: ClassVar[type[StepOptions]] = StepLabelOptions

    def requires(self) -> Requirements:
        o = self.options
        found: dict[str, type | tuple[type, ...]] = {o.question_field: str,
                                                     o.answer_field: (str, int, float)}
        if o.solution_field:
            found[o.solution_field] = str
        return found

    def provides(self) -> set[str]:
        return {"question", "answer", "solution", "steps", "labels", "soft_labels",
                "rollouts"}

    def uses(self) -> list[Uses]:
        roles = [] if self.options.solution_field else [Uses(self.options.backend)]
        return [*roles, Uses(self.options.completer_backend)]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question, gold = problem(record, o.question_field, o.answer_field)
        made_by: tuple[Reply, ...] = ()
        if o.solution_field:
            solutions = [str(record[o.solution_field])]
        else:
            reply = await ctx.generate(solve_prompt(question, o.shots), o.sampling,
                                       seed=ctx.seed_for(record, "solve"), role=o.backend,
                                       n=o.solutions)
            solutions, made_by = reply.texts, (reply,)
        done = await asyncio.gather(*(
            ctx.attempt(self._label(record, question, gold, text, k, made_by, ctx), record)
            for k, text in enumerate(solutions)))
        return [made for made in done if made is not None]

    async def _label(self, record: Record, question: str, gold: str, solution: str, k: int,
                     made_by: tuple[Reply, ...], ctx: StepContext) -> Record | None:
        steps = solution_steps(solution)
        if not steps:
            ctx.drop(record, "empty solution", f"solution {k}")
            return None
        rollouts = await asyncio.gather(*(self._rollouts(record, question, gold, steps[:i],
                                                         k, ctx)
                                          for i in range(1, len(steps))))
        outcome = check(solution, gold)  # the last step: the solution's own final answer
        counts = [(sum(ok), len(ok)) for ok, _ in rollouts] + [(int(outcome.correct), 1)]
        fields = {**content(record), "question": question, "answer": gold,
                  "solution": solution, "steps": steps,
                  "labels": [good > 0 for good, _ in counts],
                  "soft_labels": [good / total for good, total in counts],
                  "rollouts": [{"correct": good, "total": total} for good, total in counts]}
        replies = [reply for _, reply in rollouts]
        return ctx.derive([record], verified(fields, outcome, estimation="hard and soft"),
                          f"solution.{k}", *made_by, *replies)

    async def _rollouts(self, record: Record, question: str, gold: str, prefix: list[str],
                        k: int, ctx: StepContext) -> tuple[list[bool], Reply]:
        """Whether each of N completions from `prefix` (steps 1..i) reaches the gold answer."""
        o = self.options
        reply = await ctx.generate(completion_prompt(question, prefix, o.shots),
                                   o.completion_sampling,
                                   seed=ctx.seed_for(record, "complete", k, len(prefix)),
                                   role=o.completer_backend, n=o.completions)
        done = ["\n".join([*prefix, text]) for text in reply.texts]
        return [check(text, gold).correct for text in done], reply
