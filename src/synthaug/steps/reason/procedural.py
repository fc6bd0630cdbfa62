"""Procedural math problems without a model (AMPS-style; Hendrycks et al., 2021).

AMPS's Mathematica half is 100 hand-designed modules, each a problem type whose parameters are
drawn at random and whose answer the computer algebra system computes; 37 modules also write
a step-by-step solution. Here each module is a pair of functions over sympy:

    make(rng, level) -> Problem     the question (LaTeX), exact answer, worked steps, parameters
    verify(problem)  -> Checked     an independent computation from the parameters alone
                                    (substitution, brute-force enumeration, differentiating an
                                    antiderivative, numeric limits); raises Unverified

A problem is kept only when it verifies and its answer text is equivalent, under the math
answer verifier (`answers.equivalent`), to the independently computed or checked value.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from pydantic import Field, field_validator

from synthaug.records import Record
from synthaug.steps.base import Generator, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.reason.common import verified
from synthaug.verify.answers import Verdict, equivalent

LEVELS = (1, 2, 3)


class Unverified(Exception):
    """The independent computation disagrees with the problem's answer."""


@dataclass(frozen=True)
class Problem:
    """One generated problem; `value` is the answer as an object `verify` can test."""

    question: str
    answer: str
    steps: list[str]
    params: dict[str, Any]
    value: Any = None


@dataclass(frozen=True)
class Checked:
    """How a problem was verified, and the verified answer as LaTeX: computed independently,
    or (where the check is a property such as substitution) the value that passed it."""

    method: str
    independent: str


@dataclass(frozen=True)
class Module:
    """A problem type: its topic, generator and independent verifier."""

    name: str
    topic: str
    make: Callable[[random.Random, int], Problem]
    verify: Callable[[Problem], Checked]


def confirm(ok: bool, method: str, independent: str) -> Checked:
    """`Checked(method, independent)` when `ok`, else raise Unverified naming the method."""
    if not ok:
        raise Unverified(f"failed: {method}")
    return Checked(method, independent)


@cache
def modules() -> dict[str, Module]:
    """Every module by name (the topic files are imported on first use)."""
    from synthaug.steps.reason import procedural_algebra, procedural_analysis

    found = [*procedural_algebra.MODULES, *procedural_analysis.MODULES]
    return {m.name: m for m in found}


def topics() -> list[str]:
    """The topic names, in a stable order."""
    return sorted({m.topic for m in modules().values()})


def solution_text(problem: Problem) -> str:
    """The worked solution: one step a line, then the boxed final answer."""
    return "\n".join([*problem.steps, f"The answer is $\\boxed{{{problem.answer}}}$."])


class ProceduralOptions(StepOptions):
    """Options of math-procedural."""

    count: int = Field(40, ge=1)
    topics: list[str] | None = None  # default: every topic
    difficulty: list[int] = list(LEVELS)  # levels drawn from (1 easiest .. 3 hardest)
    redraws: int = Field(20, ge=1)  # tries for a problem not produced before

    @field_validator("difficulty", mode="before")
    @classmethod
    def _one_level(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("difficulty")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if not value or any(level not in LEVELS for level in value):
            raise ValueError(f"difficulty levels must be among {list(LEVELS)}")
        return value

    @field_validator("topics")
    @classmethod
    def _known_topics(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(topics()))
        if unknown or value == []:
            raise ValueError(f"unknown topics {unknown}: choose among {topics()}")
        return value


class ProceduralMath(Generator[ProceduralOptions]):
    """`count` problems, topics in turn, each from a random module of its topic and a random
    difficulty, seeded by the run seed; kept only when an independent computation agrees."""

    Options: ClassVar[type[StepOptions]] = ProceduralOptions

    def provides(self) -> set[str] | None:
        return {"question", "answer", "solution", "topic", "module", "difficulty", "messages"}

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        o = self.options
        chosen = o.topics or topics()
        by_topic = {t: sorted(n for n, m in modules().items() if m.topic == t) for t in chosen}
        seen: set[str] = set()
        for index in range(o.count):
            topic = chosen[index % len(chosen)]
            made = self._fresh(by_topic[topic], index, seen, ctx)
            if made is None:
                continue
            module, level, problem = made
            seen.add(problem.question)
            record = self._record(module, level, problem, index, ctx)
            if record is not None:
                yield record

    def _fresh(self, names: list[str], index: int, seen: set[str],
               ctx: StepContext) -> tuple[Module, int, Problem] | None:
        """A problem not generated before in this run (redrawn up to `redraws` times)."""
        for attempt in range(self.options.redraws):
            rng = ctx.rng(None, "problem", index, attempt)
            module = modules()[rng.choice(names)]
            level = rng.choice(self.options.difficulty)
            problem = module.make(rng, level)
            if problem.question not in seen:
                return module, level, problem
            ctx.stats.notes["duplicate redrawn"] += 1
        ctx.fail({"slot": index, "modules": names}, "no new problem after "
                 f"{self.options.redraws} draws (too few distinct problems at this difficulty)")
        return None

    def _record(self, module: Module, level: int, problem: Problem, index: int,
                ctx: StepContext) -> Record | None:
        """The output record, or None after dropping a problem that does not verify."""
        solution = solution_text(problem)
        fields: Record = {
            "question": problem.question, "answer": problem.answer, "solution": solution,
            "topic": module.topic, "module": module.name, "difficulty": level,
            "messages": [{"role": "user", "content": problem.question},
                         {"role": "assistant", "content": solution}],
            "_meta": {"procedural": {"module": module.name, "params": problem.params}}}
        made = ctx.derive([], fields, index)
        try:
            checked = module.verify(problem)
        except Unverified as exc:
            ctx.drop(made, "not verified", str(exc))
            return None
        if not equivalent(problem.answer, checked.independent):
            ctx.drop(made, "answer differs from the independent computation",
                     f"{problem.answer} vs {checked.independent}")
            return None
        verdict = Verdict(True, problem.answer, checked.independent, "match")
        return verified(made, verdict, verifier="sympy-independent", method=checked.method)
