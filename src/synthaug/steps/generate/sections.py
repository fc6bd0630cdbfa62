"""sections: a templated request whose reply has named sections ("Question:", "Answer:"),
parsed into fields. The shared output format of OSS-Instruct, Genie, textbooks, Unnatural
Instructions and backtranslation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar, Literal

from synthaug import template
from synthaug.errors import ParseError
from synthaug.records import Record, content
from synthaug.steps.base import LLMOptions, LLMStep, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling


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
    sampling: Sampling = Sampling(max_tokens=512)
    # single: one reply with every section; per_section: one request per section, each seeing
    # the sections written so far (for small models that cannot keep a multi-part format)
    mode: Literal["single", "per_section"] = "single"


class Sections(LLMStep[SectionsOptions]):
    """Asks for named sections and stores each as a field; a reply missing one is a failure."""

    Options: ClassVar[type[StepOptions]] = SectionsOptions

    def requires(self) -> Requirements:
        return template.requirements(self.options.template, self.options.system)

    def provides(self) -> set[str]:
        return set(self.options.sections)

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        headers = "\n".join(f"{_label(n)}: ..." for n in self.options.sections)
        messages = template.messages(record, self.options.template, self.options.system)
        messages[-1]["content"] += f"\n\nWrite your answer in exactly this format:\n{headers}"
        return messages

    async def ask(self, record: Record, ctx: StepContext) -> Reply:
        if self.options.mode == "single":
            return await super().ask(record, ctx)
        task = template.render(self.options.template, record)
        names, parts = self.options.sections, list[Reply]()
        for i, name in enumerate(names):
            done = "".join(f"{_label(n)}:\n{p.text.strip()}\n\n"
                           for n, p in zip(names, parts, strict=False))
            ask = f"{task}\n\n{done}Write only the {_label(name).lower()} now, without a heading."
            parts.append(await ctx.generate([{"role": "user", "content": ask}],
                                            self.options.sampling,
                                            seed=ctx.seed_for(record, "section", i)))
        text = "\n".join(f"{_label(n)}: {p.text.strip()}" for n, p in zip(names, parts,
                                                                             strict=True))
        return Reply.combine(text, parts)

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        o = self.options
        required = o.required if o.required is not None else o.sections
        for text in reply.texts:
            found = parse_sections(text, self.options.sections)
            missing = [n for n in required if not found.get(n)]
            if missing:
                raise ParseError(f"reply lacks section(s) {missing}")
            yield {**content(record), **{n: found.get(n, "") for n in self.options.sections}}
