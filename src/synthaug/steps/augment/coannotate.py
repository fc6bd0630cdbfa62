"""co-annotate: route the records a model labeled least surely to people (CoAnnotating, Li et
al. 2023, EMNLP, arXiv:2310.15638).

1. Each record labeled by `llm-label` carries a confidence; its uncertainty is read from the
   one chosen by `uncertainty`: `entropy` (of the k self-consistency outcomes, in bits, as
   the paper's entropy over several answers), `vote_share` (1 - the kept label's share),
   `verbalized` (1 - the model's stated confidence: the paper's self-evaluation) or `logprob`
   (1 - the label's first-token probability). A record whose chosen confidence is null (e.g.
   no logprobs came back) counts as the most uncertain.
2. Allocation, by `threshold` (records whose uncertainty exceeds it go to people), by a
   human `budget` (the N most uncertain; `budget_share`: a share of the stream), or both (those
   above the threshold, at most the budget, most uncertain first). Records of equal
   uncertainty are ordered by a seeded draw per record, never by their place in the stream.
3. Every record goes on with `route` (`human` or `model`) and `uncertainty`; routed ones keep
   the model's label until a person's answer is merged (`synthaug annotate import`). The
   routed records are also written as Label Studio import tasks with the model's label as a
   pre-annotation (OUT/annotation/tasks.json, most uncertain first, with config.xml and
   schema.json).

A Global step: choosing the N most uncertain needs the whole stream, so records are held
until it ends (memory grows with the stream) and then emitted in their input order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from synthaug.errors import RecordError
from synthaug.labelstudio import write_handoff
from synthaug.records import Record
from synthaug.steps.augment.label import DEFAULT_TASK, load_schema
from synthaug.steps.base import Global, Requirements, StepOptions
from synthaug.steps.context import StepContext

Uncertainty = Literal["entropy", "vote_share", "verbalized", "logprob"]


class CoAnnotateOptions(StepOptions):
    """Options of co-annotate."""

    uncertainty: Uncertainty = "entropy"  # which confidence of llm-label decides
    threshold: float | None = Field(None, ge=0)  # route records whose uncertainty exceeds it
    budget: int | None = Field(None, ge=0)  # at most this many records go to people
    budget_share: float | None = Field(None, ge=0, le=1)  # ... as a share of the records
    field: str = "text"  # the text people read
    labels: dict[str, str] | list[str] | None = None  # the schema (as llm-label's)
    schema_file: str | None = None
    multi_label: bool = False
    task: str = DEFAULT_TASK
    handoff_dir: str = "annotation"  # under the run's output folder; "" writes no tasks

    @model_validator(mode="after")
    def _a_rule(self) -> CoAnnotateOptions:
        if self.threshold is None and self.budget is None and self.budget_share is None:
            raise ValueError("give a threshold, a budget or a budget_share")
        if self.budget is not None and self.budget_share is not None:
            raise ValueError("give budget or budget_share, not both")
        if (self.labels is None) == (self.schema_file is None):
            raise ValueError("give exactly one of labels and schema_file (the label schema "
                             "of the Label Studio config)")
        return self


def uncertainty_of(record: Record, kind: Uncertainty) -> float:
    """The record's uncertainty under `kind` (inf when its confidence of that kind is null);
    RecordError when the record has no such confidence."""
    confidence = record.get("confidence")
    if not isinstance(confidence, dict) or kind not in confidence:
        option = {"verbalized": " with verbalized: true", "logprob": " with logprobs: true"}
        raise RecordError(f"confidence.{kind}", f"no confidence.{kind}: label the records "
                          f"with llm-label first{option.get(kind, '')}")
    value = confidence[kind]
    if value is None:
        return math.inf
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RecordError(f"confidence.{kind}", f"must be a number, got {value!r}")
    return float(value) if kind == "entropy" else 1.0 - float(value)


def routed(uncertainties: list[float], tiebreak: list[float], threshold: float | None,
           budget: int | None) -> set[int]:
    """Indexes of the records that go to people: above the threshold (if any), most
    uncertain first, at most `budget` (if any); ties ordered by `tiebreak`."""
    order = sorted(range(len(uncertainties)), key=lambda i: (-uncertainties[i], tiebreak[i]))
    if threshold is not None:
        order = [i for i in order if uncertainties[i] > threshold]
    return set(order if budget is None else order[:budget])


class CoAnnotate(Global[CoAnnotateOptions]):
    """Marks each labeled record `route: human` or `route: model` by its uncertainty (a
    threshold and/or a human budget over the whole stream) and writes the routed ones as
    Label Studio tasks with the model's label as a pre-annotation."""

    Options: ClassVar[type[StepOptions]] = CoAnnotateOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        self.schema = load_schema(o.labels, o.schema_file, o.multi_label, o.task)
        self._held: list[tuple[Record, float]] = []

    def requires(self) -> Requirements:
        return {"confidence": dict, self.options.field: str}

    def provides(self) -> set[str]:
        return {"route", "uncertainty"}

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        self._held.append((record, uncertainty_of(record, self.options.uncertainty)))
        return ()

    def budget(self, total: int) -> int | None:
        """How many records people may label at most (None: no cap)."""
        o = self.options
        if o.budget_share is not None:
            return round(o.budget_share * total)
        return o.budget

    def finish(self, ctx: StepContext) -> Iterable[Record]:
        held, self._held = self._held, []
        values = [value for _, value in held]
        ties = [ctx.rng(record, "route-tie").random() for record, _ in held]
        chosen = routed(values, ties, self.options.threshold, self.budget(len(held)))
        out: list[Record] = []
        for index, (record, value) in enumerate(held):
            route = "human" if index in chosen else "model"
            ctx.stats.notes[f"routed to {'humans' if route == 'human' else 'the model'}"] += 1
            shown = None if math.isinf(value) else round(value, 4)
            out.append({**record, "route": route, "uncertainty": shown})
        if self.options.handoff_dir and ctx.out_dir is not None:
            first = sorted(chosen, key=lambda i: (-values[i], ties[i]))  # most uncertain first
            write_handoff(Path(ctx.out_dir) / self.options.handoff_dir,
                          [out[i] for i in first], self.schema, self.options.field)
        return out
