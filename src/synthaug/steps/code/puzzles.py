"""Self-play programming puzzles (Haluptzok et al., 2022, "Language Models Can Teach Themselves
to Program Better").

A puzzle is a function f(x, ...) -> bool; solving it means writing g() whose result makes f
return True. Each round: the model writes new puzzles after a few seed puzzles; puzzles are
screened (exactly one required argument, the answer, with a type annotation other than bool and
used in the body; not a duplicate; runs; not made True by trivial values of its type); the model
then makes several solving attempts per puzzle, after a few seed puzzle/solution pairs; an
attempt is kept only when f(g()) is True in the sandbox — g's result of f's annotated type, g run
apart from f so it cannot touch the puzzle, each run under a timeout. Up to `max_solutions`
distinct solutions per puzzle are kept. `between_rounds` can fine-tune the model on what was
kept, the paper's self-improvement loop.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import ConfigError
from synthaug.records import Record, source_record
from synthaug.steps.base import Rounds, RoundsOptions, StepOptions
from synthaug.steps.code.programs import (
    Harness,
    code_blocks,
    find_end,
    normalized,
    open_sandbox,
    rename,
)
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses
from synthaug.verify.sandbox import Limits, Sandbox

_WRITE_HEAD = ("# Programming puzzles. Each puzzle f takes an answer x (its first argument) and "
               "returns True when x is correct.\n\n")
_SOLVE_HEAD = ("# Each g() returns an answer x that makes the puzzle above it return True: "
               "f(g()) is True.\n\n")
_CHAT_WRITE = ("Here are programming puzzles. A puzzle is a Python function f whose first "
               "argument is the answer (type-annotated) and whose other arguments have default "
               "values; it returns True exactly when the answer is correct. Write one new, "
               "different puzzle in the same style: one ```python block with def f.")
_CHAT_SOLVE = ("Solve the puzzle: write g() so that f(g()) is True. g takes the puzzle's other "
               "arguments with the same defaults. Reply with one ```python block with def g.")
_TRIVIAL: dict[str, list[Any]] = {
    "int": list(range(-10, 101)), "str": ["cat", "dog", "aa", "ab", "foo", "bar", "baz", ""],
    "float": [-100.0, -10.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0]}
_ATOMS: dict[str, list[Any]] = {"int": list(range(-3, 4)), "bool": [True, False],
                                "str": ["a", "b", "foo", "bar", "baz"],
                                "float": [-1.0, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0]}


def trivial_answers(spec: str) -> list[str]:
    """Trivial candidate answers of an answer type (the paper's: small ints, short strings,
    short lists of them); a puzzle any of them satisfies is rejected."""
    depth = spec.count("List[")
    base = spec.replace("List[", "").replace("]", "")
    if depth == 0:
        return [repr(v) for v in _TRIVIAL[base]]
    values: list[Any] = [list(p) for r in range(3) for p in product(_ATOMS[base], repeat=r)]
    for _ in range(depth - 1):
        values = [[v] for v in values]
    if [] not in values:
        values.append([])
    return [repr(v) for v in values]


def load_seeds(path: str | None) -> list[dict[str, str]]:
    """Seed puzzles with solutions ({f, g}) from JSONL; the shipped ones by default."""
    try:
        text = Path(path).read_text("utf-8") if path else \
            resources.files("synthaug.data").joinpath("puzzles_seed.jsonl").read_text("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read seed puzzles: {exc}", file=path,
                          field="seed_puzzles") from None
    for number, row in enumerate(rows, start=1):
        if not (isinstance(row, dict) and isinstance(row.get("f"), str)
                and isinstance(row.get("g"), str)):
            raise ConfigError(f"line {number}: a seed puzzle needs strings 'f' and 'g'",
                              file=path, field="seed_puzzles")
    return rows


_TYPE = re.compile(r"^(?:List\[)*(?:int|str|float|bool)\]*$")


@dataclass(frozen=True)
class Spec:
    """A puzzle's answer argument, its type, and the other arguments (g's signature)."""

    answer: str
    type: str  # int, str, float, or List[...] of them (nested lists too)
    inputs: str  # "name=default, ..." as the puzzle writes them


def answer_type(annotation: ast.expr | None) -> str | None:
    """The normalized answer annotation (`list[int]` -> `List[int]`), None if unsupported."""
    if annotation is None:
        return None
    text = re.sub(r"\blist\[", "List[", ast.unparse(annotation).replace("typing.", ""))
    text = text.replace(" ", "")
    ok = _TYPE.match(text) and text.count("List[") == text.count("]")
    return text if ok else None


def puzzle_spec(source: str) -> Spec | str:
    """The puzzle's spec, or why the puzzle is unfit (the paper's static filters)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "puzzle is not valid Python"
    fn = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(fn, ast.FunctionDef) or fn.name != "f":
        return "not a single function f"
    args = fn.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or not args.args \
            or len(args.defaults) != len(args.args) - 1:
        return "signature is not f(answer, name=default, ...)"
    if not any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn)):
        return "puzzle returns nothing"
    first = args.args[0]
    typ = answer_type(first.annotation)
    if typ is None:
        return "answer type missing or unsupported"
    if typ == "bool":
        return "answer type bool (trivial)"
    if not any(isinstance(n, ast.Name) and n.id == first.arg
               for stmt in fn.body for n in ast.walk(stmt)):
        return "puzzle ignores its answer"
    inputs = ", ".join(f"{ast.unparse(a)}={ast.unparse(d)}"
                       for a, d in zip(args.args[1:], args.defaults, strict=True))
    return Spec(first.arg, typ, inputs)


