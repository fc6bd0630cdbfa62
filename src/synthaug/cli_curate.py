"""Curation verbs of the command line: dedup, decontaminate, filter, measure, report.

Each runs a one- or few-step pipeline over any JSONL dataset (or a run folder) with the
same executor, output files and manifest as `synthaug run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from synthaug.errors import SynthaugError
from synthaug.executors.local import LocalExecutor, RunConfig
from synthaug.io import records_file
from synthaug.pipeline import BackendSpec, Pipeline
from synthaug.steps.base import AnyStep

console = Console(stderr=True)
Fields = Annotated[list[str] | None, typer.Option("--field", help="Text field (repeatable).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Data = Annotated[Path, typer.Argument(help="A JSONL file or a synthaug output folder.")]


def _fields(dataset: Path, fields: list[str] | None) -> list[str]:
    if fields:
        return fields
    from synthaug.measure.dataset import text_fields

    with records_file(dataset).open(encoding="utf-8") as handle:
        first = [json.loads(line) for _, line in zip(range(200), handle, strict=False)]
    return (text_fields(first) or ["text"])[:2]


def _run(name: str, steps: list[AnyStep], dataset: Path, out: Path,
         backends: dict[str, BackendSpec] | None = None) -> None:
    pipeline = Pipeline.from_steps(*steps, name=name, **({"backends": backends}
                                                          if backends else {}))
    try:
        state = LocalExecutor(RunConfig(out_dir=out, input_path=records_file(dataset),
                                        overwrite=True)).run(pipeline)
    except SynthaugError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for stats in state.steps:
        console.print(f"{stats.label}: in {stats.inputs}, out {stats.outputs}, dropped "
                      f"{dict(stats.dropped)}, notes {dict(stats.notes)}")
    console.print(f"records: {out / 'records.jsonl'}; dropped rows: {out / 'dropped.jsonl'}")


def dedup(
    dataset: Data, out: Out = Path("dedup-out"), fields: Fields = None,
    method: Annotated[str, typer.Option(help="exact, minhash, semantic, or all")] = "all",
    threshold: Annotated[float, typer.Option(help="MinHash Jaccard threshold.")] = 0.8,
    eps: Annotated[float, typer.Option(help="SemDeDup: drop if cosine > 1 - eps.")] = 0.05,
    workers: Annotated[int, typer.Option(help="MinHash worker processes.")] = 1,
) -> None:
    """Remove exact, near (MinHash-LSH) and semantic (SemDeDup) duplicates."""
    from synthaug.steps.curate.dedup import ExactDedup, MinHashDedup
    from synthaug.steps.curate.semantic import SemanticDedup

    names = _fields(dataset, fields)
    chosen: dict[str, AnyStep] = {
        "exact": ExactDedup(fields=names),
        "minhash": MinHashDedup(fields=names, threshold=threshold, workers=workers),
        "semantic": SemanticDedup(fields=names, eps=eps)}
    if method != "all" and method not in chosen:
        raise typer.BadParameter(f"--method must be one of {[*chosen, 'all']}")
    _run("dedup", list(chosen.values()) if method == "all" else [chosen[method]], dataset, out)


def decontaminate(
    dataset: Data, out: Out = Path("decontaminated"), fields: Fields = None,
    benchmark: Annotated[list[str] | None, typer.Option(
        help="gsm8k, humaneval or a JSONL path (repeatable).")] = None,
    ngram: Annotated[int, typer.Option(help="n-gram size.")] = 13,
    action: Annotated[str, typer.Option(help="drop or flag.")] = "drop",
    judge_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible URL of an LLM judge for embedding candidates.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name.")] = None,
) -> None:
    """Find benchmark leaks by n-gram overlap, embedding neighbours and an optional judge."""
    from synthaug.steps.curate.decontaminate import Decontaminate

    options: dict[str, Any] = {"fields": _fields(dataset, fields), "ngram": ngram,
                               "action": action,
                               "benchmarks": benchmark or ["gsm8k", "humaneval"]}
    backends = None
    if judge_url:
        options["judge"] = "judge"
        backends = {"judge": BackendSpec(use="openai", with_={"base_url": judge_url,
                                                              "model": judge_model})}
    _run("decontaminate", [Decontaminate(**options)], dataset, out, backends)


def filter_(
    dataset: Data, out: Out = Path("filtered"), fields: Fields = None,
    min_words: Annotated[int, typer.Option(help="Least words.")] = 1,
    max_words: Annotated[int | None, typer.Option(help="Most words.")] = None,
    language: Annotated[list[str] | None, typer.Option(help="Languages to keep.")] = None,
    pii: Annotated[bool, typer.Option(help="Redact PII.")] = False,
) -> None:
    """Length, repetition, refusal, non-printable and language filters (+ PII redaction)."""
    from synthaug.steps.curate import quality
    from synthaug.steps.curate.pii import PIIRedact
    from synthaug.steps.curate.text_filters import LengthFilter

    names = _fields(dataset, fields)
    steps: list[AnyStep] = [LengthFilter(field=names[0], min_words=min_words, max_words=max_words),
                         quality.RepetitionFilter(fields=names),
                         quality.RefusalFilter(fields=names),
                         quality.NonPrintableFilter(fields=names)]
    if language:
        steps.append(quality.LanguageFilter(fields=names, languages=language))
    if pii:
        steps.append(PIIRedact(fields=names))
    _run("filter", steps, dataset, out)


def measure(
    dataset: Data, fields: Fields = None,
    reference: Annotated[Path | None, typer.Option(help="A reference JSONL.")] = None,
    group_by: Annotated[str | None, typer.Option(help="Field to count per value.")] = None,
) -> None:
    """Print diversity and coverage measures as JSON."""
    from synthaug.io import load_jsonl
    from synthaug.measure.dataset import measure as compute

    result = compute(load_jsonl(records_file(dataset)), fields=fields,
                     reference=load_jsonl(reference) if reference else None, group_by=group_by)
    print(json.dumps(result, indent=2))


def report(
    dataset: Data, out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="HTML file (default: DATASET/report.html).")] = None,
    fields: Fields = None,
    reference: Annotated[Path | None, typer.Option(help="A reference JSONL.")] = None,
    group_by: Annotated[str | None, typer.Option(help="Field to count per value.")] = None,
) -> None:
    """Write one self-contained HTML quality report."""
    from synthaug.report.html import write_report

    path = write_report(dataset, out, fields=fields, reference=reference, group_by=group_by)
    console.print(f"report: {path}")


COMMANDS = {"dedup": dedup, "decontaminate": decontaminate, "filter": filter_,
            "measure": measure, "report": report}
