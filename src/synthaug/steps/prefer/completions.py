"""completions: several answers to one prompt, from every model of a pool role, each kept with
the model that wrote it (the first stage of UltraFeedback-style preference data). The user
turn the models were asked is kept as `prompt` (chat turns; a drawn system message stays with
its completion), so judges and preference exports show exactly what was answered."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from synthaug import template
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.steps.prefer.common import settled


class CompletionsOptions(EachOptions):
    """Options of completions."""

    backend: str = "default"
    template: str = "{instruction}"
    output_field: str = "completions"
    prompt_output: str | None = "prompt"  # where the asked user turn(s) go; None: not kept
    samples: int = Field(1, ge=1)  # answers per model
    # models drawn per record (seeded) from a larger pool, e.g. UltraFeedback's 4 of 17;
    # None (or a pool no larger): every model answers
    models_per_prompt: int | None = Field(None, ge=1)
    # a system message drawn per completion (UltraFeedback's principles); [] = none
    system_messages: list[str] = []
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=512)


class Completions(Each[CompletionsOptions]):
    """For each record, `samples` answers from every model behind the role (each member of a
    pool, or the one model), as `[{model, text, system_message?}, ...]` in `output_field`.
    With `system_messages`, each answer is asked under one of them, drawn per answer; with
    `models_per_prompt`, that many models of the pool, drawn per record, answer it."""

    Options: ClassVar[type[StepOptions]] = CompletionsOptions

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def requires(self) -> Requirements:
        return template.requirements(self.options.template, *self.options.system_messages)

    def provides(self) -> set[str]:
        o = self.options
        return {o.output_field, *([o.prompt_output] if o.prompt_output else [])}

    async def _one(self, record: Record, ctx: StepContext, model: str,
                   index: int) -> tuple[Reply, str | None]:
        o = self.options
        system = ctx.rng(record, "system", model, index).choice(o.system_messages) \
            if o.system_messages else None
        reply = await ctx.generate(
            template.messages(record, o.template, system), o.sampling,
            seed=ctx.seed_for(record, model, index), role=o.backend, member=model)
        return reply, system

    def _models(self, record: Record, ctx: StepContext) -> list[str]:
        """The pool's members that answer this record, in pool order."""
        members, k = ctx.members(self.options.backend), self.options.models_per_prompt
        if k is None or k >= len(members):
            return members
        drawn = set(ctx.rng(record, "models").sample(range(len(members)), k))
        return [m for i, m in enumerate(members) if i in drawn]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        jobs = [(model, i) for model in self._models(record, ctx) for i in range(o.samples)]
        answers = await settled(*(self._one(record, ctx, m, i) for m, i in jobs))
        completions = []
        for reply, system in answers:
            item = {"model": reply.model, "text": reply.text.strip()}
            if system is not None:
                item["system_message"] = system
            completions.append(item)
        made = {**content(record), o.output_field: completions}
        if o.prompt_output:
            made[o.prompt_output] = template.messages(record, o.template)
        return [ctx.derive([record], made, 0, *(reply for reply, _ in answers))]
