"""llm-label: a model labels existing records against a label schema, with a confidence per
record (LLM annotation: Gilardi et al. 2023, arXiv:2303.15056; Törnberg 2023,
arXiv:2304.06588; Zhu et al. 2023, arXiv:2304.10145).

1. The schema: labels with descriptions, one label per record or several (`multi_label`),
   from the step's options or a schema file (YAML/JSON: `labels`, `multi_label`, `task`).
2. k samples per record. With a backend that constrains output to a JSON schema (`structured`,
   default: when the backend can), the answer is an object whose label is an enum of the
   labels; otherwise a 'Label: ...' line. Either way the answer is read strictly: a label not
   in the schema makes that sample invalid (kept with its raw answer in the record's
   `invalid_votes`), never a guess; a record none of whose samples is valid fails as a whole.
3. Self-consistency: the label (or label set) most samples gave is kept; `confidence`
   holds its vote share (its votes over the k samples asked, invalid ones included) and the
   entropy in bits of the k outcomes (an invalid sample is an outcome of its own).
4. `verbalized`: each sample also states how sure it is, 0-100 (Tian et al. 2023); the
   record's `confidence.verbalized` is the mean over the samples that voted for the kept
   label, scaled to 0-1. A missing or out-of-range number makes the sample invalid.
5. `logprobs` (single-label; a backend with logprobs): one more greedy call asks for the
   label alone with the top 5 alternatives of its first token; each label's probability is
   the mass of the first-token alternatives that begin it, normalized over the labels, and
   `confidence.logprob` is the kept label's share. When that first token begins more than
   one label ('very positive' / 'very negative'), the share is unknown: `logprob` is None
   and `logprob_unknown` says why.
6. `explain`: each sample also gives a one-sentence reason (Bertaglia et al. 2023); the
   record keeps the reason of the first sample that voted for the kept label.

Output: the input's fields plus `label` (or `labels`), `confidence`, `votes` (per label, the
samples that chose it) and `explanation` (with `explain`); `_meta.labeled_by` names the model.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from synthaug.errors import ConfigError, ParseError
from synthaug.records import Record, content
from synthaug.steps.base import Each, EachOptions, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sampling import load_data
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.template import text_field

DEFAULT_TASK = "Read the text and classify it."
INVALID = "(invalid)"
TOP = 5  # first-token alternatives asked in logprob mode
_SYSTEM = ("You annotate texts for a classification task. You answer only with labels taken "
           "from the list you are given, spelled exactly as listed.")
_FIELD = re.compile(r"^[\s*_>#-]*(labels?|confidence|explanation)[*_]*\s*:[*_]*\s*(.*)$",
                    re.IGNORECASE)
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)\s*%?\s*\.?$")
_STRIP = " \t\"'`*_.[]()"
LabelSet = tuple[str, ...]  # one sample's answer: a 1-tuple for single-label


@dataclass(frozen=True)
class LabelSchema:
    """The labels (name -> description, in order), whether several may apply, the task."""

    labels: dict[str, str]
    multi: bool
    task: str

    def canonical(self, said: str) -> str | None:
        """The schema's spelling of `said` (case and surrounding quotes ignored), or None."""
        wanted = said.strip(_STRIP).casefold()
        return next((name for name in self.labels if name.casefold() == wanted), None)

    def ordered(self, names: set[str]) -> LabelSet:
        """`names` in the schema's order."""
        return tuple(name for name in self.labels if name in names)


