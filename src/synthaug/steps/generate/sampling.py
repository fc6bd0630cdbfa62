"""CPU steps that shape what a model is asked: few-shot examples from a pool, combinations of
attributes (topic x audience x style; TinyStories words and features), system-message pools
(Orca). All random choices are seeded by the record id, so reruns are identical."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar

import yaml

from synthaug import template
from synthaug.io import data_file
from synthaug.records import Record, content, meta, source_record
from synthaug.steps.base import Generator, Map, StepOptions
from synthaug.steps.context import StepContext


def load_data(name: str) -> Any:
    """A JSONL (list), JSON or YAML file: a path, or a file shipped in synthaug/data."""
    path = Path(name) if Path(name).is_file() else data_file(name)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _rng(record: Record, salt: str) -> random.Random:
    return random.Random(f"{meta(record).get('id')}:{salt}")


class FewShotOptions(StepOptions):
    """Options of few-shot."""

    pool: str  # data file of example records
    k: int = 3
    format: str  # template for one example
    separator: str = "\n\n"
    output_field: str = "examples"


class FewShot(Map[FewShotOptions]):
    """Adds `examples`: k examples sampled from a pool, each rendered with `format`."""

    Options: ClassVar[type[StepOptions]] = FewShotOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.pool: list[dict[str, Any]] = load_data(self.options.pool)

    def provides(self) -> set[str]:
        return {self.options.output_field, f"{self.options.output_field}_ids"}

    def apply(self, record: Record) -> Iterable[Record]:
        o = self.options
        chosen = _rng(record, "few-shot").sample(range(len(self.pool)), min(o.k, len(self.pool)))
        shots = [template.render(o.format, self.pool[i]) for i in chosen]
        yield {**content(record), o.output_field: o.separator.join(shots),
               f"{o.output_field}_ids": chosen}


class CombinationsOptions(StepOptions):
    """Options of combinations: axes of values, optional subset axes, how many."""

    axes: dict[str, list[str]] | None = None
    axes_file: str | None = None  # YAML/JSON with {axis: [values]}
    subsets: dict[str, list[int]] = {}  # axis -> [min, max] values drawn together
    count: int = 20
    unique: bool = True


class Combinations(Generator[CombinationsOptions]):
    """Records of attribute combinations drawn uniformly (seeded), e.g. topic x audience."""

    Options: ClassVar[type[StepOptions]] = CombinationsOptions

    def provides(self) -> set[str]:
        return set(self._axes())

    def _axes(self) -> dict[str, list[str]]:
        o = self.options
        axes = dict(o.axes or {})
        if o.axes_file:
            axes.update(load_data(o.axes_file))
        return axes

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        o = self.options
        axes, rng = self._axes(), random.Random(ctx.seed_for(None, "combos"))
        seen: set[str] = set()
        for index in itertools.count():
            if len(seen) >= o.count or index > 50 * o.count:
                return
            combo: dict[str, Any] = {}
            for axis, values in axes.items():
                if axis in o.subsets:
                    low, high = o.subsets[axis]
                    combo[axis] = sorted(rng.sample(values, rng.randint(low, high)))
                else:
                    combo[axis] = rng.choice(values)
            key = json.dumps(combo, sort_keys=True)
            if o.unique and key in seen:
                continue
            seen.add(key)
            yield source_record(combo, source=ctx.label, index=len(seen) - 1, recipe=ctx.recipe)


class SystemPoolOptions(StepOptions):
    """Options of system-messages."""

    pool: str = "orca_system_messages.jsonl"
    mode: str = "sample"  # sample: one per record; all: one record per strategy


class SystemMessages(Map[SystemPoolOptions]):
    """Assigns system messages (with their strategy name) from a pool, as in Orca."""

    Options: ClassVar[type[StepOptions]] = SystemPoolOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.pool: list[dict[str, str]] = load_data(self.options.pool)

    def provides(self) -> set[str]:
        return {"strategy", "system_message"}

    def apply(self, record: Record) -> Iterable[Record]:
        chosen = self.pool if self.options.mode == "all" else [
            _rng(record, "system").choice(self.pool)]
        for entry in chosen:
            yield {**content(record), "strategy": entry["strategy"],
                   "system_message": entry["system"]}


class RepeatOptions(StepOptions):
    """Options of repeat."""

    count: int = 20


class Repeat(Generator[RepeatOptions]):
    """`count` records {slot: i}: one per generation, for methods that start from nothing."""

    Options: ClassVar[type[StepOptions]] = RepeatOptions

    def provides(self) -> set[str]:
        return {"slot"}

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        for index in range(self.options.count):
            yield source_record({"slot": index}, source=ctx.label, index=index,
                                recipe=ctx.recipe)