def numbered(source: str, name: str, number: int) -> str:
    """`def f(` renamed `def f3(` (the paper numbers the puzzles of a prompt)."""
    return re.sub(rf"\bdef {name}\(", f"def {name}{number}(", source, count=1)


class PuzzleOptions(RoundsOptions):
    """Options of programming-puzzles."""

    backend: str = "default"
    rounds: int = 1
    prompts: int = Field(8, ge=1)  # puzzle-writing prompts per round
    per_prompt: int = Field(4, ge=1)  # puzzles sampled per prompt
    shots: int = Field(5, ge=1)  # seed puzzles shown when writing a puzzle
    solve_shots: int = Field(3, ge=1)  # seed puzzles with solutions shown when solving
    attempts: int = Field(8, ge=1)  # solving attempts per puzzle
    max_solutions: int = Field(8, ge=1)  # distinct verified solutions kept per puzzle
    trivial_reject_rate: float = Field(1.0, ge=0.0, le=1.0)  # share of puzzles screened
    check_timeout: float = Field(1.0, gt=0)  # seconds per f(x) or g() call
    target: int | None = Field(None, ge=1)  # stop once this many puzzles have solutions
    seed_puzzles: str | None = None  # JSONL of {f, g}; default: input records, else shipped
    mode: Literal["completion", "chat"] = "completion"
    sampling: Sampling = Sampling(temperature=0.9, max_tokens=300, stop=("\ndef ", "\nassert"))
    solve_sampling: Sampling = Sampling(temperature=0.9, max_tokens=250,
                                        stop=("\ndef ", "\nassert"))
    sandbox: Limits = Limits(timeout=60.0)
    unsafe_local: bool = False  # run code without isolation (resource limits only)


@dataclass
class Candidate:
    """A screened puzzle awaiting its solving attempts."""

    source: str
    spec: Spec
    parents: list[Record]
    reply: Reply
    label: str


