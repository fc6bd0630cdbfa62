"""Shared parts of the counterfactual recipes (CORE, DISCO) and their teacher judge.

- `target_labels`: the labels an input is flipped to (every label of the set but its own,
  or those of `targets`, checked against the set by `check_targets` when a step is built);
- `unchanged`: whether an edit is the input again (case, spacing and end punctuation aside);
- `read_lines`: a JSONL or plain-text file read line by line, errors naming file and line;
- `counterfactual-judge`: a teacher (a backend role) labels each counterfactual against the
  label set, read as strictly as `llm-label` reads a label; a counterfactual is kept only when
  the teacher's label is its target label, and, with `check_original`, when the teacher did
  not already give the target label to the unedited input (the label flipped, DISCO's
  teacher filter with a model in place of the NLI classifier).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from synthaug.errors import ConfigError, ParseError, RecordError
from synthaug.io import data_file
from synthaug.records import Record, content
from synthaug.steps.augment.label import LabelSchema, load_schema, read_text
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses

ORIGINAL = "original_"  # prefix of the fields holding the unedited input
_EDGES = " \t\r\n\"'`*_.,;:!?"
_SYSTEM = ("You are the teacher model of a labelling task. You read an example and answer "
           "with the one label that holds for it, spelled exactly as listed.")


def words(text: str) -> frozenset[str]:
    """The space-separated words of `text`, as a set (word lists written as one string)."""
    return frozenset(text.split())


def label_schema(labels: dict[str, str] | list[str], task: str) -> LabelSchema:
    """A single-label schema (at least two labels) from the step's options."""
    try:
        return load_schema(labels, None, False, task)
    except ConfigError as exc:
        raise ConfigError(exc.message, field="labels") from None


def normalized(text: str) -> str:
    """Lower case, single spaces, no quotes or punctuation at either end."""
    return " ".join(text.split()).strip(_EDGES).casefold()


def unchanged(edit: str, original: str) -> bool:
    """True when `edit` is `original` again (or empty)."""
    return not normalized(edit) or normalized(edit) == normalized(original)


def record_label(record: Record, field: str, schema: LabelSchema) -> str:
    """The record's label in the schema's spelling; RecordError when it is not in the set."""
    said = record.get(field)
    found = schema.canonical(str(said)) if isinstance(said, (str, int, bool)) else None
    if found is None:
        raise RecordError(field, f"label {said!r} is not one of {', '.join(schema.labels)}")
    return found


def check_targets(targets: list[str] | None, schema: LabelSchema) -> list[str] | None:
    """`targets` in the schema's spelling; ConfigError (field `targets`) for a name outside
    the label set or an empty list, so a misspelt target fails before any call."""
    if targets is None:
        return None
    unknown = [name for name in targets if schema.canonical(name) is None]
    if unknown or not targets:
        said = f"{', '.join(map(repr, unknown))} not" if unknown else "no label given; give"
        raise ConfigError(f"{said} one of {', '.join(schema.labels)}", field="targets")
    return [name for name in schema.labels if name in {schema.canonical(t) for t in targets}]


def target_labels(label: str, schema: LabelSchema, only: list[str] | None = None) -> list[str]:
    """The labels `label` is flipped to: every other label (or those of `only`, checked by
    `check_targets`); [] when `label` is the only target."""
    wanted = only if only is not None else list(schema.labels)
    return [name for name in wanted if name != label]


def read_lines(name: str, field: str) -> list[str]:
    """The texts of a corpus file: JSONL (the `field` of each object) or plain text (one per
    line); a path or a file shipped in synthaug/data. Errors name the file and line."""
    path = Path(name) if Path(name).is_file() else data_file(name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the corpus: {exc}", file=name) from None
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"line {number}: not JSON ({exc})", file=name) from None
        value = row.get(field) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"line {number}: no text in field '{field}'", file=name,
                              field=field)
        texts.append(value.strip())
    if not texts:
        raise ConfigError("the corpus is empty", file=name)
    return texts


def sentences(text: str) -> list[str]:
    """`text` split after sentence-ending punctuation."""
    return [part.strip() for part in re.split(r"(?<=[.!?])\s+", text) if part.strip()]


class JudgeOptions(EachOptions):
    """Options of counterfactual-judge."""

    backend: str = "teacher"
    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    labels: dict[str, str] | list[str]  # name: description, or names
    task: str = "Read the example and say which label holds for it."
    target_field: str = "target_label"
    check_original: bool = True  # also label the unedited input: it must not be the target
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=16)


class CounterfactualJudge(Each[JudgeOptions]):
    """Keeps a counterfactual only when the teacher labels it with its target label (and,
    with `check_original`, did not already give that label to the unedited input)."""

    Options: ClassVar[type[StepOptions]] = JudgeOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.schema = label_schema(self.options.labels, self.options.task)

    def requires(self) -> Requirements:
        return {**{name: str for name in self.options.fields}, self.options.target_field: str}

    def provides(self) -> set[str]:
        return {"teacher_label"} | ({"teacher_original_label"} if self.options.check_original
                                    else set())

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prompt(self, values: dict[str, str]) -> list[dict[str, str]]:
        """The teacher's request: task, labels with descriptions, the example, the form."""
        listed = "\n".join(f"- {name}: {about}" if about else f"- {name}"
                           for name, about in self.schema.labels.items())
        shown = "\n".join(f"{name.capitalize()}: {value}" for name, value in values.items())
        user = (f"{self.schema.task}\n\nLabels:\n{listed}\n\nExample:\n{shown}\n\n"
                "Answer in exactly this form:\nLabel: <exactly one of the labels>")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    async def teacher(self, values: dict[str, str], record: Record, salt: str,
                      ctx: StepContext) -> tuple[str, Reply]:
        """The teacher's label for `values`; ParseError for an answer outside the set."""
        reply = await ctx.generate(self.prompt(values), self.options.sampling,
                                   seed=ctx.seed_for(None, salt, *values.values()))
        try:
            vote = read_text(reply.text, self.schema, False, False)
        except ParseError as exc:
            raise ParseError(f"teacher: {exc}", raw=reply.texts) from None
        assert vote.labels is not None
        return vote.labels[0], reply

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        target = record_label(record, o.target_field, self.schema)
        edited = {name: str(record[name]) for name in o.fields}
        said, reply = await self.teacher(edited, record, "edited", ctx)
        replies, fields = [reply], {**content(record), "teacher_label": said}
        if said != target:
            ctx.drop(record, "label did not flip", f"teacher: {said}, target: {target}")
            return []
        if o.check_original:
            before = {name: str(record.get(ORIGINAL + name, record[name])) for name in o.fields}
            was, first = await self.teacher(before, record, "original", ctx)
            replies.append(first)
            fields["teacher_original_label"] = was
            if was == target:
                ctx.drop(record, "original already had the target label",
                         f"teacher gave the unedited input {was}")
                return []
        return [ctx.derive([record], fields, 0, *replies)]
