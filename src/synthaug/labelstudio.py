"""Label Studio hand-off: the labeling config from a label schema, import tasks with the
model's label as a pre-annotation, and the merge of a Label Studio JSON export back into
the dataset.

    schema ──labeling_config──> config.xml          (Text + Choices, single or multiple)
    records ──task_for──> tasks.json                 (data.synthaug_id, predictions[])
    export.json ──merge──> records with human labels + rejects

A task carries its record's id in `data.synthaug_id`; the merge matches on it. A human label
replaces the model's (`model_label` keeps it), `human_labels` holds each annotator's answer,
and `_meta.labeled_by` says who labeled the record. Nothing is dropped silently: a task that
matches no record, or an annotation outside the schema, becomes a reject row with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from synthaug.errors import ConfigError
from synthaug.records import Record, content, meta
from synthaug.steps.augment.label import LabelSchema

CHOICES = "label"  # the Choices tag's name (from_name of every result)
TEXT = "text"  # the Text tag's name (to_name)
ID_KEY = "synthaug_id"  # the task data key holding the record id
TOOL = "label-studio"


def labeling_config(schema: LabelSchema, field_name: str = "text") -> str:
    """Label Studio's labeling config: the task, the text and one Choices tag whose choices
    are the schema's labels (descriptions as hints); `multiple` for a multi-label schema."""
    mode = "multiple" if schema.multi else "single-radio"
    choices = "\n".join(f"    <Choice value={quoteattr(name)}"
                        + (f" hint={quoteattr(about)}" if about else "") + "/>"
                        for name, about in schema.labels.items())
    return (f"<View>\n  <Header value={quoteattr(schema.task)}/>\n"
            f"  <Text name=\"{TEXT}\" value=\"${field_name}\"/>\n"
            f"  <Choices name=\"{CHOICES}\" toName=\"{TEXT}\" choice=\"{mode}\" "
            f"showInline=\"true\" required=\"true\">\n{choices}\n  </Choices>\n</View>\n")


def model_labels(record: Record, schema: LabelSchema) -> list[str]:
    """The record's model label(s) as a list ([] when the record has none)."""
    found = record.get("labels" if schema.multi else "label")
    if isinstance(found, str):
        return [found]
    return [x for x in found if isinstance(x, str)] if isinstance(found, list) else []


def task_for(record: Record, schema: LabelSchema, field_name: str = "text") -> dict[str, Any]:
    """One import task: the text and record id, and the model's label as a prediction
    (model_version: the labeling model; score: its self-consistency vote share)."""
    data = {field_name: record.get(field_name), ID_KEY: meta(record).get("id")}
    if isinstance(record.get("uncertainty"), (int, float)):
        data["synthaug_uncertainty"] = record["uncertainty"]
    task: dict[str, Any] = {"data": data}
    chosen = model_labels(record, schema)
    if chosen:
        labeler = meta(record).get("labeled_by") or {}
        confidence = record.get("confidence") or {}
        prediction: dict[str, Any] = {
            "model_version": str(labeler.get("model") or meta(record).get("model") or "model"),
            "result": [{"from_name": CHOICES, "to_name": TEXT, "type": "choices",
                        "value": {"choices": chosen}}]}
        if isinstance(confidence.get("vote_share"), (int, float)):
            prediction["score"] = confidence["vote_share"]
        task["predictions"] = [prediction]
    return task


def write_handoff(folder: Path, records: list[Record], schema: LabelSchema,
                  field_name: str = "text", tasks_name: str = "tasks.json") -> Path:
    """Write tasks (JSON list), config.xml and schema.json into `folder`; the tasks path."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [task_for(record, schema, field_name) for record in records]
    _atomic(folder / tasks_name, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    _atomic(folder / "config.xml", labeling_config(schema, field_name))
    _atomic(folder / "schema.json", json.dumps(
        {"labels": schema.labels, "multi_label": schema.multi, "task": schema.task},
        ensure_ascii=False, indent=1) + "\n")
    return folder / tasks_name


def _atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def read_export(path: Path) -> list[dict[str, Any]]:
    """The tasks of a Label Studio JSON export (a list of objects); ConfigError naming the
    file and the task otherwise."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the export: {exc.strerror}", file=str(path)) from None
    except ValueError as exc:
        raise ConfigError(f"not JSON (line {getattr(exc, 'lineno', '?')}): {exc}",
                          file=str(path)) from None
    if not isinstance(found, list):
        raise ConfigError("a Label Studio JSON export is a list of tasks; got "
                          f"{type(found).__name__} (export with the JSON format, not "
                          "JSON_MIN or CSV)", file=str(path))
    for index, task in enumerate(found):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ConfigError("a task must be an object with a 'data' object",
                              file=str(path), field=f"[{index}].data")
    return found


@dataclass
class Answer:
    """One human annotation: who, which label(s), the annotation's id."""

    annotator: str
    labels: tuple[str, ...]
    annotation: Any = None


