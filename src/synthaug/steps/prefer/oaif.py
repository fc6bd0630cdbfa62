"""oaif: online AI feedback (Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback", arXiv:2402.04792).

Each round takes a batch of prompts, samples two responses to each from the model the
`backend` role (the policy being trained) answers with now, and an annotator model (its own
role) says which one is better, as in RLAIF (both orders, averaged; `labels`, `rationale`,
`criteria` as in rlaif-label). The round's pairs are the records of the round; the
`between_rounds` command trains on them (DPO, IPO...) and switches the policy role to the
trained model, so the next round's pairs are sampled on-policy from it. The manifest lists each
round's policy and annotator models, prompts, pairs and drops. The user turn the policy was
asked (`template`) is kept as `prompt`; it is also what the annotator is shown.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field

from synthaug import template
from synthaug.errors import RecordError
from synthaug.records import Record, content
from synthaug.steps.base import Requirements, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Sampling, Uses
from synthaug.steps.prefer.common import prompt_text, with_judgements
from synthaug.steps.prefer.rlaif import (
    Labeling,
    entries_of,
    keep_or_drop,
    label_pair,
    load_examples,
)
from synthaug.template import text_field


class OAIFOptions(RoundsOptions, Labeling):
    """Options of oaif."""

    backend: str = "policy"  # the model being aligned; the between-rounds hook switches it
    annotator: str = "annotator"
    prompt_field: str = "instruction"  # required; the annotator is shown the asked turn
    template: str = "{instruction}"  # what the policy is asked
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=512)
    batch: int | None = Field(None, ge=1)  # prompts per round, in turn (None: all of them)


class OAIF(Rounds[OAIFOptions]):
    """Rounds of on-policy pairs: two samples of the current policy per prompt, labelled by
    the annotator; each record holds the pair, its round and the policy model that wrote it."""

    Options: ClassVar[type[StepOptions]] = OAIFOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.shots = load_examples(self.options.examples)
        self.prompts: list[Record] = []

    def uses(self) -> list[Uses]:
        o = self.options
        return [Uses(o.backend), Uses(o.annotator, logprobs=o.labels == "soft")]

    def requires(self) -> Requirements:
        return {**template.requirements(self.options.template), self.options.prompt_field: str}

    def provides(self) -> set[str]:
        return {"chosen", "rejected", "chosen_model", "rejected_model", "preference",
                "preference_strength", "judgements", "completions", "round", "prompt"}

    def planned_rounds(self) -> int:
        """The rounds asked for when a command trains the policy between them; else one (the
        same model would answer the next batch off-policy of nothing new)."""
        return self.options.rounds if self.options.between_rounds else 1

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        if self.planned_rounds() < self.options.rounds:
            ctx.stats.notes["one round: no between_rounds command trains the policy"] = 1
        self.prompts = []
        for record in pool:
            try:
                text_field(record, self.options.prompt_field)
                template.render(self.options.template, record)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            self.prompts.append(record)

    def batch_of(self, index: int) -> list[Record]:
        """Round `index`'s prompts: the next `batch` of the pool, wrapping around (all
        prompts with one round or no `batch`)."""
        size = self.options.batch
        if size is None or self.planned_rounds() == 1 or not self.prompts:
            return list(self.prompts)
        start = index * size
        return [self.prompts[(start + k) % len(self.prompts)]
                for k in range(min(size, len(self.prompts)))]

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        batch = self.batch_of(index)
        dropped = sum(ctx.stats.dropped.values())
        found = await asyncio.gather(*(ctx.attempt(self.pair(record, index, ctx), record)
                                       for record in batch))
        kept = [made for records in found for made in records or ()]
        ctx.note_round(index, prompts=len(batch), pairs=len(kept),
                       dropped=sum(ctx.stats.dropped.values()) - dropped,
                       annotator=ctx.model(self.options.annotator))
        return kept, not self.prompts

    async def pair(self, record: Record, index: int, ctx: StepContext) -> list[Record]:
        """Two samples of the current policy for one prompt, labelled by the annotator."""
        o = self.options
        asked = template.messages(record, o.template)
        sampled = await ctx.generate(asked, o.sampling, n=2, role=o.backend,
                                     seed=ctx.seed_for(record, "policy", index))
        items = [{"model": sampled.model, "text": text.strip()} for text in sampled.texts]
        made: dict[str, Any] = {**content(record), "round": index, "completions": items,
                                "prompt": asked}
        if items[0]["text"] == items[1]["text"]:
            ctx.drop(ctx.derive([record], made, index, sampled), "identical responses")
            return []
        label = await label_pair(ctx, o, o.annotator, record, self.shots,
                                 prompt_text(made, o.prompt_field),
                                 (items[0]["text"], items[1]["text"]), index)
        made["judgements"] = with_judgements(record, entries_of(label, items,
                                                                label.replies[0].model))
        return keep_or_drop(ctx, record, made, label, items, o, index, (sampled,))