class ProgrammingPuzzles(Rounds[PuzzleOptions]):
    """Puzzles and solutions written by the model, kept only when f(g()) is True."""

    Options: ClassVar[type[StepOptions]] = PuzzleOptions
    box: Sandbox

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.shipped = load_seeds(self.options.seed_puzzles)  # a bad file fails up front

    def provides(self) -> set[str]:
        return {"puzzle", "solution", "answer", "round", "text", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, raw_completion=self.options.mode == "completion")]

    def prepare(self) -> None:
        self.box = open_sandbox(self.options.sandbox, self.options.unsafe_local)

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        given = [r for r in pool if isinstance(r.get("f"), str) and isinstance(r.get("g"), str)]
        self.seeds = given or [source_record(s, source="puzzles-seed", index=i,
                                             recipe=ctx.recipe)
                               for i, s in enumerate(self.shipped)]
        self.seen = {normalized(str(s["f"])): "copies a seed puzzle" for s in self.seeds}
        self.solved = 0

    # -- prompts --------------------------------------------------------------------------
    def write_prompt(self, shots: list[Record]) -> Prompt:
        """The request for a new puzzle after `shots` (seed puzzles)."""
        if self.options.mode == "chat":
            listed = "\n\n".join(str(s["f"]) for s in shots)
            return [{"role": "user", "content": f"{_CHAT_WRITE}\n\n```python\n{listed}\n```"}]
        listed = "".join(numbered(str(s["f"]), "f", i) + "\n\n" for i, s in enumerate(shots, 1))
        return f"{_WRITE_HEAD}{listed}def f{len(shots) + 1}("

    def solve_prompt(self, puzzle: str, spec: Spec, shots: list[Record]) -> Prompt:
        """The request for a solution of `puzzle` after seed puzzle/solution pairs."""
        header = f"def g({spec.inputs}):"
        if self.options.mode == "chat":
            turns: list[dict[str, str]] = [{"role": "system", "content": _CHAT_SOLVE}]
            for s in shots:
                turns += [{"role": "user", "content": f"```python\n{s['f']}\n```"},
                          {"role": "assistant", "content": f"```python\n{s['g']}\n```"}]
            return [*turns, {"role": "user", "content": f"```python\n{puzzle}\n```\n{header}"}]
        pairs = "".join(f"{numbered(str(s['f']), 'f', i)}\n\n{numbered(str(s['g']), 'g', i)}"
                        f"\n\nassert f{i}(g{i}())\n\n" for i, s in enumerate(shots, 1))
        k = len(shots) + 1
        return f"{_SOLVE_HEAD}{pairs}{numbered(puzzle, 'f', k)}\n\ndef g{k}({spec.inputs}):"

    def read_puzzle(self, text: str) -> str | None:
        """The puzzle in a reply, named f, without what follows it."""
        if self.options.mode == "completion":
            return find_end("def f(" + text)
        for block in [*code_blocks(text), text]:
            match = re.search(r"^def f\w*\(", block, re.M)
            if match:
                return find_end(rename(block[match.start():], "f"))
        return None

    def read_solution(self, text: str, spec: Spec) -> str | None:
        """The solution in a reply, as `def g(...)`."""
        if self.options.mode == "completion":
            return find_end(f"def g({spec.inputs}):" + text)
        for block in [*code_blocks(text), text]:
            match = re.search(r"^def g\w*\(", block, re.M)
            if match:
                return find_end(rename(block[match.start():], "g"))
        return None

    # -- a round ----------------------------------------------------------------------------
    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        o = self.options
        batches = [ctx.rng(None, "shots", index, j).sample(self.seeds, min(o.shots,
                                                                        len(self.seeds)))
                   for j in range(o.prompts)]
        replies = await asyncio.gather(*(
            ctx.attempt(ctx.generate(self.write_prompt(batch), o.sampling, n=o.per_prompt,
                                     seed=ctx.seed_for(None, "write", index, j)),
                        {"round": index, "prompt": j})
            for j, batch in enumerate(batches)))
        candidates = list(self._screen(index, batches, replies, ctx))
        found = await asyncio.gather(*(ctx.attempt(self._solve(c, index, ctx),
                                                   {"puzzle": c.source, "round": index})
                                       for c in candidates))
        made = [record for group in found if group for record in group]
        self.solved += sum(1 for group in found if group)
        ctx.stats.notes[f"round {index} puzzles solved"] = sum(1 for g in found if g)
        return made, o.target is not None and self.solved >= o.target

    def _screen(self, index: int, batches: list[list[Record]], replies: list[Reply | None],
                ctx: StepContext) -> Iterable[Candidate]:
        """Puzzles that pass the static checks and are new (in reply order)."""
        for j, reply in enumerate(replies):
            if reply is None:
                continue
            for k, text in enumerate(reply.texts):
                source = self.read_puzzle(text)
                spec = puzzle_spec(source) if source else "no puzzle in the reply"
                where = {"round": index, "puzzle": source or text}
                if isinstance(spec, str):
                    ctx.drop(where, spec)
                    continue
                assert source is not None
                key = normalized(source)
                if key in self.seen:
                    ctx.drop(where, self.seen[key] if "seed" in self.seen[key]
                             else "duplicate puzzle")
                    continue
                self.seen[key] = "duplicate puzzle"
                yield Candidate(source, spec, batches[j], reply, f"{index}.{j}.{k}")

    async def _solve(self, c: Candidate, index: int, ctx: StepContext) -> list[Record]:
        """Records for the verified solutions of one puzzle (none: dropped with the reason)."""
        o = self.options
        why = await self._unfit(c, index, ctx)
        if why:
            ctx.drop({"round": index, "puzzle": c.source}, *why)
            return []
        shots = ctx.rng(None, "solve-shots", c.label).sample(
            self.seeds, min(o.solve_shots, len(self.seeds)))
        reply = await ctx.generate(self.solve_prompt(c.source, c.spec, shots), o.solve_sampling,
                                   n=o.attempts, seed=ctx.seed_for(None, "solve", c.label))
        solutions = [s for s in (self.read_solution(t, c.spec) for t in reply.texts) if s]
        passed, tried = await self._verify(c, solutions)
        if not passed:
            ctx.drop({"round": index, "puzzle": c.source, "attempts": solutions},
                     "no solution passed", f"{len(reply.texts)} attempts: {tried}")
            return []
        return [ctx.derive(c.parents, self._record(c, g, answer, index, tried),
                           f"{c.label}.{i}", c.reply, reply)
                for i, (g, answer) in enumerate(passed)]

    async def _unfit(self, c: Candidate, index: int,
                     ctx: StepContext) -> tuple[str, str] | None:
        """Why a puzzle is rejected before solving (it does not run, or is trivial), or None."""
        screened = ctx.rng(None, "trivial", c.label).random() < self.options.trivial_reject_rate
        answers = trivial_answers(c.spec.type) if screened else []
        run = await Harness("check_answers").run(
            self.box, len(answers), puzzle=c.source, type=c.spec.type, answers=answers,
            timeout=self.options.check_timeout)
        if run.setup is not None:
            return "puzzle does not run", str(run.setup.get("error"))
        hit = next((a for a, row in zip(answers, run.rows, strict=True)
                    if row["status"] == "ok" and row["truthy"]), None)
        return ("trivially solvable", f"f({hit}) is true") if hit is not None else None

    async def _verify(self, c: Candidate,
                      solutions: list[str]) -> tuple[list[tuple[str, str]], dict[str, int]]:
        """The distinct solutions whose answer makes f return True (with the answer), and a
        count of attempt outcomes."""
        timeout = self.options.check_timeout
        ran = await Harness("run_solutions").run(self.box, len(solutions), solutions=solutions,
                                                 timeout=timeout)
        answered = [(g, row["answer"]) for g, row in zip(solutions, ran.rows, strict=True)
                    if row["status"] == "ok"]
        checked = await Harness("check_answers").run(
            self.box, len(answered), puzzle=c.source, type=c.spec.type,
            answers=[a for _, a in answered], timeout=timeout)
        tried = {"no solution parsed": self.options.attempts - len(solutions),
                 "g failed": len(solutions) - len(answered), "wrong type": 0, "f not True": 0,
                 "passed": 0}
        passed: list[tuple[str, str]] = []
        seen: set[str] = set()
        for (g, answer), row in zip(answered, checked.rows, strict=True):
            if row["status"] != "ok" or not row["typed"] or not row["true"]:
                tried["wrong type" if row.get("typed") is False else "f not True"] += 1
                continue
            tried["passed"] += 1
            if normalized(g) not in seen and len(passed) < self.options.max_solutions:
                seen.add(normalized(g))
                passed.append((g, answer))
        return passed, {k: v for k, v in tried.items() if v}

    def _record(self, c: Candidate, g: str, answer: str, index: int,
                tried: dict[str, int]) -> Record:
        ask = (f"Find an input for which this puzzle returns True:\n\n```python\n{c.source}\n```"
               f"\n\nWrite it as a function g({c.spec.inputs}) that returns the answer.")
        return {"puzzle": c.source, "solution": g, "answer": answer, "round": index,
                "text": f"{c.source}\n\n{g}\n\nassert f(g())\n",
                "messages": [{"role": "user", "content": ask},
                             {"role": "assistant", "content": f"```python\n{g}\n```"}],
                "_meta": {"verifier": {"verifier": "execution", "check": "f(g()) is True",
                                       "answer_type": c.spec.type, "attempts": tried,
                                       "isolation": self.box.isolation}}}
