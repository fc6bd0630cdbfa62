"""Shared fixtures: a real OpenAI-compatible server on loopback, pipelines that use it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synthaug.executors.local import LocalExecutor, RunConfig, RunState
from synthaug.pipeline import BackendSpec, Pipeline, resolve_recipe
from synthaug.testing import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def text_generation(url: str, *, concurrency: int = 4, template: str = "{instruction}",
                    **backend: Any) -> Pipeline:
    """The built-in text-generation recipe pointed at `url`."""
    recipe, source = resolve_recipe("text-generation")
    recipe.backends["default"] = BackendSpec(use="openai", **{"with": {
        "base_url": url, "model": "fake", "concurrency": concurrency, **backend}})
    recipe.steps[0].with_["template"] = template
    return Pipeline.from_recipe(recipe, source)


def run(pipeline: Pipeline, out: Path, data: Path | None = None, **kw: Any) -> RunState:
    return LocalExecutor(RunConfig(out_dir=out, input_path=data, **kw)).run(pipeline)
