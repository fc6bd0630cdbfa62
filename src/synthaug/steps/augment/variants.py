"""problem-variants: variants of a seed math word problem whose answers are computed, not
trusted (TinyGSM, Liu et al. 2023, arXiv:2312.09241; numeric/character variants).

1. `model` (TinyGSM): the model is shown the seed problem and writes new problems like it,
   each as a Python function `simple_math_problem()` whose docstring is the problem and whose
   body computes the answer step by step and returns it.
2. `numeric`: the seed's own solution program (the record's `program`, or one the model
   writes that must return the seed's gold answer) is re-run with new numbers: each number of
   the question that is the whole value of a `name = CONST` line of the program gets a new
   value in both, unless that value is also a literal elsewhere in the program (a hidden
   constant such as /100 or 60 minutes), which then keeps its value everywhere; with
   `rename`, people's names in the question are swapped for others. A draw that fails the
   checks below is replaced by a new one, up to `draws` draws per variant wanted.
3. Every program runs in the sandbox; its return value is the variant's answer. A variant is
   dropped, with its reason, when its program fails, returns no number or an implausible
   one (not finite, negative, fractional where answers are whole, too large), or when its
   question is the seed's or another variant's.
"""

from __future__ import annotations

import ast
import asyncio
import math
import random
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.code.programs import code_blocks, open_sandbox
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses
from synthaug.steps.reason.common import question_of
from synthaug.verify.answers import equivalent, gold_of
from synthaug.verify.sandbox import Limits, Sandbox

Mode = Literal["model", "numeric"]
FUNCTION = "simple_math_problem"
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])(?!\.\d)")
# people's names a numeric variant may swap, each within its own list (pronouns stay right)
NAMES = (("Amara", "Bianca", "Chloe", "Elena", "Emma", "Farah", "Grace", "Hana", "Julia",
          "Lena", "Maya", "Mia", "Nina", "Olivia", "Priya", "Rosa", "Sara", "Sofia", "Uma",
          "Zara"),
         ("Aiden", "Ben", "Carlos", "Daniel", "Felix", "Isaac", "Jack", "Jamal", "Kofi", "Leo",
          "Liam", "Mateo", "Noah", "Omar", "Ravi", "Sam", "Tariq", "Tom", "Victor", "Yusuf"))
_SYSTEM = ("You write grade-school math word problems together with Python programs that "
           "solve them. A program never states the answer in advance: it computes it.")
_ASK_VARIANTS = (
    "Here is a grade-school math problem:\n\n{question}\n\nWrite {n} new problems like it: "
    "change the numbers, the people and the objects, and keep several reasoning steps. Give "
    "each new problem as its own ```python block holding one function:\n\n"
    "```python\ndef simple_math_problem() -> float:\n    \"\"\"<the full text of the new "
    "problem>\"\"\"\n    <one variable per quantity, then the steps of the calculation>\n"
    "    return result\n```\n\nDo not write the answer as a number anywhere in the program.")
_ASK_SOLUTION = (
    "Solve this grade-school math problem with a Python program:\n\n{question}\n\nReply with "
    "one ```python block that defines `def simple_math_problem() -> float:` with the problem "
    "as its docstring, one variable per quantity of the problem (each number written exactly "
    "as in the problem), the calculation step by step, and `return result`.")


class VariantOptions(EachOptions):
    """Options of problem-variants."""

    backend: str = "default"
    question_field: str = "question"
    answer_field: str = "answer"
    program_field: str = "program"  # a seed solution program, when the record has one
    modes: list[Mode] = ["model", "numeric"]
    variants: int = Field(4, ge=1)  # model-written variants asked per seed (TinyGSM: 10)
    numeric: int = Field(3, ge=1)  # numeric variants kept per seed
    draws: int = Field(8, ge=1)  # numeric draws allowed per variant kept (failed draws retry)
    rename: bool = True  # numeric variants also swap people's names
    whole_answers: bool = True  # an answer must be a whole number (grade-school problems)
    allow_negative: bool = False
    max_answer: float = Field(1e7, gt=0)
    sampling: Sampling = Sampling(temperature=0.8, max_tokens=1200)
    sandbox: Limits = Limits(timeout=5.0)
    unsafe_local: bool = False

    @field_validator("modes")
    @classmethod
    def _some(cls, value: list[Mode]) -> list[Mode]:
        if not value:
            raise ValueError("name at least one mode (model, numeric)")
        return list(dict.fromkeys(value))


