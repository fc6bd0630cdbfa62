"""LLM2LLM (Lee et al., 2024, arXiv:2403.15042): targeted, iterative data enhancement.

Each round n: the student (fine-tuned on the training set D_n) answers every *seed* problem;
the seed problems it gets wrong go to the teacher, which writes new problems like each one
(same skill, new numbers and story) with a worked solution and answer; they join the training
set, D_{n+1} = D_n + A_n. Only the seed data is evaluated each round: an augmented problem the
student fails is never augmented again. The `between_rounds` command fine-tunes the student
on D_{n+1} (written beside the round's records as round-N.train.jsonl) and may switch the
student role to the new model for the next round.
"""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar

from pydantic import Field

from synthaug.errors import ConfigError, ParseError, RecordError
from synthaug.records import Record, content, dumps
from synthaug.steps.base import Requirements, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Sampling, Uses
from synthaug.steps.reason.common import (
    GOLD_TYPES,
    gold_of_record,
    question_of,
    solve_prompt,
    verified,
)
from synthaug.steps.reason.selftrain import sft_messages
from synthaug.verify.answers import Verdict, check, equivalent, extract_answer, last_number

TEACHER_SYSTEM = (
    "You write practice problems for a student model. The student got the problem below "
    "wrong. Write new problems that exercise the same reasoning: keep the kind of problem and "
    "its difficulty, change the story, names and numbers. Each new problem must be solvable "
    "and have one numeric answer.")
TEACHER_FORMAT = ("Write {n} new problem(s). For each, use exactly this format:\n"
                  "Question: <the new problem>\nSolution: <a step-by-step solution>\n"
                  "Answer: <the final answer only>")
_BLOCK = re.compile(r"Question:\s*(?P<question>.+?)\s*Solution:\s*(?P<solution>.+?)\s*"
                    r"Answer:\s*(?P<answer>[^\n]+)", re.DOTALL | re.IGNORECASE)


_SHOT_PROBLEM = ("A shop sells pens in packs of 6. Ana buys 4 packs and gives 5 pens to her "
                 "brother. How many pens does she have left?")
_SHOT_REPLY = ("Question: A baker puts 8 rolls on each tray. He fills 3 trays and sells 10 "
               "rolls. How many rolls are left?\nSolution: He bakes 8 * 3 = 24 rolls. After "
               "selling 10 he has 24 - 10 = 14 rolls.\nAnswer: 14")


def _teacher_request(question: str, gold: str, n: int) -> str:
    return f"Problem: {question}\nReference answer: {gold}\n\n" + TEACHER_FORMAT.format(n=n)


def teacher_prompt(question: str, gold: str, n: int) -> Prompt:
    """The teacher's request: the failed seed problem with its reference answer, after one
    worked example of the reply format."""
    return [{"role": "system", "content": TEACHER_SYSTEM},
            {"role": "user", "content": _teacher_request(_SHOT_PROBLEM, "19", 1)},
            {"role": "assistant", "content": _SHOT_REPLY},
            {"role": "user", "content": _teacher_request(question, gold, n)}]


def new_examples(text: str) -> list[tuple[str, str, str]]:
    """(question, solution, answer) of each new problem in a teacher reply."""
    found = [(m["question"].strip(), m["solution"].strip(), m["answer"].strip().rstrip("."))
             for m in _BLOCK.finditer(text)]
    if not found:
        raise ParseError("no 'Question: ... Solution: ... Answer: ...' block in the reply",
                         raw=[text])
    return found


def consistent(solution: str, answer: str) -> tuple[str, Verdict] | None:
    """The solution for training (ending at its answer) and the verdict that its final answer
    is the stated one; None when it ends at another answer. A solution stating no final answer
    must end at the stated answer's number, which is then stated."""
    if extract_answer(solution) is None:
        last = last_number(solution)
        if last is None or not equivalent(last, answer):
            return None
        solution = f"{solution}\nThe answer is {answer}."
    verdict = check(solution, answer)
    return (solution, verdict) if verdict.correct else None


class LLM2LLMOptions(RoundsOptions):
    """Options of llm2llm."""

    student: str = "default"  # the main role: a between-rounds switch retargets it
    teacher: str = "teacher"
    question_field: str = "question"
    answer_field: str = "answer"
    shots: int = Field(4, ge=0)  # worked examples in the student's prompt
    per_error: int = Field(1, ge=1)  # new problems per wrong seed problem per round
    student_sampling: Sampling = Sampling(temperature=0.0, max_tokens=384)
    teacher_sampling: Sampling = Sampling(temperature=0.7, max_tokens=768)


