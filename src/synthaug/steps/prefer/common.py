"""What the preference steps share: the completions list, verdict parsing, judgement entries.

A record being judged holds its prompt (`instruction` by default) and `completions`: a list
of {"model": ..., "text": ...} (plain strings are read as texts of an unknown model). Judge
steps add scores or ranks to the completions and append one entry per verdict to the
record's `judgements` list; `synthaug report` measures the judges' biases from those entries
(`synthaug.measure.judge_bias`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from pydantic import Field

from synthaug.errors import ParseError, RecordError
from synthaug.records import Record
from synthaug.steps.base import LLMOptions
from synthaug.steps.llm import Sampling
from synthaug.template import text_field

JUDGE_SAMPLING = Sampling(temperature=0.0, max_tokens=512)
T = TypeVar("T")


class JudgeOptions(LLMOptions):
    """What every judge step reads: the prompt and the completions to judge."""

    backend: str = "judge"
    prompt_field: str = "instruction"
    completions_field: str = "completions"
    reference_field: str | None = None  # a reference answer shown to the judge, when given
    sampling: Sampling = JUDGE_SAMPLING
    min_completions: int = Field(2, ge=1)


def completions_of(record: Record, field: str, at_least: int = 1) -> list[dict[str, Any]]:
    """The record's completions as dicts with `text` (and `model` when known); RecordError
    when the field is missing, malformed or too short."""
    found = record.get(field)
    if not isinstance(found, list):
        raise RecordError(field, "must be a list of completions")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(found):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise RecordError(f"{field}[{i}].text", "a completion needs a text")
        items.append(dict(item))
    if len(items) < at_least:
        raise RecordError(field, f"needs at least {at_least} completions, found {len(items)}")
    return items


def reference_block(record: Record, field: str | None) -> str:
    """The reference answer, as a prompt block ('' when none is configured or given)."""
    if not field or not isinstance(record.get(field), str) or not record[field].strip():
        return ""
    return f"Reference answer (what a top response contains):\n{record[field].strip()}\n\n"


# the letters only in capitals: "Verdict: a tie" must not read as response A
_VERDICT = re.compile(r"(?i:\bverdict\b)\W{0,6}(?:(?i:response)\s+)?\[?\b"
                      r"(?:(?i:an?|the)\s+)?((?-i:A|B)|(?i:tie))\b")
_LEADING = re.compile(r"^\W{0,4}(?:(?i:response)\s+)?\[?((?-i:A|B)|(?i:tie))\b\]?\W*$")


def pair_verdict(text: str) -> str:
    """'A', 'B' or 'tie' from a pairwise judge's reply; ParseError when it names none or
    disagrees with itself."""
    said = {v.upper() if v.lower() != "tie" else "tie" for v in _VERDICT.findall(text)}
    if not said:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        ends = [m.group(1) for line in lines[-1:] + lines[:1] if (m := _LEADING.match(line))]
        said = {v.upper() if v.lower() != "tie" else "tie" for v in ends}
    if len(said) != 1:
        problem = "no verdict" if not said else f"several verdicts {sorted(said)}"
        raise ParseError(f"{problem} in the judge's reply: {text[:80]!r}", raw=[text])
    return said.pop()


def judgement(kind: str, judge: str, **facts: Any) -> dict[str, Any]:
    """One verdict's entry for the record's `judgements` list."""
    return {"kind": kind, "judge": judge, **facts}


async def settled(*work: Awaitable[T]) -> list[T]:
    """The results of `work`, run together; the first error is raised once every call has
    ended, so a failed verdict leaves no model call running after its record is done."""
    done = await asyncio.gather(*work, return_exceptions=True)
    for item in done:
        if isinstance(item, BaseException):
            raise item
    return cast(list[T], done)


def with_judgements(record: Record, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The record's existing judgements followed by `entries`."""
    found = record.get("judgements")
    return [*(found if isinstance(found, list) else []), *entries]


def prompt_text(record: Record, field: str) -> str:
    """The request a judge is shown: the user turns of the record's `prompt` (what the
    models were asked, as `completions` stores it) when it holds chat turns; else `field`,
    then the record's `input` (when a non-empty string) after a blank line."""
    turns = record.get("prompt")
    if isinstance(turns, list):
        users = [t["content"] for t in turns if isinstance(t, dict)
                 and t.get("role") == "user" and isinstance(t.get("content"), str)]
        if users:
            return "\n\n".join(users)
    text = text_field(record, field)
    given = record.get("input")
    return f"{text}\n\n{given}" if isinstance(given, str) and given.strip() else text
