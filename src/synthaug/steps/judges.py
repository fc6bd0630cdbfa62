"""Judges: functions over the context's model service, usable from any step family."""

from __future__ import annotations

import re

from synthaug.errors import ParseError
from synthaug.records import Record
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling

VERDICT = Sampling(temperature=0.0, max_tokens=3)


async def yes_no(ctx: StepContext, prompt: str, *, key: Record | None, role: str | None = None,
                 salt: str = "judge") -> tuple[bool, Reply]:
    """A greedy yes/no verdict on `prompt`; a reply that is neither raises ParseError."""
    reply = await ctx.generate([{"role": "user", "content": prompt}], VERDICT,
                               seed=ctx.seed_for(key, salt), role=role)
    word = reply.text.strip().lower()
    if word.startswith("yes"):
        return True, reply
    if word.startswith("no"):
        return False, reply
    raise ParseError(f"the judge answered neither yes nor no: {reply.text[:60]!r}",
                     raw=reply.texts)


_SCALE = re.compile(
    r"(?:on\s+)?(?:a\s+)?(?:scale\s+(?:of|from)\s+)?\(?\b(\d+)\s*(?:to|-|–)\s*(\d+)\)?",
    re.IGNORECASE)
_LABELLED = re.compile(
    r"\b(?:score|rating|rated|grade|overall)\b\s*(?:is|of|:|=)?\s*\**\s*(\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)
_FRACTION = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)",
                       re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.]*\s*(?:%|/\d))")


def score_of(text: str, low: float, high: float) -> float:
    """The score a judge's reply gives on the scale [low, high]; ParseError if it gives none
    or several that disagree.

    Reads "Score: 4.5", "4/5", "4 out of 5", a reply that starts with the number, and a lone
    number; mentions of the scale itself ("on a scale of 1 to 5") are not scores.
    """
    def fits(value: float, out_of: str) -> bool:
        return low <= value <= high and (not out_of or float(out_of) == high)

    labelled = [float(v) for v, out_of in _LABELLED.findall(text) if fits(float(v), out_of)]
    if labelled:
        return _agreed(labelled, text)
    stripped = _SCALE.sub(" ", text)
    fractions = [float(v) for v, out_of in _FRACTION.findall(stripped) if fits(float(v), out_of)]
    if fractions:
        return _agreed(fractions, text)
    numbers = [float(v) for v in _NUMBER.findall(_FRACTION.sub(" ", stripped))]
    first = re.match(r"\s*\**\s*(\d+(?:\.\d+)?)", stripped)
    if first and low <= float(first.group(1)) <= high:  # the score first, then the reasons
        line = _NUMBER.findall(stripped.strip().split("\n", 1)[0])
        return _agreed([v for v in map(float, line) if low <= v <= high], text)
    return _agreed([v for v in numbers if low <= v <= high], text)


def _agreed(values: list[float], text: str) -> float:
    if not values:
        raise ParseError(f"no score in the judge's reply: {text[:80]!r}", raw=[text])
    if len(set(values)) > 1:
        raise ParseError(f"the judge's reply gives several scores {sorted(set(values))}: "
                         f"{text[:80]!r}", raw=[text])
    return values[0]
