"""Knowledge-graph triples to text and to question-answer pairs (KMLM, Liu et al. 2022,
arXiv:2111.10962; HuaTuo, Wang et al. 2023, arXiv:2304.06975).

    kg-verbalize  triples grouped by subject (groups of at most `max_triples`; a subject
                  with more gets several) -> a text: `template` (KMLM: each triple written
                  as 'subject relation object.', no model) or `model` (the model writes a
                  paragraph from the triples, kept only when it names the subject and every
                  object)
    kg-qa         triples grouped by subject -> question-answer pairs the model writes from
                  them (HuaTuo: knowledge instances drawn from the graph, QA generated from
                  them), kept only when the answer states an object of the subject's triples,
                  the question names the subject and does not already state that object

Triples come from the step's input records and/or `triples_file` (JSONL objects or TSV lines
`subject<TAB>relation<TAB>object`, an optional header line); a malformed line or record is a
reject naming the file, line and field.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import ConfigError, ParseError, RecordError
from synthaug.records import META, Record
from synthaug.steps.base import Generator, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Sampling, Uses

FIELDS = ("subject", "relation", "object")
_SYSTEM = ("You turn facts from a knowledge base into training text. You use only the facts "
           "you are given and add no other claims.")


@dataclass(frozen=True)
class Triple:
    """One fact: subject, relation, object."""

    subject: str
    relation: str
    object: str

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "relation": self.relation, "object": self.object}

    def sentence(self) -> str:
        """The KMLM-style verbalization: the three parts in order, as one sentence."""
        return f"{self.subject} {self.relation} {self.object}."


def triple_of(record: Record, names: tuple[str, str, str]) -> Triple:
    """The triple a record holds under the field `names`; RecordError naming the field."""
    parts: list[str] = []
    for name in names:
        value = record.get(name)
        if value is None:
            raise RecordError(name, f"missing field '{name}'")
        if not isinstance(value, str):
            raise RecordError(name, f"field '{name}' must be a string")
        if not value.strip():
            raise RecordError(name, f"field '{name}' is empty")
        parts.append(" ".join(value.split()))
    return Triple(*parts)


def _line_record(path: str, number: int, fields: dict[str, Any]) -> Record:
    return {**fields, META: {"source": f"{path}:{number}"}}


def read_triples(path: str, names: tuple[str, str, str]
                 ) -> tuple[list[Record], list[tuple[Record, str, str | None]]]:
    """The records of a JSONL or TSV triple file, and its malformed lines as
    (record, reason, field); each record's `_meta.source` is 'file:line'."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the triple file: {exc}", file=path,
                          field="triples_file") from None
    tsv = not path.endswith(".jsonl")
    good: list[Record] = []
    bad: list[tuple[Record, str, str | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (tsv and number == 1 and
                                [c.strip().lower() for c in line.split("\t")] == list(FIELDS)):
            continue
        if tsv:
            cells = line.split("\t")
            if len(cells) != 3:
                bad.append((_line_record(path, number, {"line": line}),
                            f"expected 3 tab-separated columns, got {len(cells)}", None))
                continue
            good.append(_line_record(path, number, dict(zip(names, cells, strict=True))))
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            bad.append((_line_record(path, number, {"line": line}), f"malformed JSON: {exc}",
                        None))
            continue
        if not isinstance(value, dict):
            bad.append((_line_record(path, number, {"line": line}), "expected a JSON object",
                        None))
            continue
        good.append(_line_record(path, number, value))
    return good, bad


def grounding_key(text: str) -> str:
    """Text compared for grounding: case-folded words, single-spaced."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def mentions(text: str, part: str) -> bool:
    """Whether `text` contains `part` as whole words (case and punctuation ignored)."""
    wanted = grounding_key(part)
    return bool(wanted) and f" {wanted} " in f" {grounding_key(text)} "


def fact_list(triples: list[Triple]) -> str:
    """The facts as the prompts show them, one per line."""
    return "\n".join(f"- ({t.subject}; {t.relation}; {t.object})" for t in triples)


class KGOptions(StepOptions):
    """Options every triple step has."""

    subject_field: str = "subject"
    relation_field: str = "relation"
    object_field: str = "object"
    triples_file: str | None = None  # JSONL or TSV triples, read besides the input records
    max_triples: int = Field(8, ge=1)  # facts per group; a subject with more gets several


# subject, part (0, 1, ... when a subject's triples fill several groups), triples, records
Group = tuple[str, int, list[Triple], list[Record]]


def split(subject: str, triples: list[Triple], records: list[Record], size: int
          ) -> list[Group]:
    """A subject's triples in groups of at most `size`, in order, so none is lost."""
    return [(subject, part, triples[at:at + size], records[at:at + size])
            for part, at in enumerate(range(0, len(triples), size))]


def salt(subject: str, part: int) -> tuple[str | int, ...]:
    """The seed salt of a group: its subject, and its part after the first."""
    return (subject, part) if part else (subject,)


class _TripleGroups(Generator[KGOptions]):
    """Collects valid triples, groups them by subject, and makes records per group."""

    Options: ClassVar[type[StepOptions]] = KGOptions

    def requires(self) -> Requirements:
        return set()  # each record is checked here, so a bad one is a reject with its field

    def names(self) -> tuple[str, str, str]:
        o = self.options
        return o.subject_field, o.relation_field, o.object_field

    def groups(self, pool: list[Record], ctx: StepContext) -> list[Group]:
        """Subject groups in first-seen order, each subject's triples split into groups of at
        most `max_triples`; malformed records rejected, repeats dropped."""
        records = list(pool)
        if self.options.triples_file:
            good, bad = read_triples(self.options.triples_file, self.names())
            records += good
            for record, reason, field in bad:
                ctx.reject(record, reason, field)
        found: dict[str, tuple[str, list[Triple], list[Record]]] = {}
        seen: set[tuple[str, str, str]] = set()
        for record in records:
            try:
                triple = triple_of(record, self.names())
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            same = (triple.subject.casefold(), triple.relation.casefold(),
                    triple.object.casefold())
            if same in seen:
                ctx.drop(record, "repeated triple")
                continue
            seen.add(same)
            _, triples, parents = found.setdefault(same[0], (triple.subject, [], []))
            triples.append(triple)
            parents.append(record)
        return [group for subject, triples, parents in found.values()
                for group in split(subject, triples, parents, self.options.max_triples)]

    async def make(self, group: Group, index: int, ctx: StepContext) -> list[Record]:
        """The records made from one subject's triples."""
        raise NotImplementedError

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        groups = self.groups(pool, ctx)
        done = await asyncio.gather(*(
            ctx.attempt(self.make(group, i, ctx), {"subject": group[0], "part": group[1]})
            for i, group in enumerate(groups)))
        for made in done:
            for record in made or ():
                yield record

    def parents(self, records: list[Record]) -> list[Record]:
        """The triple records that have ids (input records; file lines have none)."""
        return [r for r in records if r.get(META, {}).get("id")]


class VerbalizeOptions(KGOptions):
    """Options of kg-verbalize."""

    backend: str = "default"
    mode: Literal["template", "model"] = "model"
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=256)


class KGVerbalize(_TripleGroups):
    """One text per subject from its triples (template or model), checked for grounding."""

    Options: ClassVar[type[StepOptions]] = VerbalizeOptions

    def provides(self) -> set[str]:
        return {"subject", "triples", "text", "verbalized_by"}

    def uses(self) -> list[Uses]:
        o = self.options
        return [Uses(o.backend)] if isinstance(o, VerbalizeOptions) and o.mode == "model" else []

    def prompt(self, subject: str, triples: list[Triple]) -> Prompt:
        user = (f"Facts about {subject}:\n{fact_list(triples)}\n\nWrite one short paragraph "
                f"that states every fact above in plain sentences. Name {subject} and write "
                f"each fact's last part exactly as given. Add nothing else.")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    async def make(self, group: Group, index: int, ctx: StepContext) -> list[Record]:
        subject, part, triples, records = group
        o = self.options
        assert isinstance(o, VerbalizeOptions)
        fields: dict[str, Any] = {"subject": subject,
                                  "triples": [t.as_dict() for t in triples]}
        if o.mode == "template":
            fields |= {"text": " ".join(t.sentence() for t in triples),
                       "verbalized_by": "template"}
            return [ctx.derive(self.parents(records), fields, index)]
        reply = await ctx.generate(self.prompt(subject, triples), o.sampling,
                                   seed=ctx.seed_for(None, "verbalize", *salt(subject, part)))
        text = " ".join(reply.text.split())
        if not text:
            raise ParseError(f"no text written for {subject!r}", raw=reply.texts)
        fields |= {"text": text, "verbalized_by": "model"}
        record = ctx.derive(self.parents(records), fields, index, reply)
        missing = [t.object for t in triples if not mentions(text, t.object)]
        if not mentions(text, subject) or missing:
            what = f"misses {missing[0]!r}" if missing else f"does not name {subject!r}"
            ctx.drop(record, "ungrounded text", what)
            return []
        return [record]


class QAOptions(KGOptions):
    """Options of kg-qa."""

    backend: str = "default"
    pairs: int = Field(3, ge=1)  # question-answer pairs asked per subject
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=400)


