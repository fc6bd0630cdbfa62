"""judge-pair: pairwise preference with position swap (RLAIF, Lee et al. 2023; the position-
bias check of Zheng et al. 2023's MT-Bench judges).

Each pair of completions is judged twice, once in each order. The two votes agree: that
response wins. They disagree (the judge followed the position, not the content): a tie, or
the record is dropped (`on_disagreement`). With more than two completions every pair is
judged and the completion with the most wins is `chosen`, the one with the fewest (drawn at
random among equals, seeded) that `chosen` beat in their own comparison (a decided result,
not a tie or a split) `rejected`; no single best, or no such loser, drops the record as `no clear
preference`. With `allow_ties: false` a 'tie' reply is a failure, never a vote.
"""

from __future__ import annotations

import itertools
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
    pair_verdict,
    prompt_text,
    reference_block,
    settled,
    with_judgements,
)

DEFAULT_CRITERIA = ("Which response follows the instruction better: more helpful, correct "
                    "and honest? Length alone is no reason to prefer a response.")
_SYSTEM = "You compare two responses to the same instruction and pick the better one."


class PairOptions(JudgeOptions):
    """Options of judge-pair."""

    criteria: str = DEFAULT_CRITERIA
    swap: bool = True  # judge both orders
    on_disagreement: str = Field("tie", pattern="^(tie|drop)$")
    allow_ties: bool = True  # the judge may answer 'tie'
    rationale: bool = True  # ask for reasons before the verdict


def _winner(first: str, second: str | None) -> str:
    """'a', 'b', 'tie' or 'split' from the vote in order (a, b) and the one in (b, a)."""
    one = {"A": "a", "B": "b"}.get(first, "tie")
    if second is None:
        return one
    two = {"A": "b", "B": "a"}.get(second, "tie")
    if one == two:
        return one
    return "tie" if "tie" in (one, two) else "split"


def _beaten(results: list[dict[str, Any]], best: int, wins: dict[int, float],
            bottom: float) -> list[int]:
    """The completions with the fewest wins that `best` beat in their direct comparison."""
    beat = set()
    for found in results:
        i, j = found["pair"]
        if (found["result"], best) in (("a", i), ("b", j)):
            beat.add(j if found["result"] == "a" else i)
    return [i for i, won in wins.items() if won == bottom and i in beat]


class JudgePair(Each[PairOptions]):
    """Judges every pair of a record's completions in both orders; writes `chosen`,
    `rejected`, their models, `preference` (votes and result) and `judgements`."""

    Options: ClassVar[type[StepOptions]] = PairOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return {self.options.prompt_field: str, self.options.completions_field: list}

    def provides(self) -> set[str]:
        return {"chosen", "rejected", "chosen_model", "rejected_model", "preference",
                "judgements"}

    def _prompt(self, record: Record, first: str, second: str) -> list[dict[str, str]]:
        o = self.options
        options = "'Verdict: A', 'Verdict: B'" + (" or 'Verdict: tie'" if o.allow_ties else "")
        ask = ("Explain your comparison in a few sentences, then end with one line: "
               if o.rationale else "Reply with one line only: ") + options + "."
        user = (f"Instruction:\n{prompt_text(record, o.prompt_field)}\n\n"
                f"{reference_block(record, o.reference_field)}"
                f"Response A:\n{first}\n\nResponse B:\n{second}\n\n{o.criteria}\n{ask}")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    async def _vote(self, record: Record, ctx: StepContext, items: list[dict[str, Any]],
                    shown: tuple[int, int]) -> tuple[str, Reply, dict[str, Any]]:
        o = self.options
        first, second = (items[i] for i in shown)
        reply = await ctx.generate(self._prompt(record, first["text"], second["text"]),
                                   o.sampling, role=o.backend,
                                   seed=ctx.seed_for(record, "pair", *shown))
        verdict = pair_verdict(reply.text)
        if verdict == "tie" and not o.allow_ties:
            raise ParseError(f"the judge answered 'tie', which allow_ties: false forbids: "
                             f"{reply.text[:80]!r}", raw=[reply.text])
        position = {"A": 0, "B": 1}.get(verdict)
        entry = judgement("pair", reply.model, shown=list(shown), winner=position,
                          lengths=[len(first["text"]), len(second["text"])],
                          models=[first.get("model"), second.get("model")])
        return verdict, reply, entry

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        items = completions_of(record, o.completions_field, max(2, o.min_completions))
        pairs = list(itertools.combinations(range(len(items)), 2))
        orders = [(i, j) for i, j in pairs] + ([(j, i) for i, j in pairs] if o.swap else [])
        votes = await settled(*(self._vote(record, ctx, items, s) for s in orders))
        by_order = {shown: verdict for shown, (verdict, _, _) in zip(orders, votes, strict=True)}
        entries = [entry for _, _, entry in votes]
        wins = {i: 0.0 for i in range(len(items))}
        results = []
        for i, j in pairs:
            result = _winner(by_order[i, j], by_order.get((j, i)))
            if result == "split" and o.on_disagreement == "tie":
                result = "tie"
            results.append({"pair": [i, j], "result": result})
            for k, share in {"a": {i: 1.0}, "b": {j: 1.0}, "tie": {i: 0.5, j: 0.5}}.get(
                    result, {}).items():
                wins[k] += share
        made: dict[str, Any] = {**content(record), "judgements": with_judgements(record, entries),
                                "preference": {"pairs": results, "wins": dict(wins)}}
        derived = ctx.derive([record], made, 0, *(reply for _, reply, _ in votes))
        split = [r for r in results if r["result"] == "split"]
        counts = list(wins.values())
        top, bottom = max(counts), min(counts)
        if split:
            ctx.drop(derived, "judge disagreed across orders", f"pairs {split[0]['pair']}")
        elif top == bottom or counts.count(top) > 1:
            ctx.drop(derived, "no clear preference", f"wins {wins}")
        elif not (last := _beaten(results, counts.index(top), wins, bottom)):
            ctx.drop(derived, "no clear preference",
                     f"the most winning completion ({counts.index(top)}) has no decided win "
                     f"over a least winning one; wins {wins}")
        else:
            chosen = items[counts.index(top)]
            rejected = items[ctx.rng(record, "rejected").choice(last)]
            derived.update(chosen=chosen["text"], rejected=rejected["text"],
                           chosen_model=chosen.get("model"),
                           rejected_model=rejected.get("model"))
            return [derived]
        return []