@dataclass(frozen=True)
class Candidate:
    """One variant before checking: its question, its program, how it was made."""

    question: str
    program: str
    kind: Mode
    changed: dict[str, str]  # numeric: old -> new numbers and names


def key(question: str) -> str:
    """A question's identity for duplicate checks: lower case, words only."""
    return " ".join(re.findall(r"\w+", question.lower()))


def solution_function(program: str) -> ast.FunctionDef | None:
    """The program's `simple_math_problem` (else its only function), or None."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return None
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    named = [n for n in found if n.name == FUNCTION]
    return named[0] if named else (found[0] if len(found) == 1 else None)


def candidates_in(text: str) -> list[Candidate]:
    """The variants of a model reply: each code block's function, its docstring the problem."""
    found: list[Candidate] = []
    for block in code_blocks(text):
        function = solution_function(block)
        doc = ast.get_docstring(function) if function is not None else None
        if doc and doc.strip():
            found.append(Candidate(" ".join(doc.split()), block.strip(), "model", {}))
    return found


def answer_of(stdout: str) -> float | None:
    """The number a run printed on its last line (ints, floats, numeric strings), or None."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = ast.literal_eval(lines[-1])
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, str):
        try:
            value = float(value.replace(",", "").strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def implausible(value: float, o: VariantOptions) -> str | None:
    """Why `value` cannot be a grade-school answer, or None."""
    if not math.isfinite(value):
        return "answer not finite"
    if value < 0 and not o.allow_negative:
        return "negative answer"
    if abs(value) > o.max_answer:
        return "answer too large"
    if o.whole_answers and abs(value - round(value)) > 1e-6:
        return "fractional answer"
    return None


def shown(value: float) -> str:
    """An answer as text: whole numbers without a decimal point."""
    return str(round(value)) if abs(value - round(value)) <= 1e-6 else f"{value:.6g}"


def _draw(old: str, rng: random.Random) -> str:
    """A new value for the number `old`, of the same kind, about the same size, not equal."""
    if "." in old:
        places = len(old.split(".")[1])
        value = float(old)
        for _ in range(20):
            new = f"{rng.uniform(value / 2, value * 2):.{places}f}"
            if float(new) != value and float(new) > 0:
                return new
        return f"{value + 1:.{places}f}"
    value = int(old)
    low, high = max(2, value // 2), max(value * 2, value + 2)
    choices = [v for v in range(low, high + 1) if v != value]
    return str(rng.choice(choices))


def _numeric(node: ast.AST) -> float | None:
    """The value of a numeric literal (bools aside), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _numbers(function: ast.FunctionDef) -> list[float]:
    """The values of every numeric literal of the function."""
    return [v for n in ast.walk(function) if (v := _numeric(n)) is not None]


def _quantity(node: ast.AST) -> float | None:
    """The constant of a `name = CONST` line (a whole quantity), else None."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name):
        return _numeric(node.value)
    return None


def _quantities(function: ast.FunctionDef) -> list[float]:
    """The values of the function's `name = CONST` lines."""
    return [v for n in ast.walk(function) if (v := _quantity(n)) is not None]


def renumberable(question: str, function: ast.FunctionDef) -> set[float]:
    """The question's numbers that may change: each is the whole value of a `name = CONST`
    line and appears nowhere else in the program as a literal (a hidden constant such as
    /100, 60 minutes or 2 for 'twice' keeps its value), nor more often than in the question."""
    literals, quantities = _numbers(function), _quantities(function)
    asked = [float(token) for token in _NUMBER.findall(question)]
    return {value for value in set(asked) if value >= 2 and value in quantities
            and literals.count(value) == quantities.count(value)
            and literals.count(value) <= asked.count(value)}