def _label_table(given: Any, where: str) -> dict[str, str]:
    """name -> description from a mapping, a list of names, or a list of {name, description}."""
    if isinstance(given, dict):
        items = list(given.items())
    elif isinstance(given, list):
        items = [(g, "") if isinstance(g, str) else
                 ((g.get("name"), g.get("description", "")) if isinstance(g, dict) else (g, ""))
                 for g in given]
    else:
        raise ConfigError("labels must be a mapping name: description or a list", file=where,
                          field="labels")
    table: dict[str, str] = {}
    for name, description in items:
        if not isinstance(name, str) or not name.strip() or not isinstance(description, str):
            raise ConfigError(f"a label needs a non-empty name and a text description, got "
                              f"{name!r}: {description!r}", file=where, field="labels")
        if name.strip().casefold() in {n.casefold() for n in table}:
            raise ConfigError(f"label {name!r} is listed twice", file=where, field="labels")
        if "," in name or ";" in name:
            raise ConfigError(f"label {name!r} may not contain ',' or ';'", file=where,
                              field="labels")
        table[name.strip()] = description.strip()
    if len(table) < 2:
        raise ConfigError("a label schema needs at least two labels", file=where,
                          field="labels")
    return table


def load_schema(labels: Any, schema_file: str | None, multi: bool, task: str) -> LabelSchema:
    """The schema from the options, or from `schema_file` (its keys override the options')."""
    if schema_file is None:
        return LabelSchema(_label_table(labels, "options"), multi, task)
    found = load_data(schema_file)
    if not isinstance(found, dict) or "labels" not in found:
        raise ConfigError("a schema file holds an object with 'labels'", file=schema_file)
    unknown = set(found) - {"labels", "multi_label", "task"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", file=schema_file,
                          field=sorted(unknown)[0])
    multi = found.get("multi_label", multi)
    task = found.get("task", task)
    if not isinstance(multi, bool) or not isinstance(task, str):
        raise ConfigError("multi_label must be true/false and task a text", file=schema_file,
                          field="multi_label" if not isinstance(multi, bool) else "task")
    return LabelSchema(_label_table(found["labels"], schema_file), multi, task)


class LabelOptions(EachOptions):
    """Options of llm-label."""

    backend: str = "default"
    field: str = "text"  # the record field to label
    labels: dict[str, str] | list[str] | None = None  # name: description, or names
    schema_file: str | None = None  # YAML/JSON: labels, multi_label, task
    multi_label: bool = False
    task: str = DEFAULT_TASK
    k: int = Field(5, ge=1)  # samples per record (self-consistency)
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=96)
    structured: bool | None = None  # JSON-schema output (None: when the backend can)
    verbalized: bool = False  # each sample states its confidence 0-100
    logprobs: bool = False  # one more greedy call: first-token label probabilities
    explain: bool = False  # each sample gives a one-sentence reason

    @model_validator(mode="after")
    def _one_source(self) -> LabelOptions:
        if (self.labels is None) == (self.schema_file is None):
            raise ValueError("give exactly one of labels and schema_file")
        return self


@dataclass
class Vote:
    """One sample's reading: its labels (None: invalid), stated confidence and reason."""

    labels: LabelSet | None
    confidence: float | None = None
    explanation: str | None = None
    error: str | None = None


def _checked_confidence(value: Any) -> float:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str) and (found := _NUMBER.match(value.strip())):
        number = float(found.group(1))
    if number is None or not 0 <= number <= 100:
        raise ParseError(f"confidence must be a number from 0 to 100, got {value!r}")
    return float(number)


