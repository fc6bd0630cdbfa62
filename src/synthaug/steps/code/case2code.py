"""Case2Code (Shao et al., 2024): infer a function from input/output cases obtained by running it.

For each function, the model writes example inputs (argument dicts; calls of the function are
accepted too) — never outputs. The function is run on each input in the sandbox, and the value
it returns becomes that case's output. Cases that raise, time out or give an oversized output
are dropped with their reason; a function with no surviving case yields no task. The surviving
(input, output) pairs become an "infer the code from these cases" task whose answer is the
function.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ParseError, RecordError
from synthaug.records import Record, content, meta
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.code.programs import Harness, code_blocks, open_sandbox
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Sampling, Uses
from synthaug.template import text_field
from synthaug.verify.sandbox import Limits, Sandbox

_ASK = ("Below is a Python function. First work out which types and value ranges its arguments "
        "take, then write {n} different example inputs for it that exercise different "
        "behaviour, edge cases included. Write each input as a dict of argument names to "
        "values, all in one list:\n```python\nexamples = [\n    dict(name=value, ...),\n    ...\n]"
        "\n```\nWrite inputs only: the outputs are computed by running the function.")
_SHOT_CODE = "def repeat_word(word: str, times: int, sep: str = ' ') -> str:\n" \
             "    return sep.join([word] * times)"
_SHOT_REPLY = ("`word` is a string, `times` a small non-negative int, `sep` an optional string."
               "\n```python\nexamples = [\n    dict(word='hi', times=3),\n"
               "    dict(word='ab', times=1, sep='-'),\n    dict(word='', times=4),\n"
               "    dict(word='x', times=0),\n    dict(word='go', times=2, sep=''),\n]\n```")
INSTRUCTIONS = (
    "Write the Python function that produces these outputs from these inputs.",
    "Here are input/output examples of a function. Reconstruct the function.",
    "Infer the function from the following test cases and write it in Python.",
    "Figure out what the function does from its calls and results, then implement it.",
    "Write a function that passes all of the examples below.",
    "Given these calls and the values they return, deduce the function's code.",
)
CASE_FORMATS = ("{call} -> {output}", ">>> {call}\n{output}", "Input: {call}\nOutput: {output}",
                "assert {call} == {output}")
_DICT_LINE = re.compile(r"^\s*(dict\(.*\)|\{.*\})\s*,?\s*(?:#.*)?$")
_DROP = {"error": "case raised an exception", "failed": "case raised an exception",
         "timeout": "case timed out", "lost": "case did not run"}


def function_name(code: str) -> str:
    """The name of the first top-level function of `code` that takes arguments."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        raise RecordError("code", f"not valid Python: {exc}") from None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            if not (node.args.args or node.args.kwonlyargs or node.args.posonlyargs):
                raise RecordError("code", f"function {node.name} takes no arguments")
            return node.name
    raise RecordError("code", "no top-level function")