class _Renumber(ast.NodeTransformer):
    """Gives `name = CONST` lines whose constant is in the table (old -> new) the new value,
    keeping ints ints; other literals are left alone."""

    def __init__(self, table: dict[float, str]) -> None:
        self.table = table

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        value = _quantity(node)
        if value is not None and value in self.table:
            new = self.table[value]
            node.value = ast.copy_location(ast.Constant(float(new) if "." in new
                                                        else int(new)), node.value)
        return node


def numeric_variant(question: str, program: str, rng: random.Random,
                    rename: bool) -> Candidate | None:
    """The seed with new numbers (those the program uses) and names, or None if nothing in the
    question can change."""
    function = solution_function(program)
    if function is None:
        return None
    used = renumberable(question, function)
    table: dict[str, str] = {}
    for token in dict.fromkeys(_NUMBER.findall(question)):
        if float(token) in used:
            table[token] = _draw(token, rng)
    renamed: dict[str, str] = {}
    for kind in NAMES if rename else ():
        names = [n for n in kind if re.search(rf"\b{n}\b", question)]
        others = [n for n in kind if n not in names]
        renamed |= dict(zip(names, rng.sample(others, len(names)), strict=True))
    if not table and not renamed:
        return None
    text = _NUMBER.sub(lambda m: table.get(m.group(0), m.group(0)), question)
    for old, new in renamed.items():
        text = re.sub(rf"\b{old}\b", new, text)
    code = program
    for old, new in renamed.items():  # names in strings and identifiers alike
        code = re.sub(rf"\b{old}\b", new, code)
    tree = _Renumber({float(k): v for k, v in table.items()}).visit(ast.parse(code))
    for node in ast.walk(tree):  # the docstring is the new problem
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) is not None:
            node.body[0] = ast.Expr(ast.Constant(text))
    return Candidate(text, ast.unparse(ast.fix_missing_locations(tree)), "numeric",
                     {**table, **renamed})


