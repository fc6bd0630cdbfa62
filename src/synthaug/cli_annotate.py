"""`synthaug annotate`: hand labeled records to people in Label Studio and take their labels back.

    synthaug annotate export DATASET [--to FILE] [--all] [--schema FILE] [--field text]
    synthaug annotate import DATASET --from EXPORT.json [--out DIR] [--schema FILE]

`export` writes Label Studio import tasks (the routed records, `route: human`, or every record
with --all) with the model's label as a pre-annotation, plus config.xml (the labeling config)
and schema.json beside them. `import` reads a Label Studio JSON export, puts each person's
label in place of the model's (kept as `model_label`) and writes DIR/records.jsonl (every
record), DIR/rejects.jsonl (tasks or annotations that could not be merged, with the reason)
and DIR/agreement.json (kappa and confusion, also shown by `synthaug report DIR`).
Exit codes: 0 done, 2 bad input or options, 3 done with rejects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from synthaug.cli_common import OK, PARTIAL, user_errors
from synthaug.errors import ConfigError
from synthaug.io import load_jsonl, records_file
from synthaug.labelstudio import merge, read_export, write_handoff
from synthaug.measure.agreement import label_agreement
from synthaug.records import Record, dumps
from synthaug.steps.augment.label import DEFAULT_TASK, LabelSchema, load_schema

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hand records to people in Label Studio and merge their labels back.")
console = Console(stderr=True)
Data = Annotated[Path, typer.Argument(help="A synthaug output folder or a JSONL file.")]
Schema = Annotated[Path | None, typer.Option(
    "--schema", help="Label schema file (YAML/JSON: labels, multi_label, task); default: "
    "the annotation/schema.json that co-annotate or export wrote.")]


def _folder(dataset: Path) -> Path:
    return dataset if dataset.is_dir() else dataset.parent


def _schema(dataset: Path, given: Path | None) -> LabelSchema:
    path = given or _folder(dataset) / "annotation" / "schema.json"
    if not path.is_file():
        raise ConfigError("no label schema: give --schema FILE (labels, multi_label, task), "
                          "or run co-annotate / annotate export first", file=str(path))
    return load_schema(None, str(path), False, DEFAULT_TASK)


def _records(dataset: Path) -> list[Record]:
    return load_jsonl(records_file(dataset))


@app.command("export")
def export(
    dataset: Data,
    to: Annotated[Path | None, typer.Option(
        "--to", help="Tasks file (default DATASET/annotation/tasks.json).")] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Every record, not only those routed to people.")] = False,
    schema: Schema = None,
    field: Annotated[str, typer.Option(help="The record field people read.")] = "text",
) -> None:
    """Write Label Studio import tasks (model label as pre-annotation) and the config."""
    with user_errors(console):
        chosen = _schema(dataset, schema)
        records = _records(dataset)
        if not every:
            if not any("route" in r for r in records):
                raise ConfigError("no record has a 'route': run co-annotate first, or give "
                                  "--all", file=str(records_file(dataset)))
            records = [r for r in records if r.get("route") == "human"]
        missing = next((i for i, r in enumerate(records) if not isinstance(r.get(field), str)),
                       None)
        if missing is not None:
            raise ConfigError(f"record {missing + 1} has no text field '{field}'",
                              file=str(records_file(dataset)), field=field)
        target = to or _folder(dataset) / "annotation" / "tasks.json"
        path = write_handoff(target.parent, records, chosen, field, target.name)
    console.print(f"{len(records)} tasks: {path}; labeling config: {path.parent / 'config.xml'}")
    raise typer.Exit(OK)


@app.command("import")
def import_(
    dataset: Data,
    source: Annotated[Path, typer.Option(
        "--from", help="A Label Studio export in JSON format.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder (default DATASET/annotated).")] = None,
    schema: Schema = None,
) -> None:
    """Merge the people's labels of a Label Studio export into the dataset."""
    with user_errors(console):
        chosen = _schema(dataset, schema)
        records = _records(dataset)
        merged = merge(records, read_export(source), chosen, str(source))
        target = out or _folder(dataset) / "annotated"
        target.mkdir(parents=True, exist_ok=True)
        agreement = label_agreement(merged.records)
        _write_jsonl(target / "records.jsonl", merged.records)
        _write_jsonl(target / "rejects.jsonl", merged.rejects)
        summary = {"counts": dict(merged.counts), "pending": merged.pending,
                   "agreement": agreement}
        (target / "agreement.json").write_text(json.dumps(summary, indent=1) + "\n",
                                               encoding="utf-8")
    _show(merged.counts, merged.pending, len(merged.rejects), agreement, target)
    raise typer.Exit(PARTIAL if merged.rejects else OK)


def _write_jsonl(path: Path, rows: list[Record]) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(dumps(row) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)


def _show(counts: dict[str, int], pending: list[str], rejects: int,
          agreement: dict[str, object] | None, target: Path) -> None:
    console.print(f"records: {target / 'records.jsonl'}; " + ", ".join(
        f"{n} {what}" for what, n in counts.items()) if counts else "nothing merged")
    if pending:
        console.print(f"{len(pending)} tasks have no annotation yet (their records keep the "
                      "model label)")
    if rejects:
        console.print(f"{rejects} rejects: {target / 'rejects.jsonl'}")
    if agreement:
        pair = agreement["model_vs_human"]
        console.print(f"model vs human: {json.dumps(pair)}; Fleiss (people): "
                      f"{json.dumps(agreement['fleiss'])}; details: "
                      f"{target / 'agreement.json'}")