def _is_args(node: ast.expr) -> bool:
    """A dict of argument names to values: `dict(a=1)` or `{"a": 1}`."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args \
            and all(k.arg is not None for k in node.keywords)
    return isinstance(node, ast.Dict) and all(
        isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys)


def _calls(tree: ast.Module, source: str, name: str) -> list[str]:
    """Calls of the function `name` outside function bodies (`print(f(2))` included)."""
    found = []
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == name:
                found.append(ast.get_source_segment(source, node) or "")
    return [f for f in found if f]


def case_inputs(text: str, name: str) -> list[str]:
    """The inputs a reply writes for function `name`, as source: the argument dicts of its
    list (the asked format), else calls of the function; model-written outputs are ignored."""
    parsed = []
    for block in [*code_blocks(text), text]:
        try:
            parsed.append((ast.parse(block), block))
        except (SyntaxError, ValueError):
            continue
    for tree, block in parsed:
        lists = [n for n in ast.walk(tree) if isinstance(n, ast.List | ast.Tuple)
                 and any(_is_args(e) for e in n.elts)]
        if lists:
            return [src for e in lists[0].elts
                    if _is_args(e) and (src := ast.get_source_segment(block, e))]
    calls = [call for tree, block in parsed for call in _calls(tree, block, name)]
    if calls:
        return list(dict.fromkeys(calls))
    # a reply cut off by the token limit: keep the complete one-line dicts
    found = [m.group(1) for line in text.splitlines() if (m := _DICT_LINE.match(line))]
    return [src for src in found if _parses_as_args(src)]


def _parses_as_args(source: str) -> bool:
    try:
        return _is_args(ast.parse(source, mode="eval").body)
    except (SyntaxError, ValueError):
        return False


def as_case(source: str) -> str:
    """An input as an expression `__case__(...)` the harness turns into (args, kwargs)."""
    node = ast.parse(source, mode="eval").body
    if isinstance(node, ast.Call) and not _is_args(node):
        args, keywords = node.args, node.keywords
    else:
        args, keywords = [], [ast.keyword(arg=None, value=node)]
    call = ast.Call(func=ast.Name("__case__", ast.Load()), args=args, keywords=keywords)
    return ast.unparse(ast.fix_missing_locations(call))


class Case2CodeOptions(EachOptions):
    """Options of case2code."""

    backend: str = "default"
    code_field: str = "code"
    cases: int = Field(10, ge=1)  # inputs asked for (and at most run) per function
    min_cases: int = Field(1, ge=1)  # valid cases a function needs to become a task
    min_shown: int = Field(3, ge=1)  # a task shows between this many and all valid cases
    case_timeout: float = Field(1.0, gt=0)
    max_output_chars: int = Field(500, ge=1)
    sampling: Sampling = Sampling(temperature=0.2, max_tokens=600)
    sandbox: Limits = Limits(timeout=30.0)
    unsafe_local: bool = False  # run code without isolation (resource limits only)


class Case2Code(Each[Case2CodeOptions]):
    """Inputs from the model, outputs from execution, an infer-the-code task per function."""

    Options: ClassVar[type[StepOptions]] = Case2CodeOptions
    box: Sandbox

    def requires(self) -> Requirements:
        return {self.options.code_field: str}

    def provides(self) -> set[str]:
        return {"function_name", "cases", "instruction", "response", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prepare(self) -> None:
        self.box = open_sandbox(self.options.sandbox, self.options.unsafe_local)

    def prompt(self, code: str) -> Prompt:
        """The request for inputs (one worked example first)."""
        ask = _ASK.format(n=self.options.cases)
        return [{"role": "user", "content": f"{ask}\n\nFunction:\n```python\n{_SHOT_CODE}\n```"},
                {"role": "assistant", "content": _SHOT_REPLY},
                {"role": "user", "content": f"Function:\n```python\n{code}\n```"}]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        code = text_field(record, self.options.code_field)
        name = function_name(code)
        reply = await ctx.generate(self.prompt(code), self.options.sampling,
                                   seed=ctx.seed_for(record, "inputs"))
        inputs = case_inputs(reply.text, name)[: self.options.cases]
        if not inputs:
            raise ParseError("no inputs in the reply", raw=reply.texts)
        cases, dropped = await self._execute(record, name, code, inputs, ctx)
        if len(cases) < self.options.min_cases:
            ctx.drop({**record, "function_name": name}, "no valid case",
                     f"{len(cases)} of {len(inputs)} cases ran: {dict(dropped)}")
            return []
        return [ctx.derive([record], self.task(record, name, code, cases, dropped, ctx), 0,
                           reply)]

    async def _execute(self, record: Record, name: str, code: str, inputs: list[str],
                       ctx: StepContext) -> tuple[list[dict[str, str]], Counter[str]]:
        """The cases that ran (call, output from execution); the others dropped by reason."""
        run = await Harness("call_cases").run(self.box, len(inputs), code=code, name=name,
                                              cases=[as_case(i) for i in inputs],
                                              timeout=self.options.case_timeout)
        cases: list[dict[str, str]] = []
        dropped: Counter[str] = Counter()
        seen: set[str] = set()
        for source, row in zip(inputs, run.rows, strict=True):
            reason = self._unfit(row, seen, run.setup)
            if reason:
                dropped[reason] += 1
                ctx.drop({"function_name": name, "input": source, "status": row["status"],
                          "_meta": {"id": meta(record).get("id")}}, reason,
                         (run.setup or row).get("error"))
                continue
            seen.add(row["call"])
            cases.append({"input": row["call"], "output": row["output"]})
        return cases, dropped

    def _unfit(self, row: dict[str, Any], seen: set[str],
               setup: dict[str, Any] | None) -> str | None:
        if setup is not None:
            return "function failed to load"
        if row["status"] != "ok":
            return _DROP.get(row["status"], "case raised an exception")
        if len(row["output"]) > self.options.max_output_chars:
            return "output too long"
        return "duplicate case" if row["call"] in seen else None

    def task(self, record: Record, name: str, code: str, cases: list[dict[str, str]],
             dropped: Counter[str], ctx: StepContext) -> Record:
        """The infer-the-code training record (a seeded choice of wording and cases)."""
        rng = ctx.rng(record, "task")
        count = len(cases) if len(cases) <= self.options.min_shown else \
            rng.randint(self.options.min_shown, len(cases))
        shown = rng.sample(cases, count)
        form = rng.choice(CASE_FORMATS)
        examples = "\n".join(form.format(call=c["input"], output=c["output"]) for c in shown)
        instruction = f"{rng.choice(INSTRUCTIONS)}\n\nFunction name: {name}\n\n{examples}"
        response = f"```python\n{code}\n```"
        return {**content(record), "function_name": name, "cases": cases, "shown": count,
                "instruction": instruction, "response": response,
                "messages": [{"role": "user", "content": instruction},
                             {"role": "assistant", "content": response}],
                "_meta": {"verifier": {"verifier": "execution", "outputs": "from execution",
                                       "cases": len(cases), "dropped_cases": dict(dropped),
                                       "isolation": self.box.isolation}}}
