"""Symbol tuning (Wei et al. 2023): in-context prompts whose labels are arbitrary symbols.

For each query record of a labelled classification task, the task's natural-language labels
are remapped to random symbols (integers, letter strings or unrelated words), distinct and
never equal to a label; the in-context exemplars (other records of the same task) show the
remapped labels, with no instruction; the target is the query's symbol. The mapping is drawn
per prompt (`scope: prompt`, a new few-shot group each time) or once per task
(`scope: task`), and kept in the record as `symbol_map`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import RecordError, StepError
from synthaug.records import Record, content
from synthaug.steps.base import Global, Requirements, StepOptions
from synthaug.steps.context import StepContext

# semantically unrelated words for the "words" kind of symbol
WORDS = tuple((
    "apple", "anchor", "banjo", "basket", "bicycle", "biscuit", "blanket", "bottle", "bucket",
    "butter", "cabbage", "camel", "candle", "canyon", "carpet", "castle", "cello", "cherry",
    "chimney", "cobalt", "compass", "cookie", "copper", "cotton", "crayon", "dolphin",
    "donkey", "dragon", "drum", "eagle", "elbow", "engine", "falcon", "feather", "fiddle",
    "forest", "fossil", "garlic", "giraffe", "glacier", "goblet", "granite", "guitar",
    "hammer", "harbor", "helmet", "hornet", "igloo", "island", "jacket", "jaguar", "kettle",
    "kiwi", "ladder", "lantern", "lemon", "lizard", "magnet", "mango", "marble", "meadow",
    "mitten", "muffin", "nickel", "noodle", "oyster", "paddle", "panda", "pebble", "pepper",
    "pillow", "pirate", "plum", "pocket", "puzzle", "quartz", "quill", "rabbit", "radish",
    "raven", "ribbon", "rocket", "saddle", "salmon", "sandal", "saucer", "shovel", "spider",
    "sponge", "squash", "tablet", "teapot", "thimble", "tiger", "tomato", "tractor", "trumpet",
    "tulip", "turnip", "umbrella", "velvet", "violin", "walnut", "wagon", "whistle", "willow",
    "zebra", "foo", "bar", "baz", "qux",
))

Kind = Literal["integer", "letters", "word"]
ALL_KINDS: list[Kind] = ["integer", "letters", "word"]


def draw_symbol(kind: Kind, rng: random.Random) -> str:
    """One arbitrary symbol of the given kind."""
    if kind == "integer":
        return str(rng.randint(0, 9999))
    if kind == "letters":
        return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(1, 4)))
    return rng.choice(WORDS)


def symbol_map(labels: list[str], kinds: list[Kind], rng: random.Random) -> dict[str, str]:
    """Distinct random symbols for `labels`, none equal to any label (case-insensitive)."""
    taken = {label.strip().lower() for label in labels}
    mapping: dict[str, str] = {}
    for label in labels:
        for _attempt in range(10_000):
            symbol = draw_symbol(rng.choice(kinds), rng)
            if symbol.lower() not in taken:
                break
        else:
            raise StepError(f"symbol-tuning: too few symbols of kinds {kinds} for "
                            f"{len(labels)} labels; add kinds")
        taken.add(symbol.lower())
        mapping[label] = symbol
    return mapping


class SymbolTuningOptions(StepOptions):
    """Options of symbol-tuning."""

    text_field: str = "text"
    label_field: str = "label"
    task_field: str | None = "task"  # records of one task share a label set; None: one task
    shots_per_class: int = Field(2, ge=1)  # in-context exemplars per label
    kinds: list[Kind] = Field(default_factory=lambda: list(ALL_KINDS), min_length=1)
    scope: Literal["prompt", "task"] = "prompt"  # a new mapping per prompt, or one per task
    input_prefix: str = "Input: "
    output_prefix: str = "Output: "


class SymbolTuning(Global[SymbolTuningOptions]):
    """Builds one symbol-tuning prompt per record, with exemplars from the same task."""

    Options: ClassVar[type[StepOptions]] = SymbolTuningOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.tasks: dict[str, list[Record]] = {}

    def requires(self) -> Requirements:
        o = self.options
        fields: dict[str, type | tuple[type, ...]] = {o.text_field: str,
                                                      o.label_field: (str, int, bool)}
        return {**fields, o.task_field: str} if o.task_field else fields

    def provides(self) -> set[str]:
        return {"prompt", "completion", "symbol_map"}

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        if str(record[o.label_field]).strip() == "":
            raise RecordError(o.label_field, "empty label")
        task = str(record[o.task_field]) if o.task_field else ""
        self.tasks.setdefault(task, []).append(record)
        return ()

    def finish(self, ctx: StepContext) -> Iterable[Record]:
        for task, records in self.tasks.items():
            labels = sorted({str(r[self.options.label_field]) for r in records})
            if len(labels) < 2:
                for record in records:
                    ctx.drop(record, "task has fewer than two labels")
                continue
            fixed = symbol_map(labels, self.options.kinds, ctx.rng(None, "symbols", task))
            for i, query in enumerate(records):
                yield ctx.derive([query], self.prompt(query, records, labels, fixed, ctx), i)

    def exemplars(self, query: Record, records: list[Record], labels: list[str],
                  rng: random.Random) -> list[Record]:
        """Up to shots_per_class other records of each label, in random order."""
        o, chosen = self.options, []
        for label in labels:
            pool = [r for r in records if r is not query and str(r[o.label_field]) == label]
            chosen += rng.sample(pool, min(o.shots_per_class, len(pool)))
        rng.shuffle(chosen)
        return chosen

    def prompt(self, query: Record, records: list[Record], labels: list[str],
               fixed: dict[str, str], ctx: StepContext) -> Record:
        """The symbol-tuning record for one query."""
        o = self.options
        rng = ctx.rng(query, "symbol-tuning")
        mapping = fixed if o.scope == "task" else symbol_map(labels, o.kinds, rng)
        shots = self.exemplars(query, records, labels, rng)
        blocks = [f"{o.input_prefix}{r[o.text_field]}\n{o.output_prefix}"
                  f"{mapping[str(r[o.label_field])]}" for r in shots]
        blocks.append(f"{o.input_prefix}{query[o.text_field]}\n{o.output_prefix}".rstrip())
        return {**content(query), "prompt": "\n\n".join(blocks),
                "completion": mapping[str(query[o.label_field])], "symbol_map": mapping}
