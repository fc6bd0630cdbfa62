"""text-generation: fill a prompt template from each record, keep the model's reply."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from synthaug import template
from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Prompt, StepOptions


class TextGenerationOptions(LLMOptions):
    """Options of text-generation."""

    template: str = "{instruction}"
    system: str | None = None
    output_field: str = "generation"
    raw: bool = False  # send the filled template as a raw completion prompt


class TextGeneration(LLMStep[TextGenerationOptions]):
    """One generation per record (or `n`), from a `{field}` template; output in `output_field`."""

    Options: ClassVar[type[StepOptions]] = TextGenerationOptions

    def requires(self) -> set[str]:
        fields = set(template.fields(self.options.template))
        return fields | set(template.fields(self.options.system or ""))

    def provides(self) -> set[str]:
        return {self.options.output_field}

    def prompt(self, record: Record) -> Prompt:
        text = template.render(self.options.template, record)
        if self.options.raw:
            return text
        messages = [{"role": "user", "content": text}]
        if self.options.system:
            system = template.render(self.options.system, record)
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def parse(self, record: Record, replies: list[str]) -> Iterable[Record]:
        for reply in replies:
            yield {**content(record), self.options.output_field: reply}
