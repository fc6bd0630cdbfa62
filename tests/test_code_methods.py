"""The code and program methods, each run in the real sandbox against the in-process fake
backend: MathInstruct's PoT rationales, Case2Code, self-play programming puzzles, and
test-feedback code data (Code Llama self-instruct / CodeRL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synthaug.backends.base import Request
from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.shapes import to_sft
from synthaug.steps.base import AnyStep
from synthaug.steps.code import test_feedback as tf
from synthaug.steps.code.case2code import Case2Code, case_inputs
from synthaug.steps.code.pot import ProgramOfThought
from synthaug.steps.code.puzzles import ProgrammingPuzzles, puzzle_spec
from synthaug.testing.fake import Script, text_of
from synthaug.verify import sandbox
from tests.conftest import read_jsonl, run, write_jsonl

QUESTION = ("A bakery sells muffins for $3 each. On Monday it sold 45 muffins and on Tuesday "
            "38 muffins. How much money did it make over the two days?")


def everything(request: Request) -> str:
    """All the text a request carries (every message)."""
    if request.prompt is not None:
        return request.prompt
    return "\n".join(str(m.get("content", "")) for m in request.messages or ())


def run_step(step: AnyStep, script: Script, tmp: Path,
             rows: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
    """Run one step over `rows`; (records, dropped rows)."""
    data = write_jsonl(tmp / "in.jsonl", rows) if rows is not None else None
    pipeline = Pipeline.from_steps(step, backends={"default": script.spec()})
    run(pipeline, tmp / "out", data)
    return read_jsonl(tmp / "out" / "records.jsonl"), read_jsonl(tmp / "out" / "dropped.jsonl")


def assert_sft(records: list[dict[str, Any]]) -> None:
    for record in records:
        shaped = to_sft(record)
        assert shaped and shaped["messages"][-1]["role"] == "assistant"
        assert record["_meta"]["verifier"]


# -- MathInstruct: CoT + PoT ------------------------------------------------------------------
WRONG_BUT_CLAIMS = "```python\n# The answer is 249\nprint(45 * 3 + 38)\n```"
CRASHES = "```python\nprint(45 * 3 / 0)\n```"
RIGHT = "```python\nmonday = 45 * 3\ntuesday = 38 * 3\nprint(monday + tuesday)\n```"
ALSO_RIGHT = "```python\nprint(3 * (45 + 38))\n```"


def pot_reply(request: Request) -> list[str]:
    text = text_of(request)
    if "Let's write a Python program" in text:
        if "muffins" in text:
            return [WRONG_BUT_CLAIMS, CRASHES, RIGHT, RIGHT, ALSO_RIGHT]
        return ["```python\nprint(7)\n```"] * request.n  # the second problem: always wrong
    return ["45 * 3 = 135 muffins' worth.\nThe answer is 135.",
            "45 * 3 + 38 * 3 = 249\nThe answer is 249.", "x", "y", "z"]


def test_pot_keeps_programs_whose_executed_output_matches_the_gold(tmp_path: Path) -> None:
    script = Script(pot_reply)
    rows = [{"question": QUESTION, "answer": "249"},
            {"question": "How many legs do 3 spiders have?", "answer": "24"}]
    records, dropped = run_step(ProgramOfThought(samples=5), script, tmp_path, rows)
    pot = [r for r in records if r["rationale_type"] == "pot"]
    cot = [r for r in records if r["rationale_type"] == "cot"]
    # the program that only *claims* 249 in a comment, and the one that crashes, are not kept:
    # the program that computes 249 when run is
    assert [r["solution"] for r in pot] == [RIGHT.split("\n", 1)[1].rsplit("\n", 1)[0]]
    verdict = pot[0]["_meta"]["verifier"]
    assert verdict["correct"] and verdict["execution"]["stdout"].strip() == "249"
    assert verdict["execution"]["status"] == "ok" and verdict["checked"] == "program output"
    assert pot[0]["messages"][0]["content"].endswith("Let's write a Python program to solve it.")
    assert [r["solution"].splitlines()[-1] for r in cot] == ["The answer is 249."]
    # every sample beside the kept one is in dropped.jsonl, with its reason and execution
    muffins = {d["record"]["solution"]: (d["reason"], json.loads(d["detail"])) for d in dropped
               if d["record"]["question"] == QUESTION and d["record"]["rationale_type"] == "pot"}
    code = {text: text.split("\n", 1)[1].rsplit("\n", 1)[0]
            for text in (WRONG_BUT_CLAIMS, CRASHES, RIGHT, ALSO_RIGHT)}
    assert {program: reason for program, (reason, _) in muffins.items()} == {
        code[WRONG_BUT_CLAIMS]: "mismatch", code[CRASHES]: "program error",
        code[RIGHT]: "duplicate", code[ALSO_RIGHT]: "over keep"}
    claims, crash = muffins[code[WRONG_BUT_CLAIMS]][1], muffins[code[CRASHES]][1]
    assert claims["predicted"] == "173" and claims["execution"]["stdout"].strip() == "173"
    assert crash["execution"]["status"] == "error" and "ZeroDivisionError" in \
        crash["execution"]["stderr"]
    cot_dropped = {d["record"]["solution"]: d["reason"] for d in dropped
                   if d["record"]["question"] == QUESTION
                   and d["record"]["rationale_type"] == "cot"}
    assert sorted(cot_dropped.values()) == ["mismatch", "no answer found", "no answer found",
                                            "no answer found"]
    # a problem with no verified rationale: one row listing every sample
    spiders = [d for d in dropped if d["record"]["question"] != QUESTION]
    assert sorted(d["reason"] for d in spiders) == ["no verified cot rationale",
                                                    "no verified pot rationale"]
    assert all(len(d["record"]["samples"]) == 5 for d in spiders)
    assert all("249" not in everything(r) for r in script.requests)  # the gold is never asked
    assert_sft(records)


# -- Case2Code --------------------------------------------------------------------------------
CLAIMED = ("Inputs and what I expect:\n```python\nexamples = [\n    dict(x=3),  # -> 999\n"
           "    dict(x=4),\n    dict(y=1),\n]\noutputs = [999, 999, 999]\n```")


def test_case2code_outputs_come_from_execution_never_from_the_model(tmp_path: Path) -> None:
    script = Script(lambda request: CLAIMED)
    rows = [{"code": "def double(x):\n    return x * 2"},
            {"code": "def boom(x):\n    raise ValueError('no')"},
            {"code": "def spin(x):\n    while True:\n        pass"}]
    records, dropped = run_step(Case2Code(case_timeout=0.5), script, tmp_path, rows)
    [task] = records  # boom and spin: every input fails, so no task
    assert task["function_name"] == "double"
    assert task["cases"] == [{"input": "double(x=3)", "output": "6"},
                             {"input": "double(x=4)", "output": "8"}]
    assert "999" not in task["instruction"] and "double(x=3)" in task["instruction"]
    assert task["response"] == "```python\ndef double(x):\n    return x * 2\n```"
    assert task["_meta"]["verifier"]["dropped_cases"] == {"case raised an exception": 1}
    reasons = [(d["record"].get("function_name"), d["reason"]) for d in dropped]
    assert ("boom", "no valid case") in reasons and ("spin", "no valid case") in reasons
    assert ("spin", "case timed out") in reasons and ("boom", "case raised an exception") in reasons
    assert_sft(records)


def test_case2code_records_the_input_as_written_and_drops_repeated_cases(
        tmp_path: Path) -> None:
    # dict(items=[1, 2]) and {'items': [1, 2]} are one case; grow changes its argument
    written = ("```python\nexamples = [\n    dict(items=[1, 2]),\n    {'items': [1, 2]},\n"
               "    dict(items=[]),\n    dict(items=[]),\n]\n```")
    code = "def grow(items):\n    items.append(len(items))\n    return items"
    records, dropped = run_step(Case2Code(), Script(lambda request: written), tmp_path,
                                [{"code": code}])
    [task] = records
    assert task["cases"] == [{"input": "grow(items=[1, 2])", "output": "[1, 2, 2]"},
                             {"input": "grow(items=[])", "output": "[0]"}]
    assert task["_meta"]["verifier"]["dropped_cases"] == {"duplicate case": 2}
    assert sorted((d["reason"], d["record"]["input"]) for d in dropped) == [
        ("duplicate case", "dict(items=[])"), ("duplicate case", "{'items': [1, 2]}")]


def test_inputs_are_read_and_model_outputs_ignored() -> None:
    assert case_inputs(CLAIMED, "double") == ["dict(x=3)", "dict(x=4)", "dict(y=1)"]
    cut_off = "examples = [\n    dict(a=[1, 2], b='x'),\n    {'a': [], 'b': ''},\n    dict(a=[3"
    assert case_inputs(cut_off, "f") == ["dict(a=[1, 2], b='x')", "{'a': [], 'b': ''}"]
    calls = ("```python\ndef f(x):\n    return f(x - 1)\n```\n"
             "```python\nprint(f([1, 2]))  # Output: [9]\nf(3, y=2)\n```")
    assert case_inputs(calls, "f") == ["f([1, 2])", "f(3, y=2)"]  # not the call inside f


# -- programming puzzles ----------------------------------------------------------------------
PUZZLES = [
    "s: str, n=3):\n    return s == 'ab' * n\n\ndef f7(x):\n    pass",  # good (cut at its end)
    "x: int):\n    return x > -1000",  # trivially solvable: f(0) is True
    "s: str, n=3):\n    # a copy of the first\n    return s == 'ab'*n",  # duplicate
    "x: int):\n    return True",  # ignores its answer
    "n: int):\n    return str(n) == '12345'",  # good; an answer of the wrong type must fail
    "x: int, a=1234, b=99):\n    return x % b == a % b and x > a",  # a seed puzzle
]


def puzzle_reply(request: Request) -> list[str]:
    text = text_of(request)
    if text.startswith("# Programming puzzles"):
        return PUZZLES[: request.n]
    asked = text.rsplit("\ndef f", 1)[1]
    if "'ab' * n" in asked:
        found = ["\n    return 'ab' * n", "\n    return 'ab'", "\n    raise ValueError('x')",
                 "\n    while True:\n        pass"]
    elif "12345" in asked:
        found = ["\n    return '12345'", "\n    return 12345", "\n    return 12345  # again",
                 "\n    return 1"]
    else:
        found = ["\n    return 0"] * 4
    return found[: request.n]


def test_puzzles_keep_a_pair_only_when_f_of_g_is_true(tmp_path: Path) -> None:
    script = Script(puzzle_reply)
    step = ProgrammingPuzzles(prompts=1, per_prompt=6, attempts=4, check_timeout=0.5)
    records, dropped = run_step(step, script, tmp_path)
    kept = {(r["puzzle"], r["solution"]) for r in records}
    assert kept == {("def f(s: str, n=3):\n    return s == 'ab' * n",
                     "def g(n=3):\n    return 'ab' * n"),
                    ("def f(n: int):\n    return str(n) == '12345'",
                     "def g():\n    return 12345")}  # the duplicate solution counted once
    by_reason = {d["reason"]: d for d in dropped}
    assert set(by_reason) == {"trivially solvable", "duplicate puzzle",
                              "puzzle ignores its answer", "copies a seed puzzle"}
    string_puzzle = next(r for r in records if "'ab'" in r["puzzle"])
    tried = string_puzzle["_meta"]["verifier"]["attempts"]
    assert tried == {"passed": 1, "f not True": 1, "g failed": 2}  # False, raises, times out
    number_puzzle = next(r for r in records if "12345" in r["puzzle"])
    assert number_puzzle["_meta"]["verifier"]["attempts"]["wrong type"] == 1  # '12345'
    assert number_puzzle["answer"] == "12345"
    solve_prompts = [text_of(r) for r in script.requests if "# Each g()" in text_of(r)]
    assert len(solve_prompts) == 2  # only the two puzzles that passed screening were solved
    assert_sft(records)


def test_a_puzzle_returning_a_truthy_non_true_value_is_not_solved(tmp_path: Path) -> None:
    counts = "s: str):\n    return s.count('a') * (len(s) == 1000)"  # 1000, not True

    def reply(request: Request) -> list[str]:
        if text_of(request).startswith("# Programming puzzles"):
            return [counts]
        return ["\n    return 'a' * 1000", "\n    return 'b' * 1000"][: request.n]

    step = ProgrammingPuzzles(prompts=1, per_prompt=1, attempts=2, check_timeout=0.5)
    records, dropped = run_step(step, Script(reply), tmp_path)
    assert records == []
    [row] = dropped
    assert row["reason"] == "no solution passed"
    assert row["record"]["attempts"] == ["def g():\n    return 'a' * 1000",
                                         "def g():\n    return 'b' * 1000"]
    assert row["detail"] == "2 attempts: {'f not True': 2}"  # f returned 1000 and 0


def test_puzzle_spec_is_the_papers_static_filter() -> None:
    spec = puzzle_spec("def f(li: list[int], n=3):\n    return len(li) == n")
    assert not isinstance(spec, str) and (spec.type, spec.inputs) == ("List[int]", "n=3")
    assert puzzle_spec("def f(b: bool):\n    return b") == "answer type bool (trivial)"
    assert puzzle_spec("def f(x):\n    return x == 1") == "answer type missing or unsupported"
    assert puzzle_spec("def f(x: int, y: int):\n    return x == y") == \
        "signature is not f(answer, name=default, ...)"


# -- test feedback ----------------------------------------------------------------------------
TESTS = ("[TESTS]\nimport math\n# Test case 1:\nassert add(1, 2) == 3\n# Test case 2:\n"
         "assert add(-1, 1) == 0\n# Test case 3:\nassert add(10, 5) == 15\n"
         "# Test case 4:\nassert math.floor(2.5) == 2\n# Test case 5:\nassert add\n[/TESTS]")
MINUS = "[PYTHON]\ndef add(a, b):\n    return a - b\n[/PYTHON]"
HALF = "[PYTHON]\ndef add(a, b):\n    return 3 if a == 1 else a - b\n[/PYTHON]"
BROKEN = "[PYTHON]\ndef add(a, b)\n    return a + b\n[/PYTHON]"
PLUS = "[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]"


def test_feedback_keeps_the_first_passing_solution_and_records_the_failures(
        tmp_path: Path) -> None:
    def reply(request: Request) -> str | list[str]:
        if "unit tests" in text_of(request):
            return TESTS
        if "sum" in text_of(request):
            return [MINUS, HALF, BROKEN, PLUS, PLUS]
        return [MINUS, HALF, BROKEN, MINUS, HALF]  # the second problem: nothing passes

    script = Script(reply)
    rows = [{"problem": "Write add(a, b), the sum of two numbers."},
            {"problem": "Write add(a, b), the total of two numbers."}]
    records, dropped = run_step(tf.TestFeedback(solutions=5, repair_records=1), script,
                                tmp_path, rows)
    solution, repair = records
    assert solution["kind"] == "solution" and solution["solution"] == \
        "def add(a, b):\n    return a + b"
    verdict = solution["_meta"]["verifier"]
    assert verdict["attempt"] == 3 and verdict["passed"] == "3/3"
    feedback = verdict["feedback"]
    assert [e["outcome"] for e in feedback] == ["failed tests", "failed tests", "compile error"]
    assert [f["test"] for f in feedback[1]["failed"]] == ["assert add(-1, 1) == 0",
                                                         "assert add(10, 5) == 15"]
    assert "SyntaxError" in feedback[2]["error"]
    assert repair["kind"] == "repair" and repair["failed_solution"] in MINUS
    assert "assert add(1, 2) == 3  ->  failed" in repair["messages"][0]["content"]
    reasons = [d["reason"] for d in dropped]
    # math.floor(2.5) == 2 passes with no solution at all: it proves nothing
    assert reasons.count("test passes without a solution") == 2
    assert reasons.count("test calls nothing") == 2  # nor does `assert add`
    assert "no solution passed the tests" in reasons
    # tests come first, from the problem alone; the solutions' prompt shows one example test
    # (the function's signature, as in Code Llama) and never the others
    texts = [everything(r) for r in script.requests]
    for word in ("sum", "total"):
        asked = [i for i, t in enumerate(texts) if word in t]
        assert len(asked) == 2, "one tests call, then one call for all the solutions"
        tests_at, solve_at = asked
        assert "unit tests" in texts[tests_at] and "def add" not in texts[tests_at]
        assert "[PYTHON]" in texts[solve_at] and "assert add(1, 2) == 3" in texts[solve_at]
        assert "add(-1, 1)" not in texts[solve_at] and "add(10, 5)" not in texts[solve_at]
    assert_sft(records)


def test_tests_parsing_keeps_asserts_and_imports_only() -> None:
    imports, tests = tf.parse_tests(
        "```python\nimport re\ndef add(a, b):\n    return a + b\nassert add(1, 1) == 2\n"
        "assert add(1, 1) == 2\ndef test_add():\n    x = 2\n    assert add(x, x) == 4\n```")
    assert imports == ["import re"]
    assert tests == ["assert add(1, 1) == 2",
                     "def test_add():\n    x = 2\n    assert add(x, x) == 4\ntest_add()"]
    assert not tf.calls_something("assert add") and tf.calls_something("assert add(1) == 2")


# -- every method: no sandbox, no model call --------------------------------------------------
@pytest.mark.parametrize("step", [ProgramOfThought(), Case2Code(), ProgrammingPuzzles(),
                                  tf.TestFeedback()], ids=lambda s: type(s).__name__)
def test_an_unavailable_sandbox_fails_before_any_model_call(
        step: AnyStep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    script = Script(lambda request: "anything")
    rows = [{"question": QUESTION, "answer": "249", "code": "def f(x):\n    return x",
             "problem": "Write add(a, b)."}]
    with pytest.raises(ConfigError, match=r"cannot isolate code.*unsafe_local") as raised:
        run_step(step, script, tmp_path, rows)
    assert raised.value.step  # names the step whose sandbox cannot run
    assert script.requests == []
    assert not (tmp_path / "out").exists()  # refused before any file was written


# -- the recipes, end to end ------------------------------------------------------------------
def recipe_reply(request: Request) -> str | list[str]:
    text = everything(request)
    if "interview questions" in text:
        return "1. Write add(a, b) that returns the sum of a and b."
    if "unit tests" in text_of(request):
        return TESTS
    if "[PYTHON]" in text:
        return [PLUS] * request.n
    if "examples = [" in text:
        return "```python\nexamples = [dict(text='hello'), dict(text='xyz')]\n```"
    if text.startswith("# Programming puzzles"):
        return PUZZLES[:1] * request.n
    if text.startswith("# Each g()"):
        return ["\n    return 'ab' * n"] * request.n
    if "Python program" in text:
        return [RIGHT] * request.n
    return ["The answer is 249."] * request.n


@pytest.mark.parametrize("name", ["mathinstruct-pot", "case2code", "programming-puzzles",
                                  "code-test-feedback"])
def test_recipe_runs_with_its_default_input(name: str, tmp_path: Path) -> None:
    recipe, source = resolve_recipe(name)
    script = Script(recipe_reply)
    recipe.backends["default"] = script.spec()
    for spec in recipe.steps:
        if spec.use == "programming-puzzles":
            spec.with_.update(prompts=1, per_prompt=2, attempts=2)
        if spec.use == "test-feedback":
            spec.with_.update(solutions=2)
    run(Pipeline.from_recipe(recipe, source), tmp_path / "out", None, limit=1)
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and records
    assert_sft(records)