class LLM2LLM(Rounds[LLM2LLMOptions]):
    """Student errors on the seed set -> teacher writes similar problems -> rounds."""

    Options: ClassVar[type[StepOptions]] = LLM2LLMOptions

    def requires(self) -> Requirements:
        o = self.options
        return {o.question_field: str, o.answer_field: GOLD_TYPES}

    def provides(self) -> set[str]:
        return {"question", "answer", "solution", "messages", "round", "seed_question"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.student), Uses(self.options.teacher)]

    def prepare(self) -> None:
        o = self.options
        if o.between_rounds and o.student == o.teacher:
            raise ConfigError(f"student and teacher share the role '{o.student}': the model "
                              "trained between rounds would replace the teacher too; give the "
                              "teacher its own backend role", field="teacher")

    def planned_rounds(self) -> int:
        """The rounds asked for when a command trains the student between them; else one (the
        same student would fail the same seed problems again)."""
        return self.options.rounds if self.options.between_rounds else 1

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        o = self.options
        if self.planned_rounds() < o.rounds:
            ctx.stats.notes["one round: no between_rounds command trains the student"] = 1
        self.seeds: list[Record] = []
        for record in pool:
            try:
                question_of(record, o.question_field)
                gold_of_record(record, o.answer_field)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            self.seeds.append(record)
        self.augmented: list[Record] = []
        self.questions = {question_of(r, o.question_field).strip() for r in self.seeds}

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        graded = await asyncio.gather(*(ctx.attempt(self._grade(seed, index, ctx), seed)
                                        for seed in self.seeds))
        wrong = [(seed, verdict) for seed, verdict in zip(self.seeds, graded, strict=True)
                 if verdict is not None and not verdict.correct]
        made = await asyncio.gather(*(ctx.attempt(self._teach(seed, verdict, index, ctx), seed)
                                      for seed, verdict in wrong))
        records = [r for found in made for r in found or ()]
        self.augmented += records
        self._write_training_set(index, ctx)
        evaluated = sum(v is not None for v in graded)
        ctx.note_round(index, seed_evaluated=evaluated, seed_wrong=len(wrong),
                       seed_accuracy=round(1 - len(wrong) / evaluated, 4) if evaluated else None,
                       new_examples=len(records), training_set=len(self.seeds) + len(
                           self.augmented))
        return records, not wrong

    async def _grade(self, seed: Record, index: int, ctx: StepContext) -> Verdict:
        """The student's answer to one seed problem, checked against its gold answer."""
        o = self.options
        reply = await ctx.generate(solve_prompt(question_of(seed, o.question_field), o.shots),
                                   o.student_sampling, seed=ctx.seed_for(seed, "student", index),
                                   role=o.student)
        return check(reply.text, gold_of_record(seed, o.answer_field))

    async def _teach(self, seed: Record, verdict: Verdict, index: int,
                     ctx: StepContext) -> list[Record]:
        """New problems like a failed seed problem, from the teacher, each consistent."""
        o = self.options
        question, gold = question_of(seed, o.question_field), gold_of_record(seed, o.answer_field)
        reply = await ctx.generate(teacher_prompt(question, gold, o.per_error),
                                   o.teacher_sampling, seed=ctx.seed_for(seed, "teacher", index),
                                   role=o.teacher)
        found = []
        for j, example in enumerate(new_examples(reply.text)):
            made = ctx.derive([seed], self._fields(seed, example, index, verdict, ctx),
                              f"{index}.{j}", reply)
            record = self._kept(made, ctx)
            if record is not None:
                found.append(record)
        return found

    def _fields(self, seed: Record, example: tuple[str, str, str], index: int,
                student: Verdict, ctx: StepContext) -> Record:
        """An augmented example's fields, with what the student answered to its seed."""
        question, solution, answer = example
        return {**content(seed), "question": question, "answer": answer, "solution": solution,
                "messages": sft_messages(question, solution), "round": index,
                "seed_question": question_of(seed, self.options.question_field),
                "_meta": {"llm2llm": {"round": index, "student_model": ctx.model(
                    self.options.student), "student_answer": student.predicted}}}

    def _kept(self, made: Record, ctx: StepContext) -> Record | None:
        """The example with its verdict, or None after dropping it with its reason."""
        question, solution, answer = made["question"], made["solution"], made["answer"]
        if question.strip() in self.questions:
            ctx.drop(made, "duplicate question")
            return None
        kept = consistent(solution, answer)
        if kept is None:
            ctx.drop(made, "solution ends at another answer",
                     f"states {answer}, solution ends at "
                     f"{extract_answer(solution) or last_number(solution)}")
            return None
        self.questions.add(question.strip())
        text, verdict = kept
        made.update(solution=text, messages=sft_messages(question, text))
        return verified(made, verdict, check="the solution's final answer is the stated answer")

    def _write_training_set(self, index: int, ctx: StepContext) -> None:
        """D_{n+1}: the seed problems and every augmented example so far, for the trainer."""
        path = ctx.round_file(index, ".train.jsonl")
        with path.open("w", encoding="utf-8") as handle:
            for record in [*self.seeds, *self.augmented]:
                handle.write(dumps(record) + "\n")

