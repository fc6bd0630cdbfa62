"""ReST-EM (Singh et al., 2023, arXiv:2312.06585) and ReST's Grow/Improve loop (Gulcehre et
al., 2023, arXiv:2308.08998).

A Grow step samples k solutions per problem from the current model and scores each: with the
math verifier the reward is binary (1 if the final answer matches the gold one), with
`reward: judge` a model of the `reward_backend` role grades it from 0 to 10 (a score in
[0, 1]). An Improve step keeps the solutions whose reward reaches its threshold, at most
`max_per_problem` of them per problem (ReST-EM's cap, a seeded random subset), and the
`between_rounds` command fine-tunes on them and may switch the backend to the new model. One
threshold per Improve step, increasing (ReST), re-filters the same Grow samples; the next Grow
step samples from the model the last Improve step switched to. Each round is one Improve
step; the manifest lists each round's Grow step, threshold, counts and model.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from synthaug.records import Record, record_id
from synthaug.steps.base import StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import gold_of_record, question_of, solve_prompt
from synthaug.steps.reason.selftrain import SelfTraining, SelfTrainOptions, solution_record
from synthaug.verify.answers import Verdict, check

GRADE = Sampling(temperature=0.0, max_tokens=4)
_GRADE_PROMPT = ("Grade the solution to the math problem below from 0 (wrong or useless) to "
                 "10 (correct, clear and complete). Reply with the number only.\n\n"
                 "Problem: {question}\nReference answer: {gold}\n\nSolution:\n{solution}")


@dataclass
class Scored:
    """One Grow sample with its verdict and reward."""

    reply: Reply
    verdict: Verdict
    reward: float | None  # None: the grader's reply was unreadable


class ReSTOptions(SelfTrainOptions):
    """Options of rest-em."""

    k: int = Field(32, ge=1)  # solutions sampled per problem in each Grow step
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=512)
    max_per_problem: int | None = Field(10, ge=1)  # ReST-EM's cap on kept solutions
    reward: Literal["verifier", "judge"] = "verifier"
    reward_backend: str = "reward"  # the grading role when reward is "judge"
    thresholds: list[float] = Field(default_factory=lambda: [1.0], min_length=1)

    @field_validator("thresholds")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b < a for a, b in itertools.pairwise(value)):
            raise ValueError("thresholds must not decrease from one Improve step to the next")
        if any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError("thresholds are rewards between 0 and 1")
        return value


class ReSTEM(SelfTraining[ReSTOptions]):
    """Grow (k samples, rewarded) then Improve steps (threshold, cap, train, switch)."""

    Options: ClassVar[type[StepOptions]] = ReSTOptions

    def provides(self) -> set[str]:
        return {"rationale", "messages", "round", "grow", "reward"}

    def uses(self) -> list[Uses]:
        found = [Uses(self.options.backend)]
        if self.options.reward == "judge":
            found.append(Uses(self.options.reward_backend))
        return found

    def planned_rounds(self) -> int:
        """One round per Improve step of every Grow step (one Grow step without a command)."""
        steps = len(self.options.thresholds)
        return self.options.rounds * steps if self.options.between_rounds else 1

    def plan(self, index: int) -> tuple[int, int, float]:
        """(Grow step, Improve step, threshold) of round `index`."""
        thresholds = self.options.thresholds
        if not self.options.between_rounds:  # one Grow step, filtered at the last threshold
            return 0, len(thresholds) - 1, thresholds[-1]
        return index // len(thresholds), index % len(thresholds), \
            thresholds[index % len(thresholds)]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        await super().start(pool, ctx)
        self.grown: dict[str, list[Scored]] = {}

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        grow, improve, threshold = self.plan(index)
        if improve == 0:
            self.grown = {}
        ctx.note_round(index, grow=grow, improve=improve, threshold=threshold)
        records, stop = await super().round(index, ctx)
        samples = [s for scored in self.grown.values() for s in scored]
        ctx.note_round(index, generated=len(samples),
                       passed=sum(1 for s in samples
                                  if s.reward is not None and s.reward >= threshold))
        return records, stop

    async def solve(self, record: Record, index: int, ctx: StepContext) -> list[Record]:
        grow, _, threshold = self.plan(index)
        key = record_id(record)
        if key not in self.grown:
            self.grown[key] = await self._grow(record, grow, ctx)
        passed: list[tuple[Record, Scored]] = []
        below: list[tuple[Record, Scored]] = []
        for j, sample in enumerate(self.grown[key]):
            made = self._made(record, sample, j, index, grow, threshold, ctx)
            ok = sample.reward is not None and sample.reward >= threshold
            (passed if ok else below).append((made, sample))
        for made, sample in below:
            ctx.drop(made, *self._why(sample, threshold))
        cap = self.options.max_per_problem
        if cap is not None and len(passed) > cap:
            chosen = set(ctx.rng(record, "cap", index).sample(range(len(passed)), cap))
            for i, (made, _) in enumerate(passed):
                if i not in chosen:
                    ctx.drop(made, "over the per-problem cap", f"{len(passed)} passed, cap {cap}")
            passed = [p for i, p in enumerate(passed) if i in chosen]
        return [made for made, _ in passed]

    def _why(self, sample: Scored, threshold: float) -> tuple[str, str | None]:
        """The drop reason of a sample whose reward misses the threshold, and its detail."""
        if sample.reward is None:
            return "reward unreadable", None
        if self.options.reward == "verifier":
            v = sample.verdict
            return ("no answer found" if v.predicted is None else "wrong answer",
                    f"predicted {v.predicted!r}, gold {v.gold!r}")
        return "below threshold", f"reward {sample.reward} < {threshold}"

    async def _grow(self, record: Record, grow: int, ctx: StepContext) -> list[Scored]:
        """k samples from the current model, each with its verdict and reward."""
        o = self.options
        question = question_of(record, o.question_field)
        gold = gold_of_record(record, o.answer_field)
        reply = await ctx.generate(solve_prompt(question, o.shots), o.sampling, n=o.k,
                                   seed=ctx.seed_for(record, "grow", grow))
        samples = [replace(reply, completions=(one,)) for one in reply.completions]
        verdicts = [check(sample.text, gold) for sample in samples]
        if o.reward == "verifier":
            rewards: list[float | None] = [float(v.correct) for v in verdicts]
        else:
            rewards = list(await asyncio.gather(*(
                self._grade(record, question, gold, s.text, grow, j, ctx)
                for j, s in enumerate(samples))))
        return [Scored(s, v, r) for s, v, r in zip(samples, verdicts, rewards, strict=True)]

    async def _grade(self, record: Record, question: str, gold: str, solution: str,
                     grow: int, j: int, ctx: StepContext) -> float | None:
        """The reward model's grade of one solution, in [0, 1] (None if unreadable)."""
        prompt = _GRADE_PROMPT.format(question=question, gold=gold, solution=solution)
        reply = await ctx.attempt(ctx.generate(
            [{"role": "user", "content": prompt}], GRADE, role=self.options.reward_backend,
            seed=ctx.seed_for(record, "grade", grow, j)), record)
        found = re.search(r"\d+(?:\.\d+)?", reply.text) if reply is not None else None
        if found is None:
            return None
        return min(float(found.group(0)), 10.0) / 10.0

    def _made(self, record: Record, sample: Scored, j: int, index: int, grow: int,
              threshold: float, ctx: StepContext) -> Record:
        question = question_of(record, self.options.question_field)
        fields = solution_record(record, question, sample.reply.text, sample.verdict,
                                 round=index, grow=grow, reward=sample.reward)
        fields["_meta"]["verifier"].update(reward=sample.reward, threshold=threshold)
        return ctx.derive([record], fields, f"{index}.{j}", sample.reply)

