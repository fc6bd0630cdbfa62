"""Taxonomy-driven synthesis (LAB, Sudalairaj et al., 2024): a user taxonomy tree in YAML whose
leaves (knowledge or skill) carry a few seed examples. Leaves are sampled uniformly, so the
tail is covered as often as the head; per-leaf counts go to the manifest.

    name: root
    children:
      - name: writing
        children:
          - {name: haiku, type: skill, seeds: [{question: ..., answer: ...}]}
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from synthaug.errors import ConfigError
from synthaug.records import Record
from synthaug.steps.base import Generator, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sampling import load_data, render_all


def leaves(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every leaf of the tree with its path."""
    here = (*path, str(node.get("name", "?")))
    children = node.get("children") or []
    if not children:
        if not node.get("seeds"):
            raise ConfigError(f"taxonomy leaf {'/'.join(here)} has no seeds", field="taxonomy")
        return [{**node, "path": "/".join(here[1:] or here)}]
    return [leaf for child in children for leaf in leaves(child, here)]


class TaxonomyOptions(StepOptions):
    """Options of taxonomy-sample."""

    taxonomy: str = "taxonomy_example.yaml"
    count: int = 30
    seed_format: str = "Question: {question}\nAnswer: {answer}"


class TaxonomySample(Generator[TaxonomyOptions]):
    """Records {leaf, path, leaf_type, seed_examples}, leaves drawn evenly (shuffled rounds)."""

    Options: ClassVar[type[StepOptions]] = TaxonomyOptions

    def provides(self) -> set[str]:
        return {"leaf", "path", "leaf_type", "seed_examples"}

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        o = self.options
        tree = load_data(o.taxonomy)
        all_leaves = leaves(tree)
        rng = ctx.rng(None, "taxonomy")
        order: list[dict[str, Any]] = []
        while len(order) < o.count:
            batch = list(all_leaves)
            rng.shuffle(batch)
            order += batch
        for index, leaf in enumerate(order[: o.count]):
            ctx.stats.notes[f"leaf:{leaf['path']}"] += 1
            seeds = "\n\n".join(render_all(o.seed_format, leaf["seeds"], o.taxonomy))
            yield ctx.derive([], {"leaf": leaf["name"], "path": leaf["path"],
                                  "leaf_type": leaf.get("type", "knowledge"),
                                  "seed_examples": seeds}, index)
