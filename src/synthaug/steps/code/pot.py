"""Hybrid chain-of-thought and program-of-thought rationales (MathInstruct; Yue et al., 2023).

For each problem with a gold answer, the model writes rationales of two kinds: a step-by-step
solution (CoT) and a Python program that prints the answer (PoT). A program is run in the
sandbox and what it prints is compared with the gold answer (`answers.equivalent`); a CoT
solution is checked with `answers.check`. Only verified rationales are kept, each record naming
its kind (`rationale_type`) and carrying the verdict, and for PoT the execution result, in
`_meta.verifier`.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.code.programs import first_program, normalized, open_sandbox
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses
from synthaug.steps.reason.common import solve_prompt, verified
from synthaug.template import text_field
from synthaug.verify.answers import Verdict, check, equivalent, extract_answer, gold_of
from synthaug.verify.sandbox import Limits, Result, Sandbox

Kind = Literal["cot", "pot"]
Judged = tuple[str | None, Verdict, dict[str, Any]]  # rationale, verdict, verifier extras
POT_INSTRUCTION = ("Solve the problem by writing a Python program. The program computes the "
                   "answer step by step in variables and ends by printing only the final "
                   "answer with print(). Reply with the program in a ```python block.")


@cache
def pot_shots() -> tuple[dict[str, str], ...]:
    """The shipped program-of-thought exemplars (question, program)."""
    text = resources.files("synthaug.data").joinpath("pot_shots.jsonl").read_text("utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def fenced(program: str) -> str:
    """A program as the assistant turn shows it."""
    return f"```python\n{program}\n```"


def pot_prompt(question: str, shots: int, trigger: str) -> Prompt:
    """Chat messages asking for a program that prints the answer, after worked examples."""
    messages: list[dict[str, str]] = [{"role": "system", "content": POT_INSTRUCTION}]
    for shot in pot_shots()[:shots]:
        messages += [{"role": "user", "content": f"{shot['question']}\n{trigger}"},
                     {"role": "assistant", "content": fenced(shot["program"])}]
    messages.append({"role": "user", "content": f"{question}\n{trigger}"})
    return messages


def printed_answer(result: Result) -> str | None:
    """What a finished program printed last (its answer), or None."""
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not result.ok or not lines:
        return None
    return extract_answer(lines[-1]) or lines[-1]


def execution(result: Result) -> dict[str, Any]:
    """The execution result a PoT record carries (output tails, not whole floods)."""
    return {"status": result.status, "exit_code": result.exit_code,
            "stdout": result.stdout[-500:], "stderr": result.stderr[-500:],
            "seconds": round(result.seconds, 3)}


class PoTOptions(EachOptions):
    """Options of program-of-thought."""

    backend: str = "default"
    question_field: str = "question"
    answer_field: str = "answer"
    rationales: list[Kind] = ["cot", "pot"]
    samples: int = Field(4, ge=1)  # sampled rationales per kind and problem
    keep: int = Field(1, ge=1)  # distinct verified rationales kept per kind and problem
    shots: int = Field(4, ge=0)
    trigger: str = "Let's write a Python program to solve it."
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=400)
    sandbox: Limits = Limits(timeout=5.0)
    unsafe_local: bool = False  # run programs without isolation (resource limits only)

    @field_validator("rationales")
    @classmethod
    def _some(cls, value: list[Kind]) -> list[Kind]:
        if not value:
            raise ValueError("name at least one rationale kind (cot, pot)")
        return list(dict.fromkeys(value))


class ProgramOfThought(Each[PoTOptions]):
    """CoT and PoT rationales per problem; programs run in the sandbox; verified ones kept."""

    Options: ClassVar[type[StepOptions]] = PoTOptions
    box: Sandbox

    def requires(self) -> Requirements:
        return {self.options.question_field: str,
                self.options.answer_field: (str, int, float)}

    def provides(self) -> set[str]:
        return {"rationale_type", "solution", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prepare(self) -> None:
        self.box = open_sandbox(self.options.sandbox, self.options.unsafe_local)

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        question = text_field(record, self.options.question_field)
        gold = str(record[self.options.answer_field])
        groups = await asyncio.gather(*(self._rationales(record, kind, question, gold, ctx)
                                        for kind in self.options.rationales))
        return [made for group in groups for made in group]

    def prompt(self, kind: Kind, question: str) -> Prompt:
        """The request for one kind of rationale (the gold answer is never in it)."""
        o = self.options
        return solve_prompt(question, o.shots) if kind == "cot" else \
            pot_prompt(question, o.shots, o.trigger)

    async def _rationales(self, record: Record, kind: Kind, question: str, gold: str,
                          ctx: StepContext) -> list[Record]:
        o = self.options
        reply = await ctx.generate(self.prompt(kind, question), o.sampling,
                                   seed=ctx.seed_for(record, kind), n=o.samples)
        judged = await asyncio.gather(*(self._judge(kind, text, gold) for text in reply.texts))
        ctx.stats.notes[f"{kind} samples"] += len(judged)
        kept: list[Record] = []
        unkept: list[tuple[int, str]] = []  # (sample, why it is not kept)
        seen: set[str] = set()
        for index, (rationale, verdict, extra) in enumerate(judged):
            if rationale is None or not verdict.correct:
                unkept.append((index, verdict.reason))
                continue
            key = normalized(rationale) if kind == "pot" else " ".join(rationale.split())
            if key in seen or len(kept) >= o.keep:
                unkept.append((index, "duplicate" if key in seen else "over keep"))
                continue
            seen.add(key)
            kept.append(self._record(record, kind, question, rationale, verdict, extra, index,
                                     reply, ctx))
        ctx.stats.notes[f"{kind} verified"] += sum(v.correct for _, v, _ in judged)
        tried = [{"sample": index, "rationale": judged[index][0] or reply.texts[index],
                  "predicted": judged[index][1].predicted, "reason": why, **judged[index][2]}
                 for index, why in unkept]
        _drop_unkept(record, kind, tried, bool(kept), ctx)
        return kept

    async def _judge(self, kind: Kind, text: str, gold: str) -> Judged:
        """(the rationale, its verdict, extra verifier fields) for one sample."""
        if kind == "cot":
            return text.strip(), check(text, gold), {"checked": "stated answer"}
        target = gold_of(gold)
        program = first_program(text)
        if program is None:
            return None, Verdict(False, None, target, "no program"), {}
        result = await self.box.run(program)
        printed = printed_answer(result)
        if printed is None:
            reason = "printed nothing" if result.ok else f"program {result.status}"
            verdict = Verdict(False, None, target, reason)
        else:
            ok = equivalent(printed, target)
            verdict = Verdict(ok, printed, target, "match" if ok else "mismatch")
        return program, verdict, {"checked": "program output", "execution": execution(result),
                                  "isolation": self.box.isolation}

    def _record(self, record: Record, kind: Kind, question: str, rationale: str,
                verdict: Verdict, extra: dict[str, Any], index: int, reply: Reply,
                ctx: StepContext) -> Record:
        asked = question if kind == "cot" else f"{question}\n{self.options.trigger}"
        shown = rationale if kind == "cot" else fenced(rationale)
        fields = {**content(record), "rationale_type": kind, "solution": rationale,
                  "messages": [{"role": "user", "content": asked},
                               {"role": "assistant", "content": shown}]}
        return ctx.derive([record], verified(fields, verdict, sample=index, **extra),
                          f"{kind}.{index}", reply)


def _drop_unkept(record: Record, kind: Kind, tried: list[dict[str, Any]], any_kept: bool,
                 ctx: StepContext) -> None:
    """Every sample not kept goes to dropped.jsonl with its reason and its verifier fields
    (for PoT the execution result): one row per sample beside a kept rationale, one row for
    the whole problem (listing every sample) when none is kept."""
    if not any_kept:
        reasons = sorted({str(row["reason"]) for row in tried})
        ctx.drop({**record, "rationale_type": kind, "samples": tried},
                 f"no verified {kind} rationale", f"{len(tried)} samples: {', '.join(reasons)}")
        return
    for row in tried:
        detail = {k: v for k, v in row.items() if k != "rationale"}
        ctx.drop({**record, "rationale_type": kind, "solution": row["rationale"]},
                 str(row["reason"]), json.dumps(detail, default=str))
