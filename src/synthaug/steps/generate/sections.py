"""sections: a templated request whose reply has named sections ("Question:", "Answer:"),
parsed into fields. The shared output format of OSS-Instruct, Genie, textbooks, Unnatural
Instructions and backtranslation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar, Literal

from synthaug import template
from synthaug.backends.base import Request
from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Prompt, StepOptions
from synthaug.steps.context import StepContext


def _label(name: str) -> str:
    return name.replace("_", " ").title()


def parse_sections(text: str, names: list[str]) -> dict[str, str]:
    """{name: text} for each `Name:` header found (any order, case-insensitive)."""
    labels = "|".join(re.escape(_label(n)) for n in names)
    pattern = re.compile(rf"^\s*[#*\[]*\s*({labels})\s*[\]*]*\s*:?[ \t]*\**", re.I | re.M)
    marks = list(pattern.finditer(text))
    found: dict[str, str] = {}
    if not marks:
        return found
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        key = next(n for n in names if _label(n).lower() == mark.group(1).lower())
        end = following.start() if following else len(text)
        found.setdefault(key, text[mark.end():end].strip())
    return found


class SectionsOptions(LLMOptions):
    """Options of sections."""

    template: str
    system: str | None = None
    sections: list[str]
    required: list[str] | None = None  # default: every section
    max_tokens: int = 512
    # single: one reply with every section; per_section: one request per section, each seeing
    # the sections written so far (for small models that cannot keep a multi-part format)
    mode: Literal["single", "per_section"] = "single"


class Sections(LLMStep[SectionsOptions]):
    """Asks for named sections and stores each as a field; a reply missing one is a failure."""

    Options: ClassVar[type[StepOptions]] = SectionsOptions

    def requires(self) -> set[str]:
        return set(template.fields(self.options.template)) | set(
            template.fields(self.options.system or ""))

    def provides(self) -> set[str]:
        return set(self.options.sections)

    def prompt(self, record: Record) -> Prompt:
        headers = "\n".join(f"{_label(n)}: ..." for n in self.options.sections)
        text = (template.render(self.options.template, record)
                + f"\n\nWrite your answer in exactly this format:\n{headers}")
        messages = [{"role": "user", "content": text}]
        if self.options.system:
            messages.insert(0, {"role": "system",
                                "content": template.render(self.options.system, record)})
        return messages

    async def replies(self, record: Record, request: Request, ctx: StepContext) -> list[str]:
        if self.options.mode == "single":
            return await super().replies(record, request, ctx)
        task = template.render(self.options.template, record)
        written: list[str] = []
        for name in self.options.sections:
            done = "".join(f"{_label(n)}:\n{t}\n\n" for n, t in zip(
                self.options.sections, written, strict=False))
            ask = f"{task}\n\n{done}Write only the {_label(name).lower()} now, without a heading."
            text = await self.ask([{"role": "user", "content": ask}], request.seed or 0, ctx)
            written.append(text.strip())
        return ["\n".join(f"{_label(n)}: {t}" for n, t in zip(self.options.sections, written,
                                                                strict=True))]

    def parse(self, record: Record, replies: list[str]) -> Iterable[Record]:
        o = self.options
        required = o.required if o.required is not None else o.sections
        for reply in replies:
            found = parse_sections(reply, self.options.sections)
            missing = [n for n in required if not found.get(n)]
            if missing:
                raise ParseError(f"reply lacks section(s) {missing}")
            yield {**content(record), **{n: found.get(n, "") for n in self.options.sections}}
