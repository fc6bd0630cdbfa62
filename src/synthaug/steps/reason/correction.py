"""LEMA, Learning from Mistakes (An et al., 2023): mistake-correction data.

A student model samples solutions; the verifier keeps the wrong ones as mistakes. A teacher
model, shown the problem and the wrong solution with numbered steps, names the first
incorrect step, explains why it is wrong and writes a corrected solution from that step on
(its "..." stands for the student's steps before it). A correction is kept only when the
corrected solution reaches the gold answer. The training record is the paper's: the problem
and the original solution in, "Incorrect Step / Explanation / Correct Solution" out.
"""

from __future__ import annotations

import asyncio
import json
import re
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import solution_steps, solve_prompt, verified
from synthaug.steps.reason.metamath import problem
from synthaug.verify.answers import Verdict, check

INSTRUCTION = ("For the following math word problem, the original solution may contain "
               "errors. Identify the incorrect step, explain why it is incorrect, and give "
               "the correct solution starting from that step.")
_PARSED = re.compile(r"Incorrect Step:\s*Step\s*(?P<step>\d+)\.?\s*\n+\s*Explanation:\s*"
                     r"(?P<why>.+?)\s*\n+\s*Correct Solution:\s*(?P<fix>.+)",
                     re.DOTALL | re.IGNORECASE)
_END = re.compile(r"\n\s*\}|\n\s*Question:")
_STEP_MARK = re.compile(r"^Step\s*\d+\s*:\s*", re.IGNORECASE)


@cache
def correction_shots() -> tuple[dict[str, Any], ...]:
    """The shipped worked corrections (question, solution, incorrect_step, explanation,
    correction)."""
    text = resources.files("synthaug.data").joinpath("lema_correction_shots.jsonl").read_text(
        "utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def numbered(steps: list[str]) -> str:
    """Steps as the paper shows them: 'Step 1: ...' one per line, in braces."""
    return "{\n" + "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1)) + "\n}"


def task(question: str, steps: list[str]) -> str:
    """The problem and the original solution, as the teacher and the trained model see it."""
    return f"Question: {question}\nOriginal Solution:\n{numbered(steps)}"


def target(step: int, explanation: str, fixed: list[str]) -> str:
    """The correction in the paper's format; a leading '...' keeps the steps before `step`."""
    if fixed and fixed[0] == "...":
        lines = ["..."] + [f"Step {i}: {s}" for i, s in enumerate(fixed[1:], step)]
    else:
        lines = [f"Step {i}: {s}" for i, s in enumerate(fixed, 1)]
    body = "\n".join(lines)
    return (f"Incorrect Step: Step {step}.\nExplanation: {explanation}\n"
            f"Correct Solution:\n{{\n{body}\n}}")


def teacher_prompt(question: str, steps: list[str]) -> list[dict[str, str]]:
    """The task, the worked corrections as earlier turns, then the wrong solution to correct."""
    messages = [{"role": "system", "content": INSTRUCTION}]
    for shot in correction_shots():
        messages += [
            {"role": "user", "content": task(shot["question"], shot["solution"])},
            {"role": "assistant", "content": target(shot["incorrect_step"], shot["explanation"],
                                                    shot["correction"])}]
    return [*messages, {"role": "user", "content": task(question, steps)}]


def parse_correction(text: str, steps: list[str]) -> tuple[int, str, list[str], list[str]]:
    """(incorrect step, explanation, corrected steps as written, full corrected solution)."""
    found = _PARSED.search(text)
    if not found:
        raise ParseError("the teacher's reply lacks 'Incorrect Step', 'Explanation' or "
                         "'Correct Solution'", raw=[text])
    step = int(found.group("step"))
    if not 1 <= step <= len(steps):
        raise ParseError(f"the teacher names step {step} of a {len(steps)}-step solution",
                         raw=[text])
    body = _END.split(found.group("fix"))[0].strip().lstrip("{").strip()
    lines = [_STEP_MARK.sub("", line.strip()) for line in body.splitlines() if line.strip()]
    written = [line for line in lines if line != "..."]
    if not written:
        raise ParseError("the teacher's corrected solution is empty", raw=[text])
    if lines[0] == "...":  # the student's steps before the incorrect one are kept
        return step, found.group("why").strip(), ["...", *written], steps[:step - 1] + written
    return step, found.group("why").strip(), written, written


class CorrectionOptions(EachOptions):
    """Options of correct-mistakes."""

    student_backend: str = "default"
    teacher_backend: str = "default"
    samples: int = Field(4, ge=1)  # student solutions sampled per problem
    shots: int = Field(4, ge=0)  # chain-of-thought exemplars in the student's prompt
    student_sampling: Sampling = Sampling(temperature=0.8, max_tokens=384)
    teacher_sampling: Sampling = Sampling(temperature=0.0, max_tokens=512)
    question_field: str = "question"
    answer_field: str = "answer"


class MistakeCorrection(Each[CorrectionOptions]):
    """Wrong student solutions corrected by a teacher; kept when the correction is right."""

    Options: ClassVar[type[StepOptions]] = CorrectionOptions

    def requires(self) -> Requirements:
        return {self.options.question_field: str,
                self.options.answer_field: (str, int, float)}

    def provides(self) -> set[str]:
        return {"instruction", "response", "question", "answer", "wrong_solution",
                "incorrect_step", "explanation", "corrected_solution", "type"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.student_backend), Uses(self.options.teacher_backend)]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question, gold = problem(record, o.question_field, o.answer_field)
        student = await ctx.generate(solve_prompt(question, o.shots), o.student_sampling,
                                     seed=ctx.seed_for(record, "student"),
                                     role=o.student_backend, n=o.samples)
        mistakes: dict[str, tuple[int, Verdict]] = {}
        for k, text in enumerate(student.texts):
            verdict = check(text, gold)
            reason = "correct: no mistake to learn from" if verdict.correct else \
                "duplicate wrong solution" if text.strip() in mistakes else None
            if reason:
                ctx.drop(ctx.derive([record], verified({**content(record), "solution": text},
                                                       verdict), f"student.{k}", student),
                         reason)
            else:
                mistakes[text.strip()] = (k, verdict)
        done = await asyncio.gather(*(
            ctx.attempt(self._correct(record, question, gold, text, k, wrong, student, ctx),
                        record)
            for text, (k, wrong) in mistakes.items()))
        return [made for made in done if made is not None]

    async def _correct(self, record: Record, question: str, gold: str, wrong: str, k: int,
                       wrong_verdict: Verdict, student: Reply,
                       ctx: StepContext) -> Record | None:
        o = self.options
        steps = solution_steps(wrong)
        reply = await ctx.generate(teacher_prompt(question, steps), o.teacher_sampling,
                                   seed=ctx.seed_for(record, "teacher", k),
                                   role=o.teacher_backend)
        step, why, fixed, full = parse_correction(reply.text, steps)
        corrected = "\n".join(full)
        verdict = check(corrected, gold)
        fields = {**content(record), "question": question, "answer": gold,
                  "wrong_solution": wrong, "incorrect_step": step, "explanation": why,
                  "corrected_solution": corrected, "type": "correction",
                  "instruction": f"{INSTRUCTION}\n\n{task(question, steps)}",
                  "response": target(step, why, fixed)}
        made = ctx.derive([record], verified(fields, verdict, student=wrong_verdict.as_meta()),
                          f"correction.{k}", student, reply)
        if not verdict.correct:
            ctx.drop(made, "the correction's final answer is wrong",
                     f"{verdict.reason}: {verdict.predicted} vs {verdict.gold}")
            return None
        return made
