"""Rejection sampling fine-tuning data (RFT; Yuan et al., 2023, arXiv:2308.01825).

For each problem, sample k reasoning paths (temperature 0.7) with a few-shot chain-of-thought
prompt; reject a path whose final answer is wrong or whose equations (calculator annotations
`<<48/2=24>>`, or plain `48 / 2 = 24`) do not compute; keep one path per distinct list of
equations. Among paths with the same equations the kept one is the farthest, by character
edit distance, from the other kept paths (the authors' released selection). With several
backend roles the paths of every model are pooled before the distinct selection (RFT-U).
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from synthaug.errors import MissingDependency
from synthaug.records import Record
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.reason.common import (
    GOLD_TYPES,
    equations,
    gold_of_record,
    question_of,
    solve_prompt,
)
from synthaug.steps.reason.selftrain import solution_record
from synthaug.verify.answers import Verdict, check

_OPS: dict[type[ast.AST], Callable[..., float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _value(node: ast.AST) -> float:
    """The value of an arithmetic expression tree (numbers and + - * / ** only)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        if isinstance(node.op, ast.Pow) and abs(_value(node.right)) > 64:
            raise ValueError("exponent too large")
        return float(_OPS[type(node.op)](_value(node.left), _value(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_value(node.operand)))
    raise ValueError("not arithmetic")


def evaluate(expression: str) -> float | None:
    """The value of an arithmetic expression as a calculator reads it; None if unreadable."""
    text = expression.replace("x", "*").replace("^", "**")
    if not text or "%" in text or len(text) > 200:
        return None
    try:
        return _value(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _computes(lhs: str, rhs: str) -> bool | None:
    """Whether `lhs` evaluates to `rhs` (to the precision `rhs` is written with)."""
    value, target = evaluate(lhs), evaluate(rhs)
    if value is None or target is None:
        return None
    decimals = len(rhs.split(".")[1]) if "." in rhs else 0
    tolerance = 0.5 * 10 ** -decimals + 1e-9 if decimals else 1e-3
    return abs(value - target) <= tolerance


def calculation_errors(solution: str) -> list[str]:
    """The equations of `solution` that do not compute (a chained `a = b + c = d` is read on
    from the previous result); equations a calculator cannot read are not judged."""
    wrong, previous = [], None
    for equation in equations(solution):
        lhs, _, rhs = equation.rpartition("=")
        verdicts = [_computes(lhs, rhs)]
        if previous is not None and lhs[:1] in "+-*/":
            verdicts.append(_computes(previous + lhs, rhs))
        if False in verdicts and True not in verdicts:
            wrong.append(equation)
        previous = rhs
    return wrong


def edit_distance() -> Callable[[str, str], int]:
    """Levenshtein distance between two strings, by character (in C, as the authors' code)."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        raise MissingDependency("rapidfuzz", "rft keep: farthest", "verify") from None
    return Levenshtein.distance


@dataclass
class Candidate:
    """One sampled reasoning path and what the checks found."""

    text: str
    reply: Reply
    verdict: Verdict
    equations: tuple[str, ...] = ()
    reason: str | None = None  # why it is rejected, None if kept


def select_distinct(paths: list[Candidate], keep: str) -> tuple[list[Candidate], list[Candidate]]:
    """One path per distinct equation list, and the duplicates: `first` keeps the earliest;
    `farthest` the one with the largest summed character edit distance to the other kept
    paths (the authors' released selection)."""
    distance = edit_distance() if keep == "farthest" else None
    kept: dict[tuple[str, ...], Candidate] = {}
    duplicates: list[Candidate] = []
    for path in paths:
        holder = kept.get(path.equations)
        if holder is None:
            kept[path.equations] = path
            continue
        if distance is not None:
            others = [p.text for k, p in kept.items() if k != path.equations]
            if sum(distance(path.text, o) for o in others) > \
                    sum(distance(holder.text, o) for o in others):
                kept[path.equations], path = path, holder
        duplicates.append(path)
    return list(kept.values()), duplicates


class RFTOptions(EachOptions):
    """Options of rft."""

    backends: list[str] = Field(default_factory=lambda: ["default"], min_length=1)  # RFT-U
    k: int = Field(100, ge=1)  # reasoning paths sampled per problem and backend
    shots: int = Field(4, ge=0)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=384)
    check_calculations: bool = True  # reject paths whose equations do not compute
    keep: Literal["farthest", "first"] = "farthest"  # which path of an equation list stays
    question_field: str = "question"
    answer_field: str = "answer"


class RejectionSampling(Each[RFTOptions]):
    """Keeps the distinct correct reasoning paths among k samples per problem."""

    Options: ClassVar[type[StepOptions]] = RFTOptions

    def requires(self) -> Requirements:
        return {self.options.question_field: str, self.options.answer_field: GOLD_TYPES}

    def provides(self) -> set[str]:
        return {"rationale", "messages", "equations"}

    def uses(self) -> list[Uses]:
        return [Uses(role) for role in dict.fromkeys(self.options.backends)]

    def prepare(self) -> None:
        if self.options.keep == "farthest":
            edit_distance()  # the C edit distance is installed (else MissingDependency)

    async def sample(self, record: Record, question: str, ctx: StepContext) -> list[Reply]:
        """k paths from every role, one reply per path (so each keeps its own seed)."""
        o = self.options
        prompt = solve_prompt(question, o.shots)
        replies = await asyncio.gather(*(
            ctx.generate(prompt, o.sampling, seed=ctx.seed_for(record, "rft", role),
                         role=role, n=o.k) for role in dict.fromkeys(o.backends)))
        return [dataclasses.replace(reply, completions=(one,))
                for reply in replies for one in reply.completions]

    def screen(self, reply: Reply, gold: str) -> Candidate:
        """A path with its verdict, equations and the reason it is rejected (if it is)."""
        verdict = check(reply.text, gold)
        found = Candidate(reply.text, reply, verdict, equations(reply.text))
        if not verdict.correct:
            found.reason = "no answer found" if verdict.predicted is None else "wrong answer"
        elif self.options.check_calculations and calculation_errors(reply.text):
            found.reason = "calculation error"
        return found

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question = question_of(record, o.question_field)
        gold = gold_of_record(record, o.answer_field)
        paths = [self.screen(reply, gold) for reply in await self.sample(record, question, ctx)]
        correct = [p for p in paths if p.reason is None]
        # `farthest` compares each duplicate with every kept path: off the event loop
        _, duplicates = await asyncio.to_thread(select_distinct, correct, o.keep)
        for path in duplicates:
            path.reason = "duplicate equations"
        made = []
        for index, path in enumerate(paths):
            fields = solution_record(record, question, path.text, path.verdict,
                                     equations=list(path.equations))
            out = ctx.derive([record], fields, index, path.reply)
            if path.reason is None:
                made.append(out)
            else:
                ctx.drop(out, path.reason, _detail(path))
        return made


def _detail(path: Candidate) -> str:
    if path.reason == "calculation error":
        return "; ".join(calculation_errors(path.text))
    if path.reason == "duplicate equations":
        return " | ".join(path.equations) or "(no equations)"
    return f"predicted {path.verdict.predicted!r}, gold {path.verdict.gold!r}"

