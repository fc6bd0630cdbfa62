"""MetaMath (Yu et al., 2023): bootstrap each question forward and backward; keep an
augmented answer only when the verifier accepts it.

    AnsAug     chain-of-thought answers sampled for the original question, kept when they
               reach its answer
    Rephrased  the question rephrased by the model; answers sampled for the rephrasing, kept
               when they reach the original answer
    SV         a number of the question masked as x and the asking sentence rewritten, with
               the answer, into a statement, then "What is the value of unknown variable x?";
               answers kept when they reach the masked number
    FOBAR      the masked question followed by "If we know the answer to the above question is
               A, what is the value of unknown variable x?"; answers kept when they reach the
               masked number
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import gold_of_record, question_of, solve_prompt, verified
from synthaug.verify.answers import check, equivalent, gold_of, normalize

Mode = Literal["AnsAug", "Rephrased", "SV", "FOBAR"]
MODES: tuple[Mode, ...] = ("AnsAug", "Rephrased", "SV", "FOBAR")
FOBAR_TEMPLATE = ("If we know the answer to the above question is {answer}, what is the value "
                  "of unknown variable x?")
SV_QUESTION = "What is the value of unknown variable x?"
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?!\w)")
# a number as a statement writes it: signed, with thousands commas, decimals or a fraction
_STATED = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?(?![\w/]|\.\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

_REPHRASE = (
    "Rephrase the math question below. Keep its meaning and every number; change the wording "
    "and sentence order. Write only the rephrased question.\n\n"
    "Question: Sam has 5 boxes with 8 pencils in each box. He gives away 13 pencils. How many "
    "pencils does he have left?\n"
    "Rephrased question: After giving away 13 pencils, how many pencils remain with Sam if he "
    "had 5 boxes holding 8 pencils each?\n\n"
    "Question: {question}\nRephrased question:")
_STATEMENT = (
    "Rewrite each question and its answer as one declarative sentence that states the answer."
    "\n\nQuestion: How many pencils does he have left?\nAnswer: 27\n"
    "Statement: He has 27 pencils left.\n\n"
    "Question: What do 2 adults and 3 children pay in total?\nAnswer: 45\n"
    "Statement: 2 adults and 3 children pay 45 dollars in total.\n\n"
    "Question: {asked}\nAnswer: {answer}\nStatement:")


def problem(record: Record, question_field: str, answer_field: str) -> tuple[str, str]:
    """A record's question and its gold final answer; RecordError if either is unusable."""
    question = question_of(record, question_field)
    gold = gold_of(gold_of_record(record, answer_field))
    if not gold:
        raise RecordError(answer_field, "empty answer")
    return question, gold


def numbers(text: str) -> list[re.Match[str]]:
    """The numbers written in `text` (not parts of words or decimals)."""
    return list(_NUMBER.finditer(text))


def mask_number(text: str, rng: random.Random) -> tuple[str, str] | None:
    """`text` with one of its numbers replaced by x, and that number; None if it has none.

    A number written once is preferred, so that x names one quantity.
    """
    found = numbers(text)
    values = [m.group().replace(",", "") for m in found]
    once = [m for m, v in zip(found, values, strict=True) if values.count(v) == 1]
    choices = once or found
    if not choices:
        return None
    chosen = rng.choice(choices)
    return text[:chosen.start()] + "x" + text[chosen.end():], chosen.group().replace(",", "")


def split_asked(question: str) -> tuple[str, str]:
    """(body, asked): the question's last sentence (the one asking) and what precedes it."""
    parts = _SENTENCE_END.split(question.strip())
    return " ".join(parts[:-1]), parts[-1]


def states(statement: str, answer: str) -> bool:
    """True when `statement` writes `answer`: a numeric answer as one of its numbers, compared
    as numbers ("12 buses" does not state 2); another answer (LaTeX, an expression) verbatim
    and standing alone, or as a number equivalent to it."""
    written = [m.group().replace(",", "") for m in _STATED.finditer(statement)]
    if _STATED.fullmatch(normalize(answer).replace(" ", "")):
        return any(equivalent(number, answer) for number in written)
    alone = re.compile(rf"(?<![\w.]){re.escape(answer.strip())}(?!\w|\.\d)")
    return bool(alone.search(statement)) or any(equivalent(n, answer) for n in written)


@dataclass
class Built:
    """An augmented question, the answer it must reach, and the calls that made it."""

    mode: Mode
    question: str
    target: str
    fields: dict[str, Any] = field(default_factory=dict)
    replies: tuple[Reply, ...] = ()


