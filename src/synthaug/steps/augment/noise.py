"""Character-level noise: keyboard-neighbour typos, character insertion, deletion and swap.

Each letter is edited with probability `rate` by one of the enabled operations, drawn from
`ctx.rng(record)`: `--seed` changes the noise, a rerun repeats it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field

from synthaug.records import Record, content
from synthaug.steps.base import Map, Requirements, StepOptions
from synthaug.steps.context import StepContext

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours() -> dict[str, str]:
    """Each letter's neighbours on a QWERTY keyboard (same row and the rows above/below)."""
    where = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    found: dict[str, str] = {}
    for c, (r, i) in where.items():
        near = [d for d, (r2, i2) in where.items()
                if d != c and abs(r2 - r) <= 1 and abs(i2 - i + (r2 - r) * 0.5) <= 1]
        found[c] = "".join(sorted(near))
    return found


NEIGHBOURS = _neighbours()
NoiseOp = Literal["keyboard", "insert", "delete", "swap"]
ALL_NOISE: list[NoiseOp] = ["keyboard", "insert", "delete", "swap"]


def _keep_case(new: str, old: str) -> str:
    return new.upper() if old.isupper() else new


def add_noise(text: str, rate: float, ops: list[NoiseOp],
              rng: random.Random) -> tuple[str, dict[str, int]]:
    """`text` with each letter edited with probability `rate`; the counts of edits by op."""
    chars, out = list(text), []
    counts: dict[str, int] = dict.fromkeys(ops, 0)
    i = 0
    while i < len(chars):
        c = chars[i]
        if not (c.isalpha() and c.lower() in NEIGHBOURS) or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        op = rng.choice(ops)
        counts[op] += 1
        if op == "keyboard":
            out.append(_keep_case(rng.choice(NEIGHBOURS[c.lower()]), c))
        elif op == "insert":
            out += [c, _keep_case(rng.choice(NEIGHBOURS[c.lower()]), c)]
        elif op == "swap" and i + 1 < len(chars):
            out += [chars[i + 1], c]
            i += 1
        elif op == "swap":
            out.append(c)
            counts[op] -= 1
        # "delete": the letter is left out
        i += 1
    return "".join(out), counts


class CharNoiseOptions(StepOptions):
    """Options of char-noise."""

    field: str = "text"
    rate: float = Field(0.05, ge=0, le=1)  # probability that a letter is edited
    operations: list[NoiseOp] = Field(default_factory=lambda: list(ALL_NOISE), min_length=1)
    n_aug: int = Field(1, ge=1)  # noisy copies per record
    keep_original: bool = False


class CharNoise(Map[CharNoiseOptions]):
    """Makes n_aug noisy copies of each record's text; other fields are kept."""

    Options: ClassVar[type[StepOptions]] = CharNoiseOptions

    def requires(self) -> Requirements:
        return {self.options.field}

    def provides(self) -> set[str]:
        return {"augmentation"}

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        base = content(record)
        if o.keep_original:
            yield {**base, "augmentation": {"method": "char-noise", "edits": {}}}
        for k in range(o.n_aug):
            text, counts = add_noise(str(record[o.field]), o.rate, list(o.operations),
                                     ctx.rng(record, "char-noise", k))
            yield {**base, o.field: text,
                   "augmentation": {"method": "char-noise", "edits": counts}}
