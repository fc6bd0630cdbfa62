"""Streaming: bounded queues keep memory flat; steps overlap; the public API is stable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import synthaug
from synthaug import Generator, Map, Pipeline, Record, StepContext
from tests.conftest import read_jsonl, run

PRODUCED = {"n": 0, "max_gap": 0}


class Count(Generator):
    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        for i in range(20_000):
            PRODUCED["n"] += 1
            yield {"i": i, "_meta": {"id": f"r{i}"}}


class Gap(Map):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def apply(self, record: Record) -> Iterable[Record]:
        self.seen += 1
        PRODUCED["max_gap"] = max(PRODUCED["max_gap"], PRODUCED["n"] - self.seen)
        yield record


def test_records_in_flight_stay_bounded(tmp_path: Path) -> None:
    pipeline = Pipeline.from_steps(Count(), Gap(), Gap())
    state = run(pipeline, tmp_path / "out", queue_size=64)
    assert state.written == 20_000
    # 20,000 records flowed through, never more than two queues' worth were held
    assert PRODUCED["max_gap"] <= 2 * 64 + 4
    assert len(read_jsonl(tmp_path / "out" / "records.jsonl")) == 20_000


def test_public_api_names_resolve() -> None:
    for name in synthaug.__all__:
        assert getattr(synthaug, name) is not None, name
