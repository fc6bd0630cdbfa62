"""Planting benchmark items in a dataset, verbatim and lightly edited, to measure recall."""

from __future__ import annotations

import random
import re

from synthaug import benchmarks

_SWAPS = (("How many", "What number of"), ("How much", "What amount"), (" has ", " owns "),
          (" buys ", " purchases "), (" each ", " every "), ("Return", "Give back"))


def edit(text: str, rng: random.Random) -> str:
    """A light edit: every number shifted, a few words swapped, function names renamed."""
    text = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text)
    text = re.sub(r"def (\w+)", r"def \1_v2", text)
    for old, new in _SWAPS:
        text = text.replace(old, new)
    return text


def planted(gsm8k: int = 20, humaneval: int = 10, seed: int = 3) -> list[dict[str, str]]:
    """Records {text, kind (verbatim|edited), benchmark, item}: GSM8K questions, HumanEval
    prompts with their solutions."""
    rng = random.Random(seed)
    rows = []
    for pack, count in ((benchmarks.gsm8k(), gsm8k), (benchmarks.humaneval(), humaneval)):
        for item in rng.sample(pack, count):
            text = item.text.split("\n")[0] if item.benchmark == "gsm8k" else item.text
            rows.append({"text": text, "kind": "verbatim", "benchmark": item.benchmark,
                         "item": item.item})
            rows.append({"text": edit(text, rng), "kind": "edited",
                         "benchmark": item.benchmark, "item": item.item})
    return rows
