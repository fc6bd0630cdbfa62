"""Recall of decontamination on planted GSM8K and HumanEval items, verbatim and lightly edited.

30 items (20 GSM8K questions, 10 HumanEval prompts with solutions) planted twice in a dataset
of 64 clean instruction/instance texts: verbatim and edited (numbers shifted, words swapped,
functions renamed). Prints recall per kind and method, and false positives on clean texts,
for n-gram only and n-gram + embedding candidates (the static embedder, no judge).
Usage: python bench/decontamination.py
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from synthaug.steps.context import StepContext, StepStats
from synthaug.steps.curate.decontaminate import Decontaminate
from synthaug.steps.curate.plant import planted
from synthaug.steps.generate.self_instruct import load_seed_tasks


class Discard:
    def write(self, kind: str, row: dict[str, Any]) -> None:
        return None


def evaluate(step: Decontaminate, rows: list[dict[str, Any]]) -> Counter[str]:
    ctx = StepContext(label="d", recipe="bench", seed=0, stats=StepStats("d"), side=Discard())

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i, row in enumerate(rows):
            yield {**row, "_meta": {"id": str(i)}}

    async def go() -> list[dict[str, Any]]:
        return [r async for r in step.run(source(), ctx)]

    counts: Counter[str] = Counter()
    for record in asyncio.run(go()):
        hit = record["_meta"].get("contamination") or record["_meta"].get(
            "contamination_candidate")
        counts[f"{record['kind']}:{hit['method'] if hit else 'none'}"] += 1
    return counts


def main() -> None:
    clean = [{"text": f"{t['instruction']}\n{i['input']}\n{i['output']}", "kind": "clean"}
             for t in load_seed_tasks() for i in t["instances"]]
    rows = clean + planted()
    totals = Counter(r["kind"] for r in rows)
    print(f"{totals['clean']} clean texts, {totals['verbatim']} verbatim and "
          f"{totals['edited']} edited plants (GSM8K 20, HumanEval 10)")
    setups = [("13-gram only", Decontaminate(embedder=None, action="flag")),
              ("13-gram + static embedding", Decontaminate(action="flag"))]
    if importlib.util.find_spec("sentence_transformers"):
        setups.append(("13-gram + MiniLM embedding",
                       Decontaminate(embedder="minilm", action="flag")))
    for label, step in setups:
        counts = evaluate(step, rows)
        for kind in ("verbatim", "edited", "clean"):
            found = {k.split(":")[1]: v for k, v in counts.items()
                     if k.startswith(kind) and not k.endswith("none")}
            hits = sum(v for m, v in found.items() if m != "candidate")
            print(f"{label:<28} {kind:<9} flagged {hits}/{totals[kind]} "
                  f"({hits / totals[kind]:.0%}) by method {found}")


if __name__ == "__main__":
    main()
