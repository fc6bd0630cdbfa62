"""gpt3mix: new labelled examples written from a mixture of real ones, each with a soft label
(GPT3Mix, Yoo et al. 2021, arXiv:2104.08826).

1. Example selection: k examples (2 in the paper) drawn uniformly at random from the
   labelled set, shown in a random order.
2. The prompt: the task specification (text type, label type, the label names), then the k
   examples, each with its label, as items of one list; the model continues the list with a
   new item: a new text and its label.
3. Soft label: the label the model would write after the new text, as a distribution over the
   labels. With a backend that returns top logprobs (`soft: logprobs`), the probabilities of
   the tokens that begin each label name at the label position, normalized over the labels
   (the paper's label-token distribution); otherwise (`soft: samples`) each label's share
   of `label_samples` answers sampled at temperature 1 that name one label, an estimate of
   the same distribution. When the first label token begins several labels ('very positive'
   / 'very negative'), logprobs cannot tell them apart and that record's soft label is
   sampled instead; `soft_label_by` says which way each soft label was read. The record keeps
   the distribution (`soft_label`) and, as `label`, its most probable label, not the label
   the model first wrote (`written_label`, kept for reference).
4. The augmentations are added to the labelled set (`keep_original`): the valid examples pass
   through with `augmentation: {op: original}`, the new ones have `op: mix`.
Texts that are empty, copy an example or repeat another augmentation are dropped.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import ConfigError, ParseError, RecordError
from synthaug.records import Record, content
from synthaug.steps.augment.label import TOP, ambiguous, label_probabilities
from synthaug.steps.base import Generator, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses

Soft = Literal["auto", "logprobs", "samples"]
_SYSTEM = "You continue lists of labelled examples for a text classification dataset."


class MixOptions(StepOptions):
    """Options of gpt3mix."""

    backend: str = "default"
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] | None = None  # the label names, in order (default: those in the data)
    text_type: str = "Text"  # what a text is, e.g. "Movie review"
    label_type: str = "Label"  # what a label is, e.g. "Sentiment"
    k: int = Field(2, ge=1)  # real examples mixed per augmentation
    count: int | None = Field(None, ge=1)  # augmentations made (default: one per example)
    soft: Soft = "auto"  # how the soft label is read (auto: logprobs when the backend can)
    label_samples: int = Field(8, ge=2)  # label answers sampled in `samples` mode
    sampling: Sampling = Sampling(temperature=1.0, max_tokens=160)
    keep_original: bool = True  # the labelled set passes through, as the paper adds to it


def examples_of(pool: list[Record], o: MixOptions) -> list[Record]:
    """The labelled examples (text and label present and non-empty); raises RecordError."""
    for record in pool:
        for name in (o.text_field, o.label_field):
            value = record.get(name)
            if not isinstance(value, (str, int)) or isinstance(value, bool) \
                    or not str(value).strip():
                raise RecordError(name, f"field '{name}' must be a non-empty text")
    return pool


def header(labels: list[str], o: MixOptions) -> str:
    """The task specification: text type, label type and label names."""
    names = ", ".join(f"'{name}'" for name in labels[:-1]) + f" or '{labels[-1]}'"
    return (f"Each item in the list below is a {o.text_type.lower()} with its "
            f"{o.label_type.lower()}. The {o.label_type.lower()} is one of {names}.")


def item(text: str, label: str, o: MixOptions) -> str:
    """One list item: '<text type>: text (<label type>: label)'."""
    return f"{o.text_type}: {' '.join(text.split())} ({o.label_type}: {label})"


def mix_prompt(examples: list[Record], labels: list[str], o: MixOptions) -> Prompt:
    """The GPT3Mix request: the specification, the k examples, an open item to write."""
    shown = "\n".join(item(str(r[o.text_field]), str(r[o.label_field]), o) for r in examples)
    user = (f"{header(labels, o)}\n\n{shown}\n\nWrite one more item for this list: a new "
            f"{o.text_type.lower()}, different from the ones above, and its "
            f"{o.label_type.lower()}, in exactly the same form.")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def read_item(reply: str, labels: list[str], o: MixOptions) -> tuple[str, str | None]:
    """(the new text, the label the model wrote or None) from a reply; ParseError if no text."""
    line = next((ln.strip() for ln in reply.strip().splitlines() if ln.strip()), "")
    line = re.sub(rf"^[\s\-*\d.]*{re.escape(o.text_type)}\s*:\s*", "", line, flags=re.I)
    found = re.search(rf"\(\s*{re.escape(o.label_type)}\s*:\s*([^)]*)\)\s*$", line, re.I)
    text = (line[:found.start()] if found else line).strip().strip('"').strip()
    if not text:
        raise ParseError(f"no new {o.text_type.lower()} in the reply: {reply[:80]!r}")
    said = found.group(1).strip(" '\"") if found else ""
    written = next((name for name in labels if name.casefold() == said.casefold()), None)
    return text, written


def label_prompt(examples: list[Record], labels: list[str], text: str, o: MixOptions) -> Prompt:
    """The same list with the new text added, asking for its label alone."""
    shown = "\n".join(item(str(r[o.text_field]), str(r[o.label_field]), o) for r in examples)
    user = (f"{header(labels, o)}\n\n{shown}\n{o.text_type}: {' '.join(text.split())} "
            f"({o.label_type}: ?)\n\nWhat is the {o.label_type.lower()} of the last item? "
            f"Answer with the {o.label_type.lower()} only, spelled as listed.")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def text_key(text: str) -> str:
    """A text's identity for copy checks: its words, lower case (punctuation ignored)."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def named_label(answer: str, labels: list[str]) -> str | None:
    """The one label an answer names (as whole words, any case), or None (none or several)."""
    found = [n for n in labels if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", answer, re.I)]
    return found[0] if len(found) == 1 else None


def sampled_distribution(answers: list[str], labels: list[str]) -> dict[str, float]:
    """Each label's share of the answers that name one label ({} when none does)."""
    named = [named_label(a, labels) for a in answers]
    counts = Counter(n for n in named if n is not None)
    total = sum(counts.values())
    return {n: counts[n] / total for n in labels} if total else {}


class GPT3Mix(Generator[MixOptions]):
    """Mixed-example augmentation with soft labels from the model's label distribution."""

    Options: ClassVar[type[StepOptions]] = MixOptions
    LABEL_SAMPLING: ClassVar[Sampling] = Sampling(temperature=0.0, max_tokens=4)

    def requires(self) -> Requirements:
        return {self.options.text_field: str, self.options.label_field: (str, int)}

    def provides(self) -> set[str]:
        return {"text", "label", "soft_label", "soft_label_by", "written_label", "mixed_from",
                "augmentation"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, logprobs=self.options.soft == "logprobs")]

    def mode(self, ctx: StepContext) -> Literal["logprobs", "samples"]:
        """How soft labels are read here."""
        if self.options.soft != "auto":
            return self.options.soft
        return "logprobs" if ctx.client().backend.supports("logprobs") else "samples"

    async def soft_label(self, prompt: Prompt, labels: list[str], seed: int, ctx: StepContext
                         ) -> tuple[dict[str, float], list[Reply], Literal["logprobs", "samples"]]:
        """The label distribution of the new text, the calls that read it and how: from the
        first label token's logprobs, else (no logprobs, or a first token that begins several
        labels) from sampled answers."""
        replies: list[Reply] = []
        if self.mode(ctx) == "logprobs":
            reply = await ctx.generate(prompt, self.LABEL_SAMPLING, seed=seed, logprobs=True,
                                       top_logprobs=TOP)
            top = reply.completions[0].top_logprobs
            found = label_probabilities(top[0] if top else {}, labels)
            replies.append(reply)
            if not ambiguous(found):
                return {n: p for n, p in found.items() if p is not None}, replies, "logprobs"
            ctx.stats.notes["soft labels sampled: first label token begins several labels"] += 1
        sampling = Sampling(temperature=1.0, max_tokens=12)
        reply = await ctx.generate(prompt, sampling, seed=seed, n=self.options.label_samples)
        return sampled_distribution(reply.texts, labels), [*replies, reply], "samples"

    async def augment(self, index: int, pool: list[Record], labels: list[str],
                      ctx: StepContext) -> tuple[list[Record], dict[str, Any], list[Reply]]:
        """One augmentation: the examples mixed, the new item and its soft label."""
        o = self.options
        rng = ctx.rng(None, "mix", index)
        examples = rng.sample(pool, min(o.k, len(pool)))
        written = await ctx.generate(mix_prompt(examples, labels, o), o.sampling,
                                     seed=ctx.seed_for(None, "mix", index))
        text, said = read_item(written.text, labels, o)
        soft, read, how = await self.soft_label(label_prompt(examples, labels, text, o), labels,
                                                ctx.seed_for(None, "label", index), ctx)
        if not soft:
            raise ParseError("no label probability for the new text", raw=read[-1].texts)
        soft = {name: round(p, 4) for name, p in soft.items()}
        best = max(labels, key=lambda name: soft.get(name, 0.0))
        fields = {"text": text, "label": best, "soft_label": soft, "soft_label_by": how,
                  "written_label": said, "mixed_from": [content(r) for r in examples],
                  "augmentation": {"method": "gpt3mix", "op": "mix"}}
        return examples, fields, [written, *read]

    def label_names(self, pool: list[Record]) -> list[str]:
        """The labels: the option's, else those the data holds, sorted."""
        o = self.options
        names = o.labels or sorted({str(r[o.label_field]) for r in pool})
        if len(names) < 2:
            raise ConfigError("gpt3mix needs at least two labels", step="gpt3mix",
                              field="labels")
        return names

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        o = self.options
        valid: list[Record] = []
        for record in pool:
            try:
                valid += examples_of([record], o)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
        labels = self.label_names(valid) if valid else []
        for record in [r for r in valid if str(r[o.label_field]) not in labels]:
            ctx.reject(record, f"label {record[o.label_field]!r} is not one of {labels}",
                       o.label_field)
        valid = [r for r in valid if str(r[o.label_field]) in labels]
        if not valid:
            return
        for number, record in enumerate(valid if o.keep_original else []):
            yield ctx.derive([record], {**content(record), "augmentation": {
                "method": "gpt3mix", "op": "original"}}, f"original.{number}")
        done = await asyncio.gather(*(
            ctx.attempt(self.augment(i, valid, labels, ctx), {"augmentation": i})
            for i in range(o.count or len(valid))))
        seen = {text_key(str(r[o.text_field])) for r in valid}
        for index, made in enumerate(done):
            if made is None:
                continue
            examples, fields, replies = made
            record = ctx.derive(examples, fields, index, *replies)
            key = text_key(fields["text"])
            if key in seen:
                ctx.drop(record, "copies an example or another augmentation")
                continue
            seen.add(key)
            yield record