def named_labels(said: str, schema: LabelSchema) -> list[str]:
    """The labels a text answer lists: whole schema labels first (longest first, any case,
    as whole words, so 'science and technology' stays one label), then the rest split on
    ',', ';' and 'and'; a leftover part is returned as said (not a label: invalid)."""
    rest, found = said.strip(_STRIP), list[str]()
    for name in sorted(schema.labels, key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        if pattern.search(rest):
            found.append(name)
            rest = pattern.sub(",", rest)
    parts = [p.strip(_STRIP) for p in re.split(r"\s*(?:,|;|\band\b)\s*", rest)]
    parts = [p for p in parts if p]
    if not found and [p.casefold() for p in parts] in ([], ["none"]):
        return []
    return found + parts


def _checked_labels(said: Any, schema: LabelSchema) -> LabelSet:
    """The labels `said` names, each checked against the schema; ParseError otherwise."""
    if schema.multi:
        if isinstance(said, str):
            said = named_labels(said, schema)
        if not isinstance(said, list) or not all(isinstance(s, str) for s in said):
            raise ParseError(f"expected a list of labels, got {said!r}")
    elif not isinstance(said, str):
        raise ParseError(f"expected one label, got {said!r}")
    names = said if isinstance(said, list) else [said]
    found = [schema.canonical(name) for name in names]
    outside = [name for name, hit in zip(names, found, strict=True) if hit is None]
    if outside:
        raise ParseError(f"answer {outside[0]!r} is not a label of the schema "
                         f"({', '.join(schema.labels)})")
    return schema.ordered({hit for hit in found if hit is not None})


def read_json(text: str, schema: LabelSchema, verbalized: bool, explain: bool) -> Vote:
    """A structured answer: a JSON object with `label`/`labels`, `confidence`, `explanation`."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ParseError(f"the answer is not JSON: {text[:60]!r}") from None
    key = "labels" if schema.multi else "label"
    if not isinstance(data, dict) or key not in data:
        raise ParseError(f"the answer has no '{key}': {text[:60]!r}")
    labels = _checked_labels(data[key], schema)
    confidence = _checked_confidence(data.get("confidence")) if verbalized else None
    why = data.get("explanation") if explain else None
    return Vote(labels, confidence, why.strip() if isinstance(why, str) else None)


def read_text(text: str, schema: LabelSchema, verbalized: bool, explain: bool) -> Vote:
    """A free-text answer: 'Label: ...' ('Labels: a, b'), 'Confidence: N', 'Explanation: ...'
    lines; a reply that is only a label counts as its 'Label:' line."""
    fields: dict[str, str] = {}
    lines = text.strip().splitlines()
    for number, line in enumerate(lines):
        if (found := _FIELD.match(line)) is not None:
            name = found.group(1).lower().rstrip("s")
            rest = "\n".join([found.group(2), *lines[number + 1:]]) if name == "explanation" \
                else found.group(2)
            fields.setdefault(name, rest.strip())
    if "label" not in fields and schema.canonical(text) is not None:
        fields["label"] = text
    if "label" not in fields:
        raise ParseError(f"no 'Label:' line in the answer: {text[:60]!r}")
    labels = _checked_labels(fields["label"], schema)
    confidence = _checked_confidence(fields.get("confidence")) if verbalized else None
    return Vote(labels, confidence, fields.get("explanation") if explain else None)


@dataclass(frozen=True)
class Tally:
    """The kept outcome of k votes and its self-consistency confidence."""

    labels: LabelSet
    vote_share: float
    entropy: float
    votes: dict[str, int]


def tally(outcomes: Sequence[LabelSet | None], names: Sequence[str]) -> Tally:
    """The most frequent valid outcome (ties: the one sampled first), its share of all
    outcomes, the entropy in bits of the outcomes (invalid ones pooled), votes per label."""
    valid = [o for o in outcomes if o is not None]
    if not valid:
        raise ParseError("no sample gave a valid answer")
    counts = Counter(valid)
    top = max(counts.values())
    kept = next(o for o in valid if counts[o] == top)
    pooled = Counter(o if o is not None else INVALID for o in outcomes)
    total = len(outcomes)
    entropy = -sum(c / total * math.log2(c / total) for c in pooled.values())
    per_label = Counter(name for o in valid for name in o)
    return Tally(kept, top / total, round(abs(entropy), 4),
                 {name: per_label[name] for name in names if per_label[name]})


def label_probabilities(top: dict[str, float], names: Sequence[str]
                        ) -> dict[str, float | None]:
    """Each label's probability from one token's alternatives: the mass of the alternatives
    that begin it, over the mass of those that begin any label ({} when none does). A label
    that an alternative begins together with another ('very' for 'very positive' and 'very
    negative', 'ne' for 'negative' and 'neutral') cannot be told apart by its first token:
    its probability is None (unknown), never a share of the common token's mass."""
    begins = {token: [name for name in names if token.strip() and
                      name.casefold().startswith(token.strip().casefold())] for token in top}
    total = sum(math.exp(top[token]) for token, hit in begins.items() if hit)
    if total <= 0:
        return {}
    unknown = {name for hit in begins.values() if len(hit) > 1 for name in hit}
    return {name: None if name in unknown else
            sum(math.exp(top[token]) for token, hit in begins.items() if hit == [name]) / total
            for name in names}


def ambiguous(probabilities: dict[str, float | None]) -> list[str]:
    """The labels whose first-token probability is unknown (they share a first token)."""
    return [name for name, p in probabilities.items() if p is None]


def json_schema(schema: LabelSchema, verbalized: bool, explain: bool) -> dict[str, Any]:
    """The JSON schema of one answer: the label(s) as an enum, then confidence, reason."""
    choice: dict[str, Any] = {"type": "string", "enum": list(schema.labels)}
    key = "labels" if schema.multi else "label"
    properties: dict[str, Any] = {key: {"type": "array", "items": choice} if schema.multi
                                  else choice}
    if verbalized:
        properties["confidence"] = {"type": "integer"}
    if explain:
        properties["explanation"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _answer_form(schema: LabelSchema, structured: bool, verbalized: bool,
                 explain: bool) -> str:
    what = ("every label that applies, separated by commas (or none)" if schema.multi
            else "exactly one of the labels")
    sure = "a whole number from 0 to 100: how likely it is that your answer is right"
    why = "one sentence saying why"
    key = "labels" if schema.multi else "label"
    if structured:
        parts = [f'"{key}": ' + ("[the labels that apply]" if schema.multi else
                                 "<one of the labels>")]
        parts += [f'"confidence": <{sure}>'] if verbalized else []
        parts += [f'"explanation": "<{why}>"'] if explain else []
        return "Answer with a JSON object: {" + ", ".join(parts) + "}"
    lines = [f"{key.capitalize()}: <{what}>"]
    lines += [f"Confidence: <{sure}>"] if verbalized else []
    lines += [f"Explanation: <{why}>"] if explain else []
    return "Answer in exactly this form:\n" + "\n".join(lines)


def prompt_for(schema: LabelSchema, text: str, form: str) -> list[dict[str, str]]:
    """The annotation request: task, labels with descriptions, the text, the answer form."""
    listed = "\n".join(f"- {name}: {about}" if about else f"- {name}"
                       for name, about in schema.labels.items())
    rule = ("Several labels may apply; choose all that do, or none." if schema.multi
            else "Choose the single label that fits best.")
    user = f"{schema.task}\n\nLabels:\n{listed}\n{rule}\n\nText:\n{text}\n\n{form}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def unknown_because(probabilities: dict[str, float | None], ctx: StepContext) -> str:
    """Why a label's first-token probability is unknown (also counted in the step's notes)."""
    shared = ambiguous(probabilities)
    why = (f"the first token begins several labels ({', '.join(shared)})" if shared
           else "no first-token alternative begins a label")
    ctx.stats.notes[f"logprob unknown: {why.split(' (')[0]}"] += 1
    return why


class LLMLabel(Each[LabelOptions]):
    """Labels each record k times against a label schema and keeps the majority label with
    its vote share and vote entropy (and, on request, the model's stated confidence, the
    label's first-token probability and a reason); answers outside the schema are failures."""

    Options: ClassVar[type[StepOptions]] = LabelOptions
    LOGPROB_SAMPLING: ClassVar[Sampling] = Sampling(temperature=0.0, max_tokens=4)

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        self.schema = load_schema(o.labels, o.schema_file, o.multi_label, o.task)
        if o.logprobs and self.schema.multi:
            raise ConfigError("logprob confidence needs a single-label schema",
                              field="logprobs")

    def requires(self) -> Requirements:
        return {self.options.field: str}

    def provides(self) -> set[str]:
        found = {"labels" if self.schema.multi else "label", "confidence", "votes"}
        return found | ({"explanation"} if self.options.explain else set())

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, json_schema=self.options.structured is True,
                     logprobs=self.options.logprobs)]

    def structured(self, ctx: StepContext) -> bool:
        """Whether answers are JSON under a schema (the option, else the backend's ability)."""
        chosen = self.options.structured
        return ctx.client().backend.supports("json_schema") if chosen is None else chosen

    async def sample(self, record: Record, text: str, index: int, structured: bool,
                     ctx: StepContext) -> tuple[Vote, Reply]:
        """One vote (invalid votes carry their error), with its reply."""
        o = self.options
        form = _answer_form(self.schema, structured, o.verbalized, o.explain)
        reply = await ctx.generate(
            prompt_for(self.schema, text, form), o.sampling,
            seed=ctx.seed_for(record, "vote", index),
            schema=json_schema(self.schema, o.verbalized, o.explain) if structured else None)
        read = read_json if structured else read_text
        try:
            return read(reply.text, self.schema, o.verbalized, o.explain), reply
        except ParseError as exc:
            return Vote(None, error=str(exc)), reply

    async def logprob(self, record: Record, text: str, ctx: StepContext
                      ) -> tuple[dict[str, float | None], Reply]:
        """Label probabilities from the first token of a greedy label-only answer."""
        form = "Answer with the label only, spelled as listed."
        reply = await ctx.generate(prompt_for(self.schema, text, form), self.LOGPROB_SAMPLING,
                                   seed=ctx.seed_for(record, "logprob"), logprobs=True,
                                   top_logprobs=TOP)
        first = reply.completions[0].top_logprobs
        return label_probabilities(first[0] if first else {}, list(self.schema.labels)), reply

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        text = text_field(record, o.field)
        structured = self.structured(ctx)
        sampled = await asyncio.gather(*(self.sample(record, text, i, structured, ctx)
                                         for i in range(o.k)))
        votes = [vote for vote, _ in sampled]
        replies = [reply for _, reply in sampled]
        if all(vote.labels is None for vote in votes):
            raise ParseError(f"no valid answer in {o.k} samples: {votes[0].error}",
                             raw=[reply.text for reply in replies])
        result = tally([vote.labels for vote in votes], list(self.schema.labels))
        confidence: dict[str, Any] = {"vote_share": round(result.vote_share, 4),
                                      "entropy": result.entropy}
        agreeing = [vote for vote in votes if vote.labels == result.labels]
        if o.verbalized:
            stated = [vote.confidence for vote in agreeing if vote.confidence is not None]
            confidence["verbalized"] = round(sum(stated) / len(stated) / 100, 4)
        if o.logprobs:
            probabilities, reply = await self.logprob(record, text, ctx)
            replies.append(reply)
            found = probabilities.get(result.labels[0]) if probabilities else None
            confidence["logprob"] = None if found is None else round(found, 4)
            if found is None:
                confidence["logprob_unknown"] = unknown_because(probabilities, ctx)
        invalid = [{"vote": index + 1, "error": vote.error, "raw": reply.text}
                   for index, (vote, reply) in enumerate(sampled) if vote.labels is None]
        if invalid:
            confidence["invalid"] = len(invalid)
        fields: Record = {**content(record), "confidence": confidence, "votes": result.votes}
        if invalid:
            fields["invalid_votes"] = invalid
        if self.schema.multi:
            fields["labels"] = list(result.labels)
        else:
            fields["label"] = result.labels[0]
        if o.explain:
            fields["explanation"] = next((v.explanation for v in agreeing if v.explanation),
                                         None)
        fields["_meta"] = {"labeled_by": {"kind": "model", "model": replies[0].model,
                                          "samples": o.k}}
        return [ctx.derive([record], fields, 0, *replies)]