class ProblemVariants(Each[VariantOptions]):
    """Variants of each seed problem with answers computed by running their programs."""

    Options: ClassVar[type[StepOptions]] = VariantOptions
    box: Sandbox

    def requires(self) -> Requirements:
        return {self.options.question_field: str,
                self.options.answer_field: (str, int, float)}

    def provides(self) -> set[str]:
        return {"question", "answer", "program", "variant_kind", "seed_question", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prepare(self) -> None:
        self.box = open_sandbox(self.options.sandbox, self.options.unsafe_local)

    async def run_program(self, program: str) -> tuple[float | None, str]:
        """(the value the program's solution function returns, '') or (None, why not)."""
        function = solution_function(program)
        if function is None:
            return None, "no solution function"
        result = await self.box.run(f"{program}\n\nprint(repr({function.name}()))\n")
        if not result.ok:
            return None, f"program {result.status}"
        value = answer_of(result.stdout)
        return (value, "") if value is not None else (None, "non-numeric answer")

    async def seed_program(self, record: Record, question: str, gold: str,
                           ctx: StepContext) -> tuple[str | None, str, list[Reply]]:
        """The seed's solution program checked against its gold answer, or (None, why)."""
        given = record.get(self.options.program_field)
        replies: list[Reply] = []
        if isinstance(given, str) and given.strip():
            program = given
        else:
            prompt = [{"role": "system", "content": _SYSTEM},
                      {"role": "user", "content": _ASK_SOLUTION.format(question=question)}]
            reply = await ctx.generate(prompt, self.options.sampling,
                                       seed=ctx.seed_for(record, "seed-program"))
            replies.append(reply)
            blocks = [b for b in code_blocks(reply.text) if solution_function(b)]
            if not blocks:
                return None, "seed program: none written", replies
            program = blocks[0].strip()
        value, why = await self.run_program(program)
        if value is None:
            return None, f"seed program: {why}", replies
        if not equivalent(shown(value), gold_of(gold)):
            return None, f"seed program returns {shown(value)}, not {gold}", replies
        return program, "", replies

    def variant_prompt(self, question: str) -> Prompt:
        """The TinyGSM request: n new problems, each a solution function with its problem."""
        text = _ASK_VARIANTS.format(question=question, n=self.options.variants)
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": text}]

    async def model_variants(self, record: Record, question: str, ctx: StepContext
                             ) -> tuple[list[Candidate], list[Reply]]:
        """The variants the model writes for the seed (TinyGSM), before checking."""
        reply = await ctx.generate(self.variant_prompt(question), self.options.sampling,
                                   seed=ctx.seed_for(record, "variants"))
        found = candidates_in(reply.text)
        if not found:
            ctx.drop(record, "no variant in the reply", reply.text[:500])
        return found, [reply]

    async def numeric_variants(self, record: Record, question: str, gold: str,
                               ctx: StepContext) -> tuple[list[Candidate], list[Reply]]:
        """Numeric/character variants of the seed's checked program, before checking: up to
        `draws` rounds of draws, each for the variants still wanted."""
        o = self.options
        program, why, replies = await self.seed_program(record, question, gold, ctx)
        if program is None:
            ctx.drop(record, "no numeric variants", why)
            return [], replies
        found: list[Candidate] = []
        for draw in range(o.numeric * o.draws):
            made = numeric_variant(question, program, ctx.rng(record, "numeric", draw),
                                   o.rename)
            if made is None:
                ctx.drop(record, "no numeric variants", "no number or name to change")
                break
            found.append(made)
        return found, replies

    def verdict(self, made: Candidate, value: float | None, why: str, seen: set[str],
                seed: str) -> str:
        """Why a run variant is not kept ('' when it is)."""
        reason = why if value is None else implausible(value, self.options)
        if not reason and key(made.question) in seen:
            reason = "identical to the seed" if key(made.question) == key(seed) \
                else "duplicate variant"
        return reason or ""

    async def checked(self, record: Record, batch: list[tuple[int, Candidate]],
                      seen: set[str], replies: list[Reply], ctx: StepContext) -> list[Record]:
        """Run a batch of variants; the kept ones as records, the others dropped."""
        o = self.options
        seed = question_of(record, o.question_field)
        answers = await asyncio.gather(*(self.run_program(c.program) for _, c in batch))
        kept: list[Record] = []
        for (index, made), (value, why) in zip(batch, answers, strict=True):
            ctx.stats.notes[f"{made.kind} variants run"] += 1
            reason = self.verdict(made, value, why, seen, seed)
            if reason or value is None:
                ctx.drop({**content(record), "variant": made.question,
                          "program": made.program}, reason, made.kind)
                continue
            seen.add(key(made.question))
            kept.append(self.made(record, made, value, index, replies, ctx))
        return kept

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        question = question_of(record, o.question_field)
        written: list[Candidate] = []
        drawn: list[Candidate] = []
        replies: list[Reply] = []
        if "model" in o.modes:
            written, used = await self.model_variants(record, question, ctx)
            replies += used
        if "numeric" in o.modes:
            drawn, used = await self.numeric_variants(record, question,
                                                      str(record[o.answer_field]), ctx)
            replies += used
        seen = {key(question)}
        kept = await self.checked(record, list(enumerate(written)), seen, replies, ctx)
        pending = list(enumerate(drawn, start=len(written)))
        wanted = o.numeric
        while pending and wanted > 0:  # failed draws are replaced by the next ones
            batch, pending = pending[:wanted], pending[wanted:]
            got = await self.checked(record, batch, seen, replies, ctx)
            kept += got
            wanted -= len(got)
        return kept

    def made(self, record: Record, made: Candidate, value: float, index: int,
             replies: list[Reply], ctx: StepContext) -> Record:
        """The output record of one checked variant."""
        fields: dict[str, Any] = {
            **content(record), "question": made.question, "answer": shown(value),
            "program": made.program, "variant_kind": made.kind,
            "seed_question": record[self.options.question_field],
            "messages": [{"role": "user", "content": made.question},
                         {"role": "assistant", "content": f"```python\n{made.program}\n```"}],
            "_meta": {"verifier": {"verifier": "sandbox", "computed": shown(value),
                                   "isolation": self.box.isolation,
                                   **({"changed": made.changed} if made.changed else {})}}}
        fields[self.options.question_field] = made.question
        fields[self.options.answer_field] = shown(value)
        return ctx.derive([record], fields, f"{made.kind}.{index}", *replies)