_PAIR = re.compile(r"^\W*question\s*\d*\s*:\s*(.+?)\s*\n+\W*answer\s*\d*\s*:\s*(.+?)\s*$",
                   re.IGNORECASE | re.MULTILINE)


def qa_pairs(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from 'Question: ...' / 'Answer: ...' lines."""
    return [(q.strip(), a.strip()) for q, a in _PAIR.findall(text)]


def support(question: str, answer: str, subject: str, triples: list[Triple]
            ) -> tuple[list[Triple], str]:
    """The triples that support a pair, and why none does: the answer must state a triple's
    object, the question must name the subject and must not state that object itself."""
    if not mentions(question, subject):
        return [], "question does not name the subject"
    stated = [t for t in triples if mentions(answer, t.object)]
    if not stated:
        return [], "answer states no fact of the subject"
    fair = [t for t in stated if not mentions(question, t.object)]
    return fair, "" if fair else "question gives the answer away"


class KGQA(_TripleGroups):
    """Question-answer pairs per subject from its triples; ungrounded pairs are dropped."""

    Options: ClassVar[type[StepOptions]] = QAOptions

    def provides(self) -> set[str]:
        return {"subject", "triples", "question", "answer", "evidence", "messages"}

    def uses(self) -> list[Uses]:
        o = self.options
        return [Uses(o.backend if isinstance(o, QAOptions) else "default")]

    def prompt(self, subject: str, triples: list[Triple], pairs: int) -> Prompt:
        user = (f"Facts about {subject}:\n{fact_list(triples)}\n\nWrite {pairs} questions a "
                f"person might ask about {subject}, each answered by the facts above. Name "
                f"{subject} in every question. Each answer is a full sentence that states the "
                f"fact, writing its last part exactly as given. Use this form:\n"
                f"Question: ...\nAnswer: ...")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    async def make(self, group: Group, index: int, ctx: StepContext) -> list[Record]:
        subject, part, triples, records = group
        o = self.options
        assert isinstance(o, QAOptions)
        reply = await ctx.generate(self.prompt(subject, triples, o.pairs), o.sampling,
                                   seed=ctx.seed_for(None, "qa", *salt(subject, part)))
        pairs = qa_pairs(reply.text)
        if not pairs:
            raise ParseError(f"no 'Question:'/'Answer:' pair for {subject!r}", raw=reply.texts)
        kept: list[Record] = []
        seen: set[str] = set()
        for number, (question, answer) in enumerate(pairs):
            evidence, why = support(question, answer, subject, triples)
            fields = {"subject": subject, "triples": [t.as_dict() for t in triples],
                      "question": question, "answer": answer,
                      "evidence": [t.as_dict() for t in evidence],
                      "messages": [{"role": "user", "content": question},
                                   {"role": "assistant", "content": answer}]}
            record = ctx.derive(self.parents(records), fields, f"{index}.{number}", reply)
            if not why and grounding_key(question) in seen:
                why = "duplicate question"
            if why:
                ctx.drop(record, why)
                continue
            seen.add(grounding_key(question))
            kept.append(record)
        return kept
