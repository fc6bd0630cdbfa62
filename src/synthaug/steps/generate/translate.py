"""Self-Translate (Ri et al., 2024): translate instruction data with the same model, keeping
each translation paired with its source record (`source` holds the original fields)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from synthaug.backends.base import Request
from synthaug.errors import ParseError
from synthaug.records import Record, content, meta
from synthaug.steps.base import LLMOptions, LLMStep, Prompt, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sections import parse_sections


class TranslateOptions(LLMOptions):
    """Options of translate."""

    fields: list[str] = ["instruction", "input", "output"]
    language: str = "French"
    temperature: float = 0.0
    max_tokens: int = 768
    mode: Literal["together", "per_field"] = "together"  # per_field: one request per field


class Translate(LLMStep[TranslateOptions]):
    """Translates the named fields in one request per record; empty fields stay empty."""

    Options: ClassVar[type[StepOptions]] = TranslateOptions

    def requires(self) -> set[str]:
        return {self.options.fields[0]}

    def provides(self) -> set[str]:
        return {"language", "source", "source_id"}

    def _present(self, record: Record) -> list[str]:
        return [f for f in self.options.fields if str(record.get(f) or "").strip()]

    def prompt(self, record: Record) -> Prompt:
        blocks = "\n\n".join(f"{f.title()}:\n{record[f]}" for f in self._present(record))
        return [{"role": "user", "content":
                 f"Translate each part below into {self.options.language}. Keep the part labels "
                 f"({', '.join(f.title() + ':' for f in self._present(record))}) in English "
                 f"and translate only the text after them.\n\n{blocks}"}]

    async def replies(self, record: Record, request: Request, ctx: StepContext) -> list[str]:
        if self.options.mode == "together":
            return await super().replies(record, request, ctx)
        parts = []
        for field in self._present(record):
            ask = (f"Translate into {self.options.language}. Reply with the translation only."
                   f"\n\n{record[field]}")
            text = await self.ask([{"role": "user", "content": ask}], request.seed or 0, ctx)
            parts.append(f"{field.title()}:\n{text.strip()}")
        return ["\n\n".join(parts)]

    def parse(self, record: Record, replies: list[str]) -> Iterable[Record]:
        present = self._present(record)
        found = parse_sections(replies[0], present)
        missing = [f for f in present if not found.get(f)]
        if missing:
            raise ParseError(f"translation lacks {missing}")
        original = {f: record.get(f) for f in self.options.fields}
        yield {**content(record), **{f: found.get(f, "") for f in self.options.fields},
               "language": self.options.language, "source": original,
               "source_id": meta(record).get("id")}
