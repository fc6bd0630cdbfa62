"""expand-list: ask for a list, emit one record per item (optionally a seeded random pick).

The shared mechanism behind topic trees (UltraChat, GLAN), GenQA's generator prompts (a long
list, one item picked at random), persona-to-persona expansion and rephrasing expansion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

from synthaug import template
from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling

_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)]|\(\d{1,3}\))\s+(.+?)\s*$")


def parse_list(text: str) -> list[str]:
    """Items of a numbered or bulleted list (plain lines when there are no markers)."""
    lines = [line for line in text.splitlines() if line.strip()]
    marked = [m.group(1) for line in lines if (m := _ITEM.match(line))]
    items = marked if marked else [line.strip() for line in lines]
    cleaned = [item.strip().strip('"').strip() for item in items]
    return list(dict.fromkeys(i for i in cleaned if i))


class ExpandOptions(LLMOptions):
    """Options of expand-list."""

    template: str
    system: str | None = None
    output_field: str = "item"
    min_items: int = 1
    max_items: int | None = None
    pick: int | None = None  # keep this many items, chosen at random (seeded per record)
    keep_parent: bool = False  # also emit the input record itself (expansion keeps the source)
    sampling: Sampling = Sampling(max_tokens=512)


class ExpandList(LLMStep[ExpandOptions]):
    """One record per list item the model writes; the parent's fields are kept."""

    Options: ClassVar[type[StepOptions]] = ExpandOptions

    def requires(self) -> Requirements:
        return template.requirements(self.options.template, self.options.system)

    def provides(self) -> set[str]:
        return {self.options.output_field, f"{self.options.output_field}_index"}

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        return template.messages(record, self.options.template, self.options.system)

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        items = [i for text in reply.texts for i in parse_list(text)]
        items = list(dict.fromkeys(items))[: o.max_items]
        if len(items) < o.min_items:
            raise ParseError(f"{len(items)} list items, fewer than {o.min_items}")
        indexed: list[tuple[int, Any]] = list(enumerate(items))
        if o.pick is not None:
            rng = ctx.rng(record, "pick", o.output_field)
            indexed = sorted(rng.sample(indexed, min(o.pick, len(indexed))))
        if o.keep_parent and o.output_field in record:
            yield {**content(record), f"{o.output_field}_index": -1}
        for index, item in indexed:
            yield {**content(record), o.output_field: item, f"{o.output_field}_index": index}
