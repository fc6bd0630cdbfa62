"""preference-pairs: chosen/rejected pairs from rated or ranked completions (no model call).

`best-vs-random` is the binarization of the released UltraFeedback data: the completion with
the highest rating is chosen, one of the strictly lower-rated others, drawn at random
(seeded), is rejected. `best-vs-worst` takes the lowest instead; `all-pairs` makes one pair
per two completions whose scores differ by more than `min_margin`. A pair whose two texts
are the same (up to whitespace) teaches nothing and is dropped as `identical texts`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import Field

from synthaug.records import Record, content
from synthaug.steps.base import Map, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.prefer.common import completions_of


def _norm(text: str) -> str:
    """The text with its whitespace runs collapsed (what 'identical' compares)."""
    return " ".join(text.split())


class PairsOptions(StepOptions):
    """Options of preference-pairs."""

    completions_field: str = "completions"
    by: str = Field("rating", pattern="^(rating|rank)$")  # higher rating / lower rank wins
    strategy: str = Field("best-vs-random", pattern="^(best-vs-random|best-vs-worst|all-pairs)$")
    min_margin: float = Field(0.0, ge=0.0)  # chosen's score must exceed rejected's by more


class PreferencePairs(Map[PairsOptions]):
    """Turns a record's scored completions into `chosen`/`rejected` records with their
    models and scores; a record without two scores far enough apart is dropped."""

    Options: ClassVar[type[StepOptions]] = PairsOptions

    def requires(self) -> Requirements:
        return {self.options.completions_field: list}

    def provides(self) -> set[str]:
        return {"chosen", "rejected", "chosen_model", "rejected_model", "chosen_score",
                "rejected_score"}

    def _score(self, item: dict[str, Any]) -> float | None:
        value = item.get(self.options.by)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return float(value) if self.options.by == "rating" else -float(value)

    def _pairs(self, record: Record, scored: list[tuple[float, int]],
               ctx: StepContext) -> list[tuple[int, int]]:
        o = self.options
        ranked = sorted(scored, key=lambda s: (-s[0], s[1]))
        if o.strategy == "all-pairs":
            return [(a[1], b[1]) for a, b in itertools.combinations(ranked, 2)
                    if a[0] - b[0] > o.min_margin]
        best = ranked[0]
        lower = [s for s in ranked[1:] if best[0] - s[0] > o.min_margin]
        if not lower:
            return []
        if o.strategy == "best-vs-worst":
            return [(best[1], lower[-1][1])]
        return [(best[1], ctx.rng(record, "rejected").choice(lower)[1])]

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        items = completions_of(record, o.completions_field, 2)
        scored = [(s, i) for i, item in enumerate(items) if (s := self._score(item)) is not None]
        if len(scored) < 2:
            ctx.drop(record, "fewer than two scored completions", f"by {o.by}")
            return []
        pairs = self._pairs(record, scored, ctx)
        if not pairs:
            ctx.drop(record, "no preference", f"scores {sorted(s for s, _ in scored)}")
            return []
        same = [(c, r) for c, r in pairs if _norm(items[c]["text"]) == _norm(items[r]["text"])]
        for c, r in same:
            ctx.drop({**content(record), "chosen": items[c]["text"],
                      "rejected": items[r]["text"]}, "identical texts",
                     f"completions {c} and {r}")
        pairs = [pair for pair in pairs if pair not in same]
        score = {i: s for s, i in scored}
        sign = 1.0 if o.by == "rating" else -1.0
        return [{**content(record), "chosen": items[c]["text"], "rejected": items[r]["text"],
                 "chosen_model": items[c].get("model"), "rejected_model": items[r].get("model"),
                 "chosen_score": sign * score[c], "rejected_score": sign * score[r]}
                for c, r in pairs]
