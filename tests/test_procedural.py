"""AMPS-style procedural math: reproducible, every topic, answers verified independently."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sympy as sp
from math_verify import parse
from pydantic import ValidationError
from sympy.stats import Die, P

from synthaug.executors.local import LocalExecutor, RunConfig
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.records import Record
from synthaug.steps.reason import procedural
from synthaug.steps.reason.procedural import (
    Module,
    Problem,
    ProceduralMath,
    Unverified,
    modules,
    topics,
)
from synthaug.verify.answers import check, equivalent
from tests.recipe_helpers import a_context

X = sp.Symbol("x")


def generate(seed: int = 0, **options: Any) -> tuple[list[Record], list[tuple[str, Any]]]:
    """The step's records for `seed`, and the side rows (drops, failures) it wrote."""
    ctx = a_context(seed)
    step = ProceduralMath(**options)

    async def nothing() -> AsyncIterator[Record]:
        return
        yield

    async def collect() -> list[Record]:
        return [r async for r in step.run(nothing(), ctx)]

    records = asyncio.run(collect())
    return records, ctx.side.rows  # type: ignore[attr-defined]


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    first, _ = generate(seed=3, count=12)
    again, _ = generate(seed=3, count=12)
    other, _ = generate(seed=4, count=12)
    assert [r["question"] for r in first] == [r["question"] for r in again]
    assert [r["_meta"]["id"] for r in first] == [r["_meta"]["id"] for r in again]
    assert len({r["question"] for r in first} & {r["question"] for r in other}) <= 1


def test_every_topic_present_and_every_answer_verified() -> None:
    records, side = generate(count=3 * len(topics()))
    assert side == []
    assert len(records) == 3 * len(topics())
    assert {r["topic"] for r in records} == set(topics())
    assert {"arithmetic", "algebra", "calculus", "probability"} <= set(topics())
    assert len({r["question"] for r in records}) == len(records)
    for record in records:
        verdict = record["_meta"]["verifier"]
        assert verdict["correct"] and verdict["verifier"] == "sympy-independent"
        assert verdict["method"]
        assert check(record["solution"], record["answer"]).correct  # the boxed answer reads back
        assert record["messages"][-1]["content"] == record["solution"]
        assert record["difficulty"] in (1, 2, 3)


def _ratio(count: int, total: int) -> str:
    return str(sp.latex(sp.Rational(count, total)))


def _antiderivative_ok(answer: str, params: dict[str, Any]) -> bool:
    """The answer text, read back by math-verify, differentiates to the integrand."""
    read = parse(f"${answer}$")[0]
    f = sp.sympify(params["integrand"])
    variable = next(s for s in read.free_symbols if s.name == "x")
    return bool(sp.simplify(sp.diff(read.subs(variable, X), X) - f) == 0)


def _cards(p: dict[str, Any]) -> str:
    k = p["cards"]
    count = {"aces": math.comb(4, k), "suit": 4 * math.comb(13, k),
             "one-ace": 4 * math.comb(48, k - 1), "no-face": math.comb(40, k),
             "some-heart": math.comb(52, k) - math.comb(39, k)}[p["event"]]
    return _ratio(count, math.comb(52, k))


def _dice(p: dict[str, Any]) -> str:
    total = sum(Die(f"d{i}", 6) for i in range(p["dice"]))
    event = total >= p["target"] if p["at_least"] else sp.Eq(total, p["target"])
    return str(sp.latex(P(event)))


def _counting(p: dict[str, Any]) -> str:
    if "word" in p:
        word = p["word"]
        return str(math.factorial(len(word)) // math.prod(
            math.factorial(word.count(c)) for c in set(word)))
    people = p["women"] + p["men"]
    return str(math.comb(people, p["size"]) - math.comb(p["women"], p["size"])
               - math.comb(p["men"], p["size"]))


def _poly(coefficients: list[int]) -> sp.Expr:
    return sp.Poly(coefficients, X).as_expr()


def _limit(p: dict[str, Any]) -> str:
    return str(sp.latex(sp.limit(sp.sympify(p["expression"]), X, sp.sympify(p["point"]))))


def _system(p: dict[str, Any]) -> str:
    y = sp.Symbol("y")
    found = sp.solve([a * X + b * y - c for a, b, c in p["rows"]], [X, y])
    return f"x = {found[X]}, y = {found[y]}"


def _fractions(p: dict[str, Any]) -> str:
    value = Fraction(*p["terms"][0])
    for op, term in zip(p["ops"], p["terms"][1:], strict=True):
        other = Fraction(*term)
        value = {"+": value + other, "-": value - other, "*": value * other,
                 "/": value / other}[op]
    return _ratio(value.numerator, value.denominator)


def _linear(p: dict[str, Any]) -> str:
    a, b, c, d = p["a"], p["b"], p["c"], sp.Rational(p["d"])
    left = a * (X + b) if p["form"] == "a(x+b)" else a * X + b
    return str(sp.latex(sp.solve(sp.Eq(left, c * X + d), X)[0]))


