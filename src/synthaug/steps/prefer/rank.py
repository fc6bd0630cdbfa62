"""judge-rank: K-wise ranking of a record's completions (Starling's 7-wise rankings, Zhu et
al. 2023), with consistency checks.

The completions are shown in a seeded shuffled order under labels [1]..[K]; the judge answers
with a full ranking on its last 'Ranking:' line. A reply that is not a permutation of the
labels is a failure. With `repeats` > 1 the judge ranks again, each repeat under an order
shown in no earlier repeat (while there are orders left); rankings that agree less than
`min_agreement` (Kendall's tau) drop the record as an inconsistent ranking. The final rank of
each completion is its mean position over the repeats, equal means drawn in a seeded order.
"""

from __future__ import annotations

import itertools
import random
import re
from statistics import fmean
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import Each, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Uses
from synthaug.steps.prefer.common import (
    JudgeOptions,
    completions_of,
    judgement,
    prompt_text,
    reference_block,
    settled,
    with_judgements,
)

_SYSTEM = "You rank responses to the same instruction from best to worst."
_RANKING = re.compile(r"^[^\w\n]*ranking\s*:", re.IGNORECASE | re.MULTILINE)


class RankOptions(JudgeOptions):
    """Options of judge-rank."""

    criteria: str = ("Rank by how well each response follows the instruction: helpful, "
                     "correct, honest and harmless. Length alone is no merit.")
    repeats: int = Field(2, ge=1)  # rankings under different shuffles
    min_agreement: float = Field(0.5, ge=-1.0, le=1.0)  # Kendall's tau between repeats


def parse_ranking(text: str, count: int) -> list[int]:
    """Labels best to worst (1-based) from 'Ranking: [2] > [1] > [3]'; ParseError unless a
    permutation of 1..count."""
    found = list(_RANKING.finditer(text))
    rest = text[found[-1].end():] if found else text
    tail = next((line for line in rest.splitlines() if re.search(r"\d", line)), "") \
        if found else text
    labels = [int(x) for x in re.findall(r"\[(\d+)\]", tail)] or \
        [int(x) for x in re.findall(r"\b(\d+)\b", tail.split("\n\n")[0])]
    if sorted(labels) != list(range(1, count + 1)):
        raise ParseError(f"the ranking is not a permutation of 1..{count}: {tail[:80]!r}",
                         raw=[text])
    return labels


def shown_orders(count: int, draws: list[random.Random]) -> list[list[int]]:
    """One shuffled order of `count` items per draw, each unlike the earlier ones while
    unseen orders remain: a repeat that drew a seen order turns it (rotations, then the
    reverse), else takes the first unseen permutation."""
    orders: list[list[int]] = []
    for rng in draws:
        order = list(range(count))
        rng.shuffle(order)
        if order in orders:
            turned = [order[k:] + order[:k] for k in range(1, count)] + [order[::-1]]
            fresh = (list(p) for p in itertools.permutations(range(count)))
            order = next((o for o in itertools.chain(turned, fresh) if o not in orders), order)
        orders.append(order)
    return orders


def kendall_tau(one: list[int], two: list[int]) -> float:
    """Kendall's tau between two orderings of the same items (1 = identical)."""
    where_one = {item: i for i, item in enumerate(one)}
    where_two = {item: i for i, item in enumerate(two)}
    items = list(where_one)
    pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]
    if not pairs:
        return 1.0
    agree = sum(1 if (where_one[a] - where_one[b]) * (where_two[a] - where_two[b]) > 0 else -1
                for a, b in pairs)
    return agree / len(pairs)


class JudgeRank(Each[RankOptions]):
    """Ranks a record's completions (best first) `repeats` times under different shuffles;
    writes each completion's `rank`, the record's `ranking` and `judgements`."""

    Options: ClassVar[type[StepOptions]] = RankOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return {self.options.prompt_field: str, self.options.completions_field: list}

    def provides(self) -> set[str]:
        return {self.options.completions_field, "ranking", "judgements"}

    async def _rank(self, record: Record, ctx: StepContext, items: list[dict[str, Any]],
                    repeat: int, order: list[int]) -> tuple[list[int], Reply, dict[str, Any]]:
        o = self.options
        shown = "".join(f"[{pos}]\n{items[i]['text']}\n\n" for pos, i in enumerate(order, 1))
        labels = " > ".join(f"[{i}]" for i in range(1, len(items) + 1))
        user = (f"Instruction:\n{prompt_text(record, o.prompt_field)}\n\n"
                f"{reference_block(record, o.reference_field)}"
                f"Responses:\n\n{shown}{o.criteria}\nConsider each response briefly, then "
                f"end with one line 'Ranking: ' followed by all {len(items)} labels from best "
                f"to worst, in the form {labels}.")
        reply = await ctx.generate([{"role": "system", "content": _SYSTEM},
                                    {"role": "user", "content": user}], o.sampling,
                                   role=o.backend, seed=ctx.seed_for(record, "rank", repeat))
        positions = parse_ranking(reply.text, len(items))
        best_first = [order[p - 1] for p in positions]
        entry = judgement("rank", reply.model, shown=order, ranking=[p - 1 for p in positions],
                          lengths=[len(items[i]["text"]) for i in order],
                          models=[items[i].get("model") for i in order])
        return best_first, reply, entry

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        items = completions_of(record, o.completions_field, max(2, o.min_completions))
        orders = shown_orders(len(items), [ctx.rng(record, "shuffle", r)
                                           for r in range(o.repeats)])
        done = await settled(*(self._rank(record, ctx, items, r, order)
                               for r, order in enumerate(orders)))
        rankings = [best_first for best_first, _, _ in done]
        taus = [kendall_tau(rankings[0], other) for other in rankings[1:]]
        mean_position = {i: fmean(r.index(i) for r in rankings) for i in range(len(items))}
        draw = ctx.rng(record, "ties")
        breaks = {i: draw.random() for i in range(len(items))}
        final = sorted(mean_position, key=lambda i: (mean_position[i], breaks[i]))
        for i, item in enumerate(items):
            item["rank"] = final.index(i) + 1
        made = {**content(record), o.completions_field: items, "ranking": final,
                "ranking_agreement": round(min(taus), 4) if taus else None,
                "judgements": with_judgements(record, [e for _, _, e in done])}
        derived = ctx.derive([record], made, 0, *(reply for _, reply, _ in done))
        if taus and min(taus) < o.min_agreement:
            ctx.drop(derived, "inconsistent ranking", f"Kendall tau {min(taus):.2f} between "
                     f"repeats, under {o.min_agreement}")
            return []
        return [derived]
