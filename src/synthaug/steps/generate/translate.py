"""Self-Translate (Ri et al., 2024): translate instruction data with the same model, keeping
each translation paired with its source record (`source` holds the original fields)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from synthaug.errors import ParseError
from synthaug.records import Record, content, meta
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sections import parse_sections
from synthaug.steps.llm import Prompt, Reply, Sampling
from synthaug.template import text_field


class TranslateOptions(LLMOptions):
    """Options of translate."""

    fields: list[str] = ["instruction", "input", "output"]
    language: str = "French"
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=768)
    mode: Literal["together", "per_field"] = "together"  # per_field: one request per field


class Translate(LLMStep[TranslateOptions]):
    """Translates the named fields in one request per record; empty fields stay empty."""

    Options: ClassVar[type[StepOptions]] = TranslateOptions

    def requires(self) -> Requirements:
        return {self.options.fields[0]: str}

    def provides(self) -> set[str]:
        return {"language", "source", "source_id"}

    def _present(self, record: Record) -> list[str]:
        present = [f for f in self.options.fields if record.get(f) not in (None, "")]
        for name in present:
            text_field(record, name)  # a number or list is not translated as text
        return [f for f in present if record[f].strip()]

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        blocks = "\n\n".join(f"{f.title()}:\n{record[f]}" for f in self._present(record))
        return [{"role": "user", "content":
                 f"Translate each part below into {self.options.language}. Keep the part labels "
                 f"({', '.join(f.title() + ':' for f in self._present(record))}) in English "
                 f"and translate only the text after them.\n\n{blocks}"}]

    async def ask(self, record: Record, ctx: StepContext) -> Reply:
        if self.options.mode == "together":
            return await super().ask(record, ctx)
        present, parts = self._present(record), list[Reply]()
        for field in present:
            ask = (f"Translate into {self.options.language}. Reply with the translation only."
                   f"\n\n{record[field]}")
            parts.append(await ctx.generate([{"role": "user", "content": ask}],
                                            self.options.sampling,
                                            seed=ctx.seed_for(record, "field", field)))
        if not parts:
            raise ParseError("no field to translate")
        text = "\n\n".join(f"{f.title()}:\n{p.text.strip()}" for f, p in zip(present, parts,
                                                                               strict=True))
        return Reply.combine(text, parts)

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        present = self._present(record)
        found = parse_sections(reply.text, present)
        missing = [f for f in present if not found.get(f)]
        if missing:
            raise ParseError(f"translation lacks {missing}")
        original = {f: record.get(f) for f in self.options.fields}
        yield {**content(record), **{f: found.get(f, "") for f in self.options.fields},
               "language": self.options.language, "source": original,
               "source_id": meta(record).get("id")}
