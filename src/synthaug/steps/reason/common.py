"""What the reasoning methods share: few-shot chain-of-thought prompts, solution steps,
equation lists, and the verifier verdict a kept record carries in `_meta`."""

from __future__ import annotations

import itertools
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from synthaug.errors import RecordError, WrongType
from synthaug.records import Record
from synthaug.steps.llm import Prompt
from synthaug.template import text_field
from synthaug.verify.answers import Verdict

COT_INSTRUCTION = ("Solve the problem step by step. Write one step per line and end with "
                   "a line of the form 'The answer is N.'")
_ARITHMETIC = re.compile(r"[-+*/().\d\s,×÷^%$=]+")
_LEADING_NUMBER = re.compile(r"^\(?-?\d+(?:\.\d+)?")
_OPERATOR = re.compile(r"(?<=[\d)])[-+*/^]")


@cache
def cot_shots() -> tuple[dict[str, str], ...]:
    """The shipped chain-of-thought exemplars (question, solution)."""
    text = resources.files("synthaug.data").joinpath("math_cot_shots.jsonl").read_text("utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def solve_prompt(question: str, shots: int = 4, *, hint: str | None = None) -> Prompt:
    """Chat messages asking for a step-by-step solution after `shots` worked examples.

    `hint` (a gold answer) is appended to the question: STaR's rationalization prompt.
    """
    messages: list[dict[str, str]] = [{"role": "system", "content": COT_INSTRUCTION}]
    for shot in cot_shots()[:shots]:
        messages += [{"role": "user", "content": shot["question"]},
                     {"role": "assistant", "content": shot["solution"]}]
    asked = question if hint is None else f"{question}\n(The correct answer is {hint}.)"
    messages.append({"role": "user", "content": asked})
    return messages


def solution_steps(solution: str) -> list[str]:
    """A solution's steps: its non-empty lines (sentences when it is a single line)."""
    lines = [line.strip() for line in solution.splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", lines[0]) if s.strip()]
    return lines


def equations(solution: str) -> tuple[str, ...]:
    """The equations a solution writes, normalized (RFT's key for distinct reasoning paths).

    Each `lhs = rhs` whose left side computes something (`3*4=12`, GSM8K's `<<48/2=24>>`);
    a chain `Name = 4 + 4 + 4 = 12` gives `4+4+4=12`, and `3 + 4 = 7 + 2 = 9` gives both steps.
    """
    text = re.sub(r"(?<=\d)\s+x\s+(?=\d)", "*", solution).replace("×", "*").replace("÷", "/")
    found: list[str] = []
    runs = [piece for run in _ARITHMETIC.findall(text) for piece in re.split(r"\.\s+", run)]
    for run in runs:  # a sentence's closing period ends a run
        compact = re.sub(r"[\s$]|(?<=\d),(?=\d{3})", "", run).strip(".,")
        parts = [part.strip("(.,") if part.count("(") > part.count(")") else part.strip(".,")
                 for part in compact.split("=")]
        for lhs, rhs in itertools.pairwise(parts):
            result = _LEADING_NUMBER.match(rhs)
            if lhs and result and _OPERATOR.search(lhs) and _LEADING_NUMBER.match(lhs):
                found.append(f"{lhs}={result.group(0)}")
    return tuple(found)


def verified(record: Record, verdict: Verdict, **extra: Any) -> Record:
    """`record` with the verifier verdict in `_meta.verifier` (kept records carry it)."""
    meta = dict(record.get("_meta", {}))
    meta["verifier"] = {**verdict.as_meta(), **extra}
    return {**record, "_meta": meta}


GOLD_TYPES: tuple[type, ...] = (str, int, float)


def question_of(record: Record, field: str) -> str:
    """The problem statement in `record[field]`; raises RecordError if absent or empty."""
    text = text_field(record, field).strip()
    if not text:
        raise RecordError(field, f"field '{field}' is empty")
    return text


def gold_of_record(record: Record, field: str) -> str:
    """The reference answer in `record[field]` (a string or a number), as text."""
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, GOLD_TYPES):
        raise WrongType(field, "a string or a number", value)
    return str(value)
