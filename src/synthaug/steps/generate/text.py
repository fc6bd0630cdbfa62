"""text-generation: fill a prompt template from each record, keep the model's reply."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from synthaug import template
from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Uses


class TextGenerationOptions(LLMOptions):
    """Options of text-generation."""

    template: str = "{instruction}"
    system: str | None = None
    output_field: str = "generation"
    raw: bool = False  # send the filled template as a raw completion prompt


class TextGeneration(LLMStep[TextGenerationOptions]):
    """One generation per record (or `n`), from a `{field}` template; output in `output_field`."""

    Options: ClassVar[type[StepOptions]] = TextGenerationOptions

    def requires(self) -> Requirements:
        return template.requirements(self.options.template, self.options.system)

    def provides(self) -> set[str]:
        return {self.options.output_field}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, raw_completion=self.options.raw)]

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        if self.options.raw:
            return template.render(self.options.template, record)
        return template.messages(record, self.options.template, self.options.system)

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        for text in reply.texts:
            yield {**content(record), self.options.output_field: text}