class MetaMathOptions(EachOptions):
    """Options of metamath."""

    backend: str = "default"
    modes: list[Mode] = list(MODES)
    samples: int = Field(4, ge=1)  # answers sampled per augmented question
    shots: int = Field(4, ge=0)  # chain-of-thought exemplars in the answer prompt
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)  # answers
    rewrite_sampling: Sampling = Sampling(temperature=0.7, max_tokens=160)  # rephrase, SV
    question_field: str = "question"
    answer_field: str = "answer"


class MetaMathAugment(Each[MetaMathOptions]):
    """AnsAug, rephrasing, SV and FOBAR questions with verified chain-of-thought answers."""

    Options: ClassVar[type[StepOptions]] = MetaMathOptions

    def requires(self) -> Requirements:
        return {self.options.question_field: str,
                self.options.answer_field: (str, int, float)}

    def provides(self) -> set[str]:
        return {"question", "response", "answer", "type", "original_question",
                "original_answer"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question, gold = problem(record, o.question_field, o.answer_field)
        done = await asyncio.gather(*(
            ctx.attempt(self._mode(mode, record, question, gold, ctx), record)
            for mode in dict.fromkeys(o.modes)))
        return [out for outputs in done for out in outputs or ()]

    async def _mode(self, mode: Mode, record: Record, question: str, gold: str,
                    ctx: StepContext) -> list[Record]:
        build = {"AnsAug": self._ansaug, "Rephrased": self._rephrase, "SV": self._sv,
                 "FOBAR": self._fobar}[mode]
        built = await build(record, question, gold, ctx)
        if built is None:
            return []
        return await self._answers(record, question, gold, built, ctx)

    async def _rewrite(self, record: Record, prompt: str, ctx: StepContext, salt: str) -> Reply:
        return await ctx.generate([{"role": "user", "content": prompt}],
                                  self.options.rewrite_sampling, seed=ctx.seed_for(record, salt))

    async def _ansaug(self, record: Record, question: str, gold: str,
                      ctx: StepContext) -> Built:
        return Built("AnsAug", question, gold)

    async def _rephrase(self, record: Record, question: str, gold: str,
                        ctx: StepContext) -> Built | None:
        reply = await self._rewrite(record, _REPHRASE.format(question=question), ctx, "rephrase")
        text = reply.text.strip().split("\n\n")[0].strip()
        text = re.sub(r"^rephrased question:\s*", "", text, flags=re.IGNORECASE)
        if not text:
            ctx.drop(record, "Rephrased: empty rephrasing", reply.text)
            return None
        return Built("Rephrased", text, gold, replies=(reply,))

    async def _sv(self, record: Record, question: str, gold: str,
                  ctx: StepContext) -> Built | None:
        body, asked = split_asked(question)
        masked = mask_number(body, ctx.rng(record, "SV"))
        if masked is None:
            ctx.drop(record, "SV: no number to mask", "the sentences before the question "
                     "hold no number")
            return None
        masked_body, value = masked
        reply = await self._rewrite(record, _STATEMENT.format(asked=asked, answer=gold), ctx,
                                    "statement")
        statement = reply.text.strip().split("\n")[0].strip()
        if not states(statement, gold):
            ctx.drop(record, "SV: the statement does not state the answer", reply.text)
            return None
        text = f"{masked_body} {statement} {SV_QUESTION}"
        return Built("SV", text, value, {"masked_number": value, "statement": statement},
                     (reply,))

    async def _fobar(self, record: Record, question: str, gold: str,
                     ctx: StepContext) -> Built | None:
        masked = mask_number(question, ctx.rng(record, "FOBAR"))
        if masked is None:
            ctx.drop(record, "FOBAR: no number to mask", "the question holds no number")
            return None
        masked_question, value = masked
        text = f"{masked_question} {FOBAR_TEMPLATE.format(answer=gold)}"
        return Built("FOBAR", text, value, {"masked_number": value})

    async def _answers(self, record: Record, question: str, gold: str, built: Built,
                       ctx: StepContext) -> list[Record]:
        """Sampled answers to the built question; only those the verifier accepts are kept."""
        o = self.options
        reply = await ctx.generate(solve_prompt(built.question, o.shots), o.sampling,
                                   seed=ctx.seed_for(record, built.mode), n=o.samples)
        base = {**content(record), **built.fields, "question": built.question,
                "answer": built.target, "type": built.mode, "original_question": question,
                "original_answer": gold}
        kept = []
        for k, text in enumerate(reply.texts):
            verdict = check(text, built.target)
            made = ctx.derive([record], verified({**base, "response": text}, verdict),
                              f"{built.mode}.{k}", *built.replies, reply)
            if verdict.correct:
                kept.append(made)
            else:
                ctx.drop(made, f"{built.mode}: answer not verified",
                         f"{verdict.reason}: {verdict.predicted} vs {verdict.gold}")
        return kept
