"""Code data checked by generated unit tests, with execution feedback (Code Llama - Instruct's
self-instruct data, Rozière et al., 2023; CodeRL's test outcomes, Le et al., 2022).

For each programming problem: the model first writes unit tests from the problem alone; then,
in separate calls that never see the tests (apart from one example test from which to read
the function's name and signature, as in Code Llama), it writes k solutions; each solution
runs against the tests in the sandbox, in order, and the first that passes them all is kept.
The failed attempts before it are recorded as execution feedback (CodeRL's outcome classes:
compile error, runtime error, failed tests; which tests failed and the error text) in
`_meta.verifier.feedback`, and optionally as repair records (a failing solution and its
feedback -> the passing solution).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.code.programs import Harness, Run, code_blocks, first_program, open_sandbox
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Sampling, Uses
from synthaug.template import text_field
from synthaug.verify.sandbox import Limits, Sandbox

_TESTS_ASK = ("Write {n} unit tests that check whether a Python function solves the programming "
              "problem below. Put the tests between [TESTS] and [/TESTS]. Each test is a single "
              "assert statement that calls the function, on its own line, with a comment line "
              "'# Test case N:' above it. Only import what the tests need; do not write the "
              "function itself.\n\nProblem: {problem}")
_SOLVE_ASK = ("Write a Python function that solves the programming problem below. Put the code "
              "between [PYTHON] and [/PYTHON].{example}\n\nProblem: {problem}")
_EXAMPLE = (" You are given example tests, from which you can tell the function's name and "
            "signature.")
_TESTS_TAG = re.compile(r"\[TESTS\](.*?)(?:\[/TESTS\]|\Z)", re.S)


def parse_tests(text: str) -> tuple[list[str], list[str]]:
    """(import statements, tests) of a tests reply: top-level assert statements, and pytest-style
    `def test_...()` functions (run by a call); the function under test, or any other statement,
    is left out so a test can only judge the solution. Repeated tests are kept once."""
    tagged = [m.group(1) for m in _TESTS_TAG.finditer(text)]
    body = "\n".join(tagged or code_blocks(text) or [text])
    try:
        tree = ast.parse(body)
    except (SyntaxError, ValueError):  # cut off or mixed with prose: the whole-line asserts
        lines = [line.strip() for line in body.splitlines()]
        return [], list(dict.fromkeys(line for line in lines
                                      if line.startswith("assert ") and _parses(line)))
    imports, tests = [], []
    for statement in tree.body:
        source = ast.get_source_segment(body, statement) or ""
        if isinstance(statement, ast.Import | ast.ImportFrom):
            imports.append(source)
        elif isinstance(statement, ast.Assert):
            tests.append(source)
        elif isinstance(statement, ast.FunctionDef) and statement.name.startswith("test") \
                and not statement.args.args:
            tests.append(f"{source}\n{statement.name}()")
    return [i for i in imports if i], list(dict.fromkeys(t for t in tests if t))


def calls_something(test: str) -> bool:
    """True when a test calls a function (`assert f` alone only checks a name exists)."""
    return any(isinstance(node, ast.Call) for node in ast.walk(ast.parse(test)))


def _parses(line: str) -> bool:
    try:
        ast.parse(line)
    except (SyntaxError, ValueError):
        return False
    return True


def outcome(run: Run) -> tuple[str, list[dict[str, Any]]]:
    """CodeRL's outcome of one solution (passed, failed tests, runtime error, compile error)
    and the tests it did not pass."""
    if run.setup is not None:
        return str(run.setup["setup"]), []
    failed = [row for row in run.rows if row["status"] != "passed"]
    if not failed:
        return "passed", []
    errors = any(row["status"] != "failed" for row in failed)
    return ("runtime error" if errors else "failed tests"), failed


class FeedbackOptions(EachOptions):
    """Options of test-feedback."""

    backend: str = "default"
    problem_field: str = "problem"
    tests: int = Field(5, ge=1)  # unit tests asked for (at most this many are used)
    min_tests: int = Field(1, ge=1)  # usable tests a problem needs
    solutions: int = Field(10, ge=1)  # solutions sampled per problem
    example_tests: int = Field(1, ge=0)  # tests shown in the solutions' prompt (signature)
    repair_records: int = Field(0, ge=0)  # failed attempts turned into repair records
    test_timeout: float = Field(2.0, gt=0)  # seconds per test
    test_sampling: Sampling = Sampling(temperature=0.2, max_tokens=400)
    sampling: Sampling = Sampling(temperature=0.8, max_tokens=600)  # the solutions
    sandbox: Limits = Limits(timeout=60.0)
    unsafe_local: bool = False  # run code without isolation (resource limits only)


class TestFeedback(Each[FeedbackOptions]):
    """Tests first, then k solutions; the first passing solution kept with the feedback."""

    __test__: ClassVar[bool] = False  # not a pytest class, despite the name
    Options: ClassVar[type[StepOptions]] = FeedbackOptions
    box: Sandbox

    def requires(self) -> Requirements:
        return {self.options.problem_field: str}

    def provides(self) -> set[str]:
        return {"tests", "solution", "kind", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prepare(self) -> None:
        self.box = open_sandbox(self.options.sandbox, self.options.unsafe_local)

    def tests_prompt(self, problem: str) -> Prompt:
        """The request for unit tests: the problem only."""
        ask = _TESTS_ASK.format(n=self.options.tests, problem=problem)
        return [{"role": "user", "content": ask}]

    def solve_prompt(self, problem: str, tests: list[str]) -> Prompt:
        """The request for a solution: the problem and at most `example_tests` tests."""
        shown = tests[: self.options.example_tests]
        example = _EXAMPLE if shown else ""
        ask = _SOLVE_ASK.format(example=example, problem=problem)
        if shown:
            ask += "\nTests:\n" + "\n".join(shown)
        return [{"role": "user", "content": ask}]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        problem = text_field(record, o.problem_field)
        asked = await ctx.generate(self.tests_prompt(problem), o.test_sampling,
                                   seed=ctx.seed_for(record, "tests"))
        imports, written = parse_tests(asked.text)
        if not written:
            raise ParseError("no test (assert or test function) in the reply", raw=asked.texts)
        tests = await self._usable(record, imports, written[: o.tests], ctx)
        if len(tests) < o.min_tests:
            ctx.drop({**record, "tests": written}, "too few usable tests",
                     f"{len(tests)} of {len(written)} tests usable")
            return []
        reply = await ctx.generate(self.solve_prompt(problem, tests), o.sampling,
                                   seed=ctx.seed_for(record, "solutions"), n=o.solutions)
        feedback: list[dict[str, Any]] = []
        for index, text in enumerate(reply.texts):
            code = first_program(text)
            entry = await self._try(index, code, imports, tests)
            if entry["outcome"] == "passed":
                made = self._records(record, problem, tests, str(code), index, feedback)
                return [ctx.derive([record], fields, f"{kind}.{index}", asked, reply)
                        for kind, fields in made]
            feedback.append(entry)
        outcomes = Counter(str(e["outcome"]) for e in feedback)
        ctx.drop({**record, "tests": tests, "feedback": feedback},
                 "no solution passed the tests", f"{len(feedback)} solutions: {dict(outcomes)}")
        return []

    async def _usable(self, record: Record, imports: list[str], tests: list[str],
                      ctx: StepContext) -> list[str]:
        """The tests that call something and that an empty solution does not pass (a vacuous
        test proves nothing)."""
        for test in tests:
            if not calls_something(test):
                ctx.drop({**record, "test": test}, "test calls nothing")
        tests = [t for t in tests if calls_something(t)]
        if not tests:
            return []
        run = await self._run("", imports, tests)
        if run.setup is not None:  # the tests' own imports fail: nothing can pass them
            ctx.drop({**record, "tests": tests}, "tests do not run", str(run.setup["error"]))
            return []
        for test, row in zip(tests, run.rows, strict=True):
            if row["status"] == "passed":
                ctx.drop({**record, "test": test}, "test passes without a solution")
        return [t for t, row in zip(tests, run.rows, strict=True) if row["status"] != "passed"]

    async def _run(self, code: str, imports: list[str], tests: list[str]) -> Run:
        return await Harness("unit_tests").run(self.box, len(tests), solution=code,
                                               prelude="\n".join(imports), tests=tests,
                                               timeout=self.options.test_timeout)

    async def _try(self, index: int, code: str | None, imports: list[str],
                   tests: list[str]) -> dict[str, Any]:
        """One solution's outcome and feedback."""
        if code is None:
            return {"attempt": index, "outcome": "no code", "solution": None}
        run = await self._run(code, imports, tests)
        result, failed = outcome(run)
        entry: dict[str, Any] = {"attempt": index, "outcome": result, "solution": code}
        if run.setup is not None:
            entry["error"] = run.setup["error"]
        if failed:
            entry["failed"] = [{"test": tests[row["case"]], "status": row["status"],
                                "error": row["error"]} for row in failed]
        return entry

    def _records(self, record: Record, problem: str, tests: list[str], code: str, index: int,
                 feedback: list[dict[str, Any]]) -> list[tuple[str, Record]]:
        """The solution record, then repair records from earlier failed attempts."""
        verdict = {"verifier": "unit tests", "passed": f"{len(tests)}/{len(tests)}",
                   "attempt": index, "feedback": feedback, "isolation": self.box.isolation}
        answer = f"```python\n{code}\n```"
        base = {**content(record), "tests": tests, "solution": code}
        made = [("solution", {**base, "kind": "solution",
                              "messages": [{"role": "user", "content": problem},
                                           {"role": "assistant", "content": answer}],
                              "_meta": {"verifier": verdict}})]
        failed = [e for e in feedback if e["solution"]][: self.options.repair_records]
        for entry in failed:
            ask = (f"{problem}\n\nThis solution does not pass the tests:\n```python\n"
                   f"{entry['solution']}\n```\nExecution feedback:\n{describe(entry)}\n\n"
                   "Write a corrected solution.")
            made.append((f"repair{entry['attempt']}", {
                **base, "kind": "repair", "failed_solution": entry["solution"],
                "messages": [{"role": "user", "content": ask},
                             {"role": "assistant", "content": answer}],
                "_meta": {"verifier": {**verdict, "repairs": entry["attempt"]}}}))
        return made


def describe(entry: dict[str, Any]) -> str:
    """Execution feedback as text: the outcome, then each failed test and its error."""
    lines = [f"Outcome: {entry['outcome']}."]
    if entry.get("error"):
        lines.append(str(entry["error"]))
    for failed in entry.get("failed", []):
        lines.append(f"{failed['test']}  ->  {failed['status']}"
                     + (f": {failed['error']}" if failed["error"] else ""))
    return "\n".join(lines)
