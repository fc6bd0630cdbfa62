"""CORE (Dixit et al. 2022, arXiv:2210.04873): retrieve label-flipping excerpts from an
unlabelled corpus, then have a model edit the input into a counterfactual with the target
label, few-shot, conditioned on those excerpts.

- `core-retrieve`: the corpus (JSONL or text; documents split into sentence excerpts) is
  embedded once with a shipped sentence embedder; for each labelled input and each target
  label, the `pool` excerpts nearest the input (cosine) are re-ranked by their similarity to
  the input plus `flip_weight` times how much nearer they are to the target label's
  description than to the input's own label's, and the top `k` are kept in `excerpts`.
  This stands in for the paper's bi-encoder trained contrastively on counterfactual pairs.
- `core-edit`: the editing prompt (an instruction, `shots` demonstrations of using excerpts
  to edit, then the input with its label, its excerpts and the target label) asks for a
  minimal edit; `show: words` gives the excerpts' content words instead of the excerpts, as
  the authors' released prompt does. An edit that is the input again is dropped.

Output of `core-edit`: the edited text in `field`, `label` = the target label, with
`original_<field>`, `original_label`, `target_label` and `excerpts` kept.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from synthaug.errors import ConfigError, RecordError
from synthaug.records import Record, content
from synthaug.steps.augment.counterfactual import (
    ORIGINAL,
    check_targets,
    label_schema,
    read_lines,
    record_label,
    sentences,
    target_labels,
    unchanged,
    words,
)
from synthaug.steps.base import LLMOptions, LLMStep, Map, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.sampling import load_data
from synthaug.steps.llm import Prompt, Reply, Sampling
from synthaug.template import text_field

if TYPE_CHECKING:
    import numpy as np

STOPWORDS = words(
    "a an the and or but if so of to in on at by for with from as is are was were be been "
    "being am it its this that these those i me my we our you your he him his she her they "
    "them their what which who whom there here than then too very just not no nor can could "
    "will would shall should may might must do does did have has had about into over under "
    "again once all any both each few more most other some such only own same s t don now "
    "up down out off")


class RetrieveOptions(StepOptions):
    """Options of core-retrieve."""

    corpus: str  # JSONL (corpus_field) or text file, a path or a shipped data file
    corpus_field: str = "text"
    split_sentences: bool = True  # excerpts are the corpus documents' sentences
    embedder: str = "static"
    field: str = "text"
    label_field: str = "label"
    labels: dict[str, str] | list[str]  # name: description (embedded for the flip score)
    targets: list[str] | None = None  # labels to flip to (default: every other label)
    pool: int = Field(20, ge=1)  # nearest excerpts considered (the authors' code: 20)
    k: int = Field(4, ge=1)  # excerpts kept per input and target
    flip_weight: float = Field(1.0, ge=0.0)  # 0: plain nearest neighbours


class CoreRetrieve(Map[RetrieveOptions]):
    """Adds, per target label, the corpus excerpts nearest the input that lean to the target
    label (one output record per target label)."""

    Options: ClassVar[type[StepOptions]] = RetrieveOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.schema = label_schema(self.options.labels, "")
        self.targets = check_targets(self.options.targets, self.schema)
        self.excerpts: list[str] = []
        self.matrix: np.ndarray | None = None
        self.label_vectors: dict[str, np.ndarray] = {}

    def requires(self) -> Requirements:
        return {self.options.field: str, self.options.label_field: (str, int, bool)}

    def provides(self) -> set[str]:
        return {"original_label", "target_label", "excerpts", "excerpt_scores"}

    def prepare(self) -> None:
        self.load()

    def load(self) -> None:
        """Read, split and embed the corpus and the label descriptions (once)."""
        if self.matrix is not None:
            return
        from synthaug.embed import get_embedder

        o = self.options
        texts = read_lines(o.corpus, o.corpus_field)
        found = [s for t in texts for s in sentences(t)] if o.split_sentences else texts
        self.excerpts = list(dict.fromkeys(found))
        embedder = get_embedder(o.embedder)
        self.matrix = embedder.encode(self.excerpts)
        names = list(self.schema.labels)
        described = [f"{name}: {about}" if about else name
                     for name, about in self.schema.labels.items()]
        self.label_vectors = dict(zip(names, embedder.encode(described), strict=True))

    def ranked(self, text: str, label: str, target: str) -> list[tuple[str, float]]:
        """The top-k excerpts for flipping `text` from `label` to `target`, with scores."""
        from synthaug.embed import get_embedder

        o = self.options
        assert self.matrix is not None
        query = get_embedder(o.embedder).encode([text])[0]
        near = self.matrix @ query
        lean = self.matrix @ (self.label_vectors[target] - self.label_vectors[label])
        order = [i for i in near.argsort()[::-1] if not unchanged(self.excerpts[i], text)]
        pool = order[:o.pool]
        scored = sorted(pool, key=lambda i: -(near[i] + o.flip_weight * lean[i]))
        return [(self.excerpts[i], round(float(near[i] + o.flip_weight * lean[i]), 4))
                for i in scored[:o.k]]

    def apply(self, record: Record, ctx: StepContext) -> list[Record]:
        o = self.options
        self.load()
        text = text_field(record, o.field)
        label = record_label(record, o.label_field, self.schema)
        outputs = []
        targets = target_labels(label, self.schema, self.targets)
        if not targets:
            ctx.drop(record, "no target label", f"its label {label} is the only target")
        for target in targets:
            found = self.ranked(text, label, target)
            outputs.append({**content(record), o.label_field: label, "original_label": label,
                            "target_label": target, "excerpts": [e for e, _ in found],
                            "excerpt_scores": [s for _, s in found]})
        return outputs


def content_words(excerpts: list[str], text: str, limit: int) -> list[str]:
    """Words of the excerpts that are neither stopwords nor in `text`, first seen first."""
    seen = {w.casefold() for w in re.findall(r"[\w'-]+", text)}
    words: list[str] = []
    for excerpt in excerpts:
        for word in re.findall(r"[A-Za-z][\w'-]*", excerpt):
            key = word.casefold()
            if key not in STOPWORDS and key not in seen:
                seen.add(key)
                words.append(key)
    return words[:limit]


DEMO_FIELDS = ("text", "label", "excerpts", "target", "edit")


def load_demos(name: str) -> list[dict[str, Any]]:
    """Editing demonstrations: objects with text, label, excerpts (a list), target, edit."""
    found = load_data(name)
    if not isinstance(found, list) or not found:
        raise ConfigError("expected a non-empty list of demonstrations", file=name)
    for number, demo in enumerate(found, 1):
        missing = [key for key in DEMO_FIELDS if not isinstance(demo, dict) or not demo.get(key)]
        if missing or not isinstance(demo["excerpts"], list):
            raise ConfigError(f"demonstration {number} needs {', '.join(DEMO_FIELDS)} "
                              "(excerpts a list)", file=name, field=(missing or ["excerpts"])[0])
    return found


class EditOptions(LLMOptions):
    """Options of core-edit."""

    field: str = "text"
    label_field: str = "label"
    kind: str = "text"  # what the inputs are, e.g. "movie review"
    demos: str = "core_demos.jsonl"
    shots: int = Field(2, ge=0)  # demonstrations in the prompt (the paper: 2)
    show: Literal["excerpts", "words"] = "excerpts"
    max_words: int = Field(12, ge=1)  # with show: words
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=256)


class CoreEdit(LLMStep[EditOptions]):
    """Edits each input minimally into one with its target label, shown the excerpts."""

    Options: ClassVar[type[StepOptions]] = EditOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.demos = load_demos(self.options.demos)[:self.options.shots]

    def requires(self) -> Requirements:
        o = self.options
        return {o.field: str, o.label_field: (str, int, bool), "target_label": str,
                "excerpts": list}

    def provides(self) -> set[str]:
        return {ORIGINAL + self.options.field, "original_label", "target_label"}

    def block(self, text: str, label: str, excerpts: list[str], target: str) -> str:
        """One example: the input, its label, the retrieved context, the target label."""
        o = self.options
        if o.show == "words":
            hint = "Words from related excerpts: " + ", ".join(
                content_words(excerpts, text, o.max_words))
        else:
            hint = "Related excerpts:\n" + "\n".join(f"- {e}" for e in excerpts)
        kind = o.kind[:1].upper() + o.kind[1:]
        return (f"{kind}: {text}\nLabel: {label}\n{hint}\nTarget label: {target}\n"
                f"Edited {o.kind}:")

    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        o = self.options
        excerpts = [str(e) for e in record["excerpts"]]
        if not excerpts:
            raise RecordError("excerpts", "no excerpt was retrieved")
        rule = (f"Edit the {o.kind} with as few changes as possible so that the target label "
                f"describes it. Take wording from the related excerpts where it helps the "
                f"change; keep everything else as it is and add no new facts. Answer with the "
                f"edited {o.kind} alone, on one line.")
        shots = [self.block(d["text"], d["label"], [str(e) for e in d["excerpts"]],
                            d["target"]) + " " + d["edit"] for d in self.demos]
        query = self.block(text_field(record, o.field), str(record[o.label_field]), excerpts,
                           str(record["target_label"]))
        return [{"role": "user", "content": "\n\n".join([rule, *shots, query])}]

    def edited(self, text: str) -> str:
        """The first non-empty line of a reply, without an 'Edited ...:' label."""
        line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
        return re.sub(rf"^(?:edited\s+)?{re.escape(self.options.kind)}\s*:\s*", "", line,
                      flags=re.IGNORECASE).strip()

    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> list[Record]:
        o = self.options
        original = text_field(record, o.field)
        outputs, seen = [], set()
        for text in reply.texts:
            edit = self.edited(text)
            if unchanged(edit, original):
                ctx.drop(record, "edit unchanged", text[:200])
                continue
            if edit in seen:
                ctx.drop(record, "duplicate edit", edit[:200])
                continue
            seen.add(edit)
            outputs.append({**content(record), o.field: edit, ORIGINAL + o.field: original,
                            "original_label": record.get("original_label",
                                                         record[o.label_field]),
                            o.label_field: record["target_label"],
                            "target_label": record["target_label"]})
        return outputs