@dataclass
class Merged:
    """The outcome of a merge: every dataset record (merged or not), rejects, counts."""

    records: list[Record]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    pending: list[str] = field(default_factory=list)  # routed record ids with no annotation


def annotator_of(annotation: dict[str, Any]) -> str:
    """An annotator's name: the email of an expanded user, else 'user N'."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
        return str(who)
    return f"user {who}" if who is not None else "unknown"


def read_answer(annotation: Any, schema: LabelSchema, where: str) -> Answer | str | None:
    """The labels of one annotation (None: cancelled), or the reason it is unusable."""
    if not isinstance(annotation, dict):
        return f"{where}: an annotation must be an object"
    if annotation.get("was_cancelled"):
        return None
    results = annotation.get("result")
    if not isinstance(results, list):
        return f"{where}.result: must be a list"
    picked: list[str] = []
    for number, item in enumerate(results):
        if not isinstance(item, dict) or item.get("type") != "choices" or \
                item.get("from_name") != CHOICES:
            continue
        choices = (item.get("value") or {}).get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return f"{where}.result[{number}].value.choices: must be a list of labels"
        picked += choices
    outside = [c for c in picked if c not in schema.labels]
    if outside:
        return (f"{where}.result: label {outside[0]!r} is not in the schema "
                f"({', '.join(schema.labels)})")
    if not schema.multi and len(picked) != 1:
        return f"{where}.result: a single-label task needs one choice, got {len(picked)}"
    return Answer(annotator_of(annotation), schema.ordered(set(picked)), annotation.get("id"))


def consensus(answers: list[Answer]) -> Answer:
    """The answer most annotators gave (ties: the earliest), with its first annotator."""
    counts = Counter(a.labels for a in answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a.labels] == top)


def apply_answers(record: Record, answers: list[Answer], schema: LabelSchema,
                  task_id: Any) -> Record:
    """The record with the human label in place of the model's (kept as `model_label`)."""
    key = "labels" if schema.multi else "label"
    kept = consensus(answers)
    fields = content(record)
    if f"model_{key}" not in fields:  # a second import keeps the first model label
        fields[f"model_{key}"] = fields.get(key)
    fields[key] = list(kept.labels) if schema.multi else kept.labels[0]
    fields["human_labels"] = {a.annotator: list(a.labels) if schema.multi else a.labels[0]
                              for a in answers}
    earlier = meta(record).get("labeled_by") or {}
    model = earlier.get("model_labeled_by", earlier) if earlier.get("kind") == "human" \
        else earlier
    agreeing = sum(a.labels == kept.labels for a in answers)
    labeled_by = {"kind": "human", "annotator": kept.annotator,
                  "annotators": [a.annotator for a in answers], "tool": TOOL,
                  "task": task_id, "agreement": round(agreeing / len(answers), 4),
                  "model_labeled_by": model}
    return {**fields, "_meta": {**meta(record), "labeled_by": labeled_by}}


def merge(records: list[Record], tasks: list[dict[str, Any]], schema: LabelSchema,
          source: str) -> Merged:
    """Merge the annotations of exported `tasks` into `records` (matched on record id)."""
    by_id = {str(meta(r).get("id")): i for i, r in enumerate(records)}
    out = Merged(list(records))
    seen: set[str] = set()
    for index, task in enumerate(tasks):
        rid = task["data"].get(ID_KEY)
        where = f"task [{index}] (id {task.get('id')})"
        if rid is None or str(rid) not in by_id or str(rid) in seen:
            why = ("no data.synthaug_id: not a task exported by synthaug" if rid is None else
                   f"record {rid} is not in the dataset" if str(rid) not in by_id else
                   f"record {rid} has an earlier task in this export")
            out.rejects.append(_reject(source, where, "data." + ID_KEY, why, task))
            out.counts["unmatched tasks"] += 1
            continue
        seen.add(str(rid))
        answers = _answers(task, schema, source, where, out)
        if not answers:
            out.pending.append(str(rid))
            continue
        position = by_id[str(rid)]
        out.records[position] = apply_answers(out.records[position], answers, schema,
                                              task.get("id"))
        out.counts["records labeled by humans"] += 1
        out.counts["annotations"] += len(answers)
    return out


def _answers(task: dict[str, Any], schema: LabelSchema, source: str, where: str,
             out: Merged) -> list[Answer]:
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        out.rejects.append(_reject(source, where, "annotations", "must be a list", task))
        return []
    answers: list[Answer] = []
    for number, annotation in enumerate(annotations):
        found = read_answer(annotation, schema, f"annotations[{number}]")
        if isinstance(found, str):
            field_name, _, reason = found.partition(": ")
            out.rejects.append(_reject(source, where, field_name, reason, annotation))
            out.counts["rejected annotations"] += 1
        elif found is None:
            out.counts["cancelled annotations"] += 1
        else:
            answers.append(found)
    return answers


def _reject(source: str, where: str, field_name: str, reason: str, row: Any) -> dict[str, Any]:
    return {"step": "annotate-import", "file": source, "task": where, "field": field_name,
            "reason": reason, "record": row}
