"""Streaming: bounded queues keep memory flat; steps overlap; the public API is stable."""

from __future__ import annotations

import ast
import importlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import synthaug
from synthaug import Generator, Map, Pipeline, Record, StepContext
from tests.conftest import read_jsonl, run


@dataclass
class Flow:
    """What one test's steps saw: records produced, and the most produced but not yet seen."""

    produced: int = 0
    max_gap: int = 0


class Count(Generator):
    def __init__(self, flow: Flow, n: int) -> None:
        super().__init__()
        self.flow, self.n = flow, n

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        for i in range(self.n):
            self.flow.produced += 1
            yield {"i": i, "_meta": {"id": f"r{i}"}}


class Gap(Map):
    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow, self.seen = flow, 0

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        self.seen += 1
        self.flow.max_gap = max(self.flow.max_gap, self.flow.produced - self.seen)
        yield record


def test_records_in_flight_stay_bounded(tmp_path: Path) -> None:
    flow = Flow()
    pipeline = Pipeline.from_steps(Count(flow, 20_000), Gap(flow), Gap(flow))
    state = run(pipeline, tmp_path / "out", queue_size=64)
    assert state.written == 20_000 and flow.produced == 20_000
    # 20,000 records flowed through, never more than two queues' worth were held
    assert 0 < flow.max_gap <= 2 * 64 + 4
    assert len(read_jsonl(tmp_path / "out" / "records.jsonl")) == 20_000


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the `if TYPE_CHECKING:` imports in synthaug/__init__.py."""
    tree = ast.parse(Path(synthaug.__file__).read_text(encoding="utf-8"))
    blocks = [node for node in tree.body if isinstance(node, ast.If)
              and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1
    found: dict[str, str] = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: write `X as X` (a re-export)"
            found[alias.name] = node.module
    return found


def test_public_api_has_one_source() -> None:
    lazy: dict[str, str] = synthaug._LAZY  # type: ignore[attr-defined]
    assert len(lazy) >= 40
    assert _type_checking_imports() == lazy
    assert sorted(synthaug.__all__) == sorted([*lazy, "run"])
    assert len(synthaug.__all__) == len(set(synthaug.__all__))
    for name, module in lazy.items():
        assert getattr(synthaug, name) is getattr(importlib.import_module(module), name), name
    assert {"Each", "Sampling", "Reply", "Uses"} <= set(synthaug.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchName"):
        synthaug.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
