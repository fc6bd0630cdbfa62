"""Final-answer verification for math: extract the answer from a solution, compare to gold.

    gold_of(answer)        GSM8K "... #### 72" -> "72"; a boxed answer -> its content
    extract_answer(text)   "#### N", the last \\boxed{...}, "The answer is X", "Answer: X"
    normalize(answer)      without currency, inline-math dollars, units, percent sign
    equivalent(a, b)       plain numbers exactly; otherwise math-verify (fractions, LaTeX,
                           expressions, sets, intervals), sympy underneath
    check(solution, gold)  a Verdict: correct, what was extracted, and why
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

_HASHES = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?:\.\s|\.?$|\n)",
    re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
# a plain number: digits with optional thousands commas ("1,234", never "1,2": a set),
# a decimal part or a fraction bar
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_PLAIN = re.compile(rf"^-?(?:{_DIGITS})(?:/\d+)?$")
# a number followed by a percent sign or unit words ("12 cm", "5 apples", "50%")
_WITH_UNITS = re.compile(
    rf"^(-?(?:{_DIGITS})(?:/\d+)?)\s*(?:\\?%|\s(?!(?:pi|sqrt)\b)[A-Za-z]{{2,}}[A-Za-z .'/-]*)$")
_CURRENCY = re.compile(r"(?<![\w}])\\?\$(?=\s*-?\.?\d)|(?<=-)\\?\$")


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one solution against a gold answer."""

    correct: bool
    predicted: str | None
    gold: str
    reason: str  # "match", "mismatch", "no answer found"

    def as_meta(self) -> dict[str, Any]:
        """The verdict as a JSON-able mapping for a record's `_meta.verifier`."""
        return {"verifier": "math", **asdict(self)}


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def gold_of(answer: str) -> str:
    """The final answer inside a reference solution (GSM8K `####`, boxed), else the text."""
    found = _HASHES.findall(answer)
    if found:
        return str(found[-1]).strip()
    return _boxed(answer) or answer.strip()


def extract_answer(text: str) -> str | None:
    """The final answer a solution states, or None when it states none."""
    found = _HASHES.findall(text)
    if found:
        return str(found[-1]).strip()
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    stated = _ANSWER_IS.findall(text)
    if stated:
        return str(stated[-1]).strip().rstrip(".").strip()
    return None


def normalize(answer: str) -> str:
    """`answer` without what does not change its value: inline-math dollars, currency signs,
    a trailing period, a percent sign or unit words after a plain number ("$1,234." ->
    "1,234", "12 cm" -> "12", "50%" -> "50": GSM8K's gold answers drop them too)."""
    text = answer.strip().replace("\u2212", "-").rstrip(".").strip()
    if text.count("$") == 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    text = _CURRENCY.sub("", text).replace("- ", "-", 1).strip()
    units = _WITH_UNITS.match(text)
    return units.group(1) if units else text


def _as_number(text: str) -> Fraction | None:
    """The exact value of a plain number (normalized), else None."""
    if not _PLAIN.match(text):
        return None
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


@lru_cache(maxsize=4096)
def _parsed(text: str, timeout: int | None) -> tuple[Any, ...]:
    """math-verify's reading of an answer: as inline LaTeX, else as found in the text."""
    from math_verify import parse

    found = parse(f"${text}$", parsing_timeout=timeout)
    if not found and "$" in text:
        found = parse(text, parsing_timeout=timeout)
    return tuple(found)


def equivalent(predicted: str, gold: str) -> bool:
    """True when `predicted` and `gold` denote the same mathematical answer.

    Plain numbers compare exactly (0.5 == 1/2, 0.333 != 1/3); everything else (LaTeX,
    expressions, sets, intervals, equations) through math-verify, with sympy underneath.
    """
    pred, target = normalize(predicted), normalize(gold)
    a, b = _as_number(pred), _as_number(target)
    if a is not None and b is not None:
        return a == b
    from math_verify import verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed, pred_parsed = _parsed(target, timeout), _parsed(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return " ".join(pred.split()) == " ".join(target.split())
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))


def check(solution: str, gold: str) -> Verdict:
    """Whether `solution` ends at the same answer as `gold` (a value or a reference text)."""
    target = gold_of(gold)
    predicted = extract_answer(solution)
    if predicted is None:
        return Verdict(False, None, target, "no answer found")
    ok = equivalent(predicted, target)
    return Verdict(ok, predicted, target, "match" if ok else "mismatch")


def last_number(text: str) -> str | None:
    """The last number written in `text` (a lenient fallback some methods use)."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None