# an independent solution from each module's parameters, as LaTeX (None: a property check)
INDEPENDENT: dict[str, Callable[[dict[str, Any]], str]] = {
    "fraction-arithmetic": _fractions,
    "gcd-lcm": lambda p: str((math.lcm if p["ask"] == "lcm" else math.gcd)(p["a"], p["b"])),
    "simplify-radicals": lambda p: str(sp.latex(sp.nsimplify(
        sum(sp.sqrt(n) for n in p["radicands"])))),
    "linear-equation": _linear,
    "quadratic-equation": lambda p: ", ".join(
        str(sp.latex(r)) for r in sp.solve(_poly(p["coefficients"]), X)),
    "expand-simplify": lambda p: str(sp.latex(sp.cancel(
        _poly(p["numerator"]) / _poly(p["denominator"])))),
    "factor-polynomial": lambda p: str(sp.latex(sp.factor(_poly(p["coefficients"])))),
    "linear-system": _system,
    "modular-power": lambda p: str(pow(p["a"], p["e"], p["m"])),
    "count-divisors": lambda p: str(len(sp.divisors(p["n"]))),
    "eigenvalues-2x2": lambda p: ", ".join(
        str(v) for v in sp.Matrix(p["matrix"]).eigenvals()),
    "determinant": lambda p: str(sp.Matrix(p["matrix"]).det(method="berkowitz")),
    "derivative": lambda p: str(sp.latex(sp.diff(sp.sympify(p["function"]), X))),
    "definite-integral": lambda p: str(sp.latex(sp.integrate(
        sp.sympify(p["integrand"]), (X, sp.sympify(p["low"]), sp.sympify(p["high"]))))),
    "limit": _limit,
    "dice": _dice,
    "cards": _cards,
    "counting": _counting,
}


def test_answers_equal_an_independent_computation() -> None:
    records, _ = generate(seed=11, count=4 * len(modules()))
    seen = set()
    for record in records:
        params = record["_meta"]["procedural"]["params"]
        name = record["module"]
        seen.add(name)
        if name == "antiderivative":
            assert _antiderivative_ok(record["answer"], params), record["answer"]
            continue
        independent = INDEPENDENT[name](params)
        assert equivalent(record["answer"], independent), (name, record["answer"], independent)
    assert len(seen) >= len(modules()) - 3  # modules are drawn at random within a topic


def _wrong(problem: Problem) -> Problem:
    """The same problem with a wrong answer (value and text shifted by one)."""
    value = problem.value
    if isinstance(value, tuple):
        wrong: Any = (value[0] + 1, *value[1:])
        text = f"x = {wrong[0]}, y = {wrong[1]}"
    elif isinstance(value, list):
        wrong = [v + 1 for v in value]
        text = ", ".join(str(sp.latex(v)) for v in wrong)
    elif problem.answer.endswith("+ C"):  # an antiderivative plus 1 is still one: add x
        wrong = value + X
        text = str(sp.latex(wrong)) + " + C"
    else:
        wrong = value + 1
        text = str(sp.latex(wrong))
    return dataclasses.replace(problem, value=wrong, answer=text)


def _wrong_text(problem: Problem) -> Problem:
    """The right value, but an answer text that says something else."""
    shift = "x" if problem.answer.endswith("+ C") else "1"
    return dataclasses.replace(problem, answer=f"{problem.answer} + {shift}")


@pytest.mark.parametrize("corrupt", [_wrong, _wrong_text])
def test_a_wrong_answer_is_dropped_not_kept(corrupt: Callable[[Problem], Problem],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = modules()

    def corrupted(module: Module) -> Module:
        return dataclasses.replace(module, make=lambda rng, level: corrupt(module.make(rng, level)))

    monkeypatch.setattr(procedural, "modules", lambda: {n: corrupted(m) for n, m in real.items()})
    records, side = generate(seed=5, count=2 * len(topics()))
    drops = [row for kind, row in side if kind == "dropped"]
    reasons = {row["reason"] for row in drops}
    assert records == []
    assert len(drops) == 2 * len(topics())
    assert reasons <= {"not verified", "answer differs from the independent computation"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_module_catches_a_wrong_answer(name: str) -> None:
    module = modules()[name]
    for level in (1, 2, 3):
        problem = module.make(random.Random(level), level)
        assert equivalent(problem.answer, module.verify(problem).independent)
        for corrupt in (_wrong, _wrong_text):
            bad = corrupt(problem)
            try:
                checked = module.verify(bad)
            except Unverified:
                continue
            assert not equivalent(bad.answer, checked.independent), (name, level, bad.answer)


def test_options_topics_and_difficulty() -> None:
    records, _ = generate(count=6, topics=["probability"], difficulty=1)
    assert {r["topic"] for r in records} == {"probability"}
    assert {r["difficulty"] for r in records} == {1}
    with pytest.raises(ValidationError, match="unknown topics"):
        ProceduralMath(topics=["astrology"])
    with pytest.raises(ValidationError, match="difficulty"):
        ProceduralMath(difficulty=[4])


def test_recipe_runs_without_a_model(tmp_path: Path) -> None:
    recipe, source = resolve_recipe("amps-procedural")
    recipe.steps[0].with_["count"] = 8
    state = LocalExecutor(RunConfig(out_dir=tmp_path)).run(Pipeline.from_recipe(recipe, source))
    assert state is not None
    rows = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["_meta"]["verifier"]["correct"] for r in rows)
    assert all(r["messages"][0]["role"] == "user" for r in rows)
