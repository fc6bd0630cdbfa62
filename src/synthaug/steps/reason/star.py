"""STaR, the Self-Taught Reasoner (Zelikman et al., 2022, arXiv:2203.14465).

Each outer iteration (a round) answers every problem with a few-shot rationale prompt and
keeps the rationales that reach the gold answer. For a problem answered wrongly, it
rationalizes: the same prompt with the gold answer as a hint after the question (in the
exemplars too) asks for a rationale again; one that reaches the answer is kept as if the
model had produced it without the hint (the training pair is the bare question and the
rationale), and one that mentions being given the answer is dropped. The `between_rounds`
command fine-tunes on the round's records (the paper restarts from the base model each time
with more steps) and switches the backend, so the next round re-generates over the whole
dataset with the new model.
"""

from __future__ import annotations

import re
from typing import ClassVar

from synthaug.records import Record
from synthaug.steps.base import StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply
from synthaug.steps.reason.common import (
    COT_INSTRUCTION,
    cot_shots,
    gold_of_record,
    question_of,
    solve_prompt,
)
from synthaug.steps.reason.selftrain import SelfTraining, SelfTrainOptions, solution_record
from synthaug.verify.answers import Verdict, check, extract_answer

RATIONALIZE_INSTRUCTION = (COT_INSTRUCTION + " The answer is given in parentheses after each "
                           "problem; explain how to reach it as if you had worked it out "
                           "yourself, without mentioning that it was given.")
# a rationale that refers to the hint is not one the model could write without it
_HINT_MENTION = re.compile(
    r"\bhint\b|\(answer:|answer key|\b(?:correct|given|provided|expected) answer\b"
    r"|\banswer (?:is|was) (?:given|provided|stated)\b|\b(?:we are|we were|i am|i was) told\b"
    r"|\bas (?:given|stated|indicated) (?:in|by|above)\b|\bin parenthes[ie]s\b",
    re.IGNORECASE)


def with_hint(question: str, answer: str) -> str:
    """The question with its answer as STaR's rationalization hint."""
    return f"{question} (Answer: {answer})"


def rationalization_prompt(question: str, gold: str, shots: int) -> list[dict[str, str]]:
    """The few-shot prompt with every question followed by its answer."""
    messages = [{"role": "system", "content": RATIONALIZE_INSTRUCTION}]
    for shot in cot_shots()[:shots]:
        answer = extract_answer(shot["solution"]) or ""
        messages += [{"role": "user", "content": with_hint(shot["question"], answer)},
                     {"role": "assistant", "content": shot["solution"]}]
    return [*messages, {"role": "user", "content": with_hint(question, gold)}]


def mentions_hint(rationale: str) -> str | None:
    """What in `rationale` betrays that the answer was given (the hint's own form included),
    or None."""
    found = _HINT_MENTION.search(rationale)
    return found.group(0) if found else None


class STaROptions(SelfTrainOptions):
    """Options of star."""

    rationalize: bool = True  # retry failures with the gold answer as a hint


class STaR(SelfTraining[STaROptions]):
    """Rationales that reach the gold answer, rationalized with a hint where they do not."""

    Options: ClassVar[type[StepOptions]] = STaROptions

    def provides(self) -> set[str]:
        return {"rationale", "messages", "round", "origin"}

    async def solve(self, record: Record, index: int, ctx: StepContext) -> list[Record]:
        o = self.options
        question = question_of(record, o.question_field)
        gold = gold_of_record(record, o.answer_field)
        reply = await ctx.generate(solve_prompt(question, o.shots), o.sampling,
                                   seed=ctx.seed_for(record, "rationale", index))
        verdict = check(reply.text, gold)
        first = self._made(record, question, reply, verdict, index, "rationale", ctx)
        if verdict.correct:
            return [first]
        ctx.drop(first, "wrong answer", _missed(verdict))
        if not o.rationalize:
            return []
        return await self._rationalize(record, question, gold, index, ctx)

    async def _rationalize(self, record: Record, question: str, gold: str, index: int,
                           ctx: StepContext) -> list[Record]:
        """A rationale written with the answer in view, kept only if it does not need it."""
        o = self.options
        reply = await ctx.generate(rationalization_prompt(question, gold, o.shots), o.sampling,
                                   seed=ctx.seed_for(record, "rationalization", index))
        verdict = check(reply.text, gold)
        made = self._made(record, question, reply, verdict, index, "rationalization", ctx)
        if not verdict.correct:
            ctx.drop(made, "rationalization wrong", _missed(verdict))
            return []
        leak = mentions_hint(reply.text)
        if leak:
            ctx.drop(made, "mentions the hint", leak)
            return []
        return [made]

    def _made(self, record: Record, question: str, reply: Reply, verdict: Verdict, index: int,
              origin: str, ctx: StepContext) -> Record:
        """The record of one rationale: the bare question, never the hinted prompt."""
        fields = solution_record(record, question, reply.text, verdict, round=index,
                                 origin=origin)
        return ctx.derive([record], fields, f"{index}.{origin}", reply)


def _missed(verdict: Verdict) -> str:
    return f"predicted {verdict.predicted!r}, gold {verdict.gold!r}"

