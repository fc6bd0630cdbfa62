"""Curation verbs of the command line: dedup, decontaminate, filter, measure, report.

Each runs a one- or few-step pipeline over any JSONL dataset (or a run folder) with the
same executor, output files and manifest as `synthaug run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from synthaug.cli_common import status_code, user_errors
from synthaug.errors import ConfigError
from synthaug.executors.base import Executor, RunConfig
from synthaug.io import decode_line, records_file
from synthaug.overrides import build_executor
from synthaug.pipeline import BackendSpec, Pipeline
from synthaug.records import Record
from synthaug.steps.base import AnyStep

console = Console(stderr=True)
Fields = Annotated[list[str] | None, typer.Option("--field", help="Text field (repeatable).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Data = Annotated[Path, typer.Argument(help="A JSONL file or a synthaug output folder.")]
AGAIN = "interrupted: rerun the same command to start again"
ExecutorName = Annotated[str | None, typer.Option(
    "--executor", help="local (default) or ray: shards over a Ray cluster ($RAY_ADDRESS, or "
    "one started here); dedup is combined across shards.")]
ExecutorOptions = Annotated[list[str] | None, typer.Option(
    "--executor-option", help="Executor option KEY=VALUE, e.g. workers=8 (repeatable).")]


def _fields(dataset: Path, fields: list[str] | None) -> list[str]:
    if fields:
        return fields
    from synthaug.measure.dataset import text_fields

    first: list[Record] = []
    with records_file(dataset).open("rb") as handle:
        for number, raw in zip(range(1, 201), handle, strict=False):
            try:
                value = json.loads(decode_line(raw, first=number == 1))
            except ValueError:
                continue
            if isinstance(value, dict):
                first.append(value)
    return (text_fields(first) or ["text"])[:2]


def _step(cls: type[AnyStep], **options: Any) -> AnyStep:
    """A step from command-line options; a bad value fails naming the option."""
    try:
        return cls(**options)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"]) or "?"
        raise ConfigError(f"{error['msg']} (got {error.get('input')!r})",
                          field=f"--{name.replace('_', '-')}") from None


def _run(name: str, build: Callable[[], list[AnyStep]], dataset: Path, out: Path,
         backends: dict[str, BackendSpec] | None = None, executor_name: str | None = None,
         executor_options: list[str] | None = None) -> None:
    executor: Executor | None = None
    with user_errors(console, lambda: executor is not None and executor.started,
                     interrupted=AGAIN):
        pipeline = Pipeline.from_steps(*build(), name=name,
                                       **({"backends": backends} if backends else {}))
        executor = build_executor(pipeline, name=executor_name, options=executor_options,
                                  config=RunConfig(out_dir=out, input_path=records_file(dataset),
                                                   overwrite=True))
        state = executor.run(pipeline)
    for stats in state.steps:
        console.print(f"{stats.label}: in {stats.inputs}, out {stats.outputs}, dropped "
                      f"{dict(stats.dropped)}, notes {dict(stats.notes)}")
    console.print(f"{state.status}: records: {out / 'records.jsonl'}; dropped rows: "
                  f"{out / 'dropped.jsonl'}")
    if state.side.get("failures") or state.side.get("rejects"):
        console.print(f"{state.side.get('failures', 0)} failures, "
                      f"{state.side.get('rejects', 0)} rejects: see {out}")
    raise typer.Exit(status_code(state.status))


def dedup(
    dataset: Data, out: Out = Path("dedup-out"), fields: Fields = None,
    method: Annotated[str, typer.Option(help="exact, minhash, semantic, or all")] = "all",
    threshold: Annotated[float, typer.Option(help="MinHash Jaccard threshold.")] = 0.8,
    eps: Annotated[float, typer.Option(help="SemDeDup: drop if cosine > 1 - eps.")] = 0.05,
    workers: Annotated[int, typer.Option(help="MinHash worker processes.")] = 1,
    executor_name: ExecutorName = None, executor_options: ExecutorOptions = None,
) -> None:
    """Remove exact, near (MinHash-LSH) and semantic (SemDeDup) duplicates."""
    from synthaug.steps.curate.dedup import ExactDedup, MinHashDedup
    from synthaug.steps.curate.semantic import SemanticDedup

    def build() -> list[AnyStep]:
        names = _fields(dataset, fields)
        chosen: dict[str, tuple[type[AnyStep], dict[str, Any]]] = {
            "exact": (ExactDedup, {}),
            "minhash": (MinHashDedup, {"threshold": threshold, "workers": workers}),
            "semantic": (SemanticDedup, {"eps": eps})}
        if method != "all" and method not in chosen:
            raise ConfigError(f"unknown method {method!r}; valid: {', '.join(chosen)}, all",
                              field="--method")
        return [_step(cls, fields=names, **options)
                for key, (cls, options) in chosen.items() if method in (key, "all")]

    _run("dedup", build, dataset, out, executor_name=executor_name,
         executor_options=executor_options)


def decontaminate(
    dataset: Data, out: Out = Path("decontaminated"), fields: Fields = None,
    benchmark: Annotated[list[str] | None, typer.Option(
        help="gsm8k, humaneval or a JSONL path (repeatable).")] = None,
    ngram: Annotated[int, typer.Option(help="n-gram size.")] = 13,
    action: Annotated[str, typer.Option(help="drop or flag.")] = "drop",
    judge_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible URL of an LLM judge for embedding candidates.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name.")] = None,
    top_k: Annotated[int, typer.Option(
        min=1, help="Nearest benchmark items judged per record.")] = 1,
    embedder: Annotated[str, typer.Option(
        help="static (offline, default) or minilm (the minilm extra; higher recall).")]
    = "static",
    candidate_threshold: Annotated[float | None, typer.Option(
        help="Least cosine similarity for a judge candidate (default: none).")] = None,
    executor_name: ExecutorName = None, executor_options: ExecutorOptions = None,
) -> None:
    """Find benchmark leaks by n-gram overlap, then an LLM judge on each record's nearest
    benchmark items (k per record)."""
    from synthaug.steps.curate.decontaminate import Decontaminate

    backends = None
    if judge_url:
        backends = {"judge": BackendSpec(use="openai", with_={"base_url": judge_url,
                                                              "model": judge_model})}

    def build() -> list[AnyStep]:
        return [_step(Decontaminate, fields=_fields(dataset, fields), ngram=ngram, action=action,
                      benchmarks=benchmark or ["gsm8k", "humaneval"], top_k=top_k,
                      embedder=embedder, candidate_threshold=candidate_threshold,
                      **({"judge": "judge"} if judge_url else {}))]

    _run("decontaminate", build, dataset, out, backends, executor_name, executor_options)


def filter_(
    dataset: Data, out: Out = Path("filtered"), fields: Fields = None,
    min_words: Annotated[int, typer.Option(help="Least words.")] = 1,
    max_words: Annotated[int | None, typer.Option(help="Most words.")] = None,
    language: Annotated[list[str] | None, typer.Option(help="Languages to keep.")] = None,
    pii: Annotated[bool, typer.Option(help="Redact PII.")] = False,
    executor_name: ExecutorName = None, executor_options: ExecutorOptions = None,
) -> None:
    """Length, repetition, refusal, non-printable and language filters (+ PII redaction)."""
    from synthaug.steps.curate import quality
    from synthaug.steps.curate.pii import PIIRedact
    from synthaug.steps.curate.text_filters import LengthFilter

    def build() -> list[AnyStep]:
        names = _fields(dataset, fields)
        steps = [_step(LengthFilter, field=names[0], min_words=min_words, max_words=max_words),
                 _step(quality.RepetitionFilter, fields=names),
                 _step(quality.RefusalFilter, fields=names),
                 _step(quality.NonPrintableFilter, fields=names)]
        if language:
            steps.append(_step(quality.LanguageFilter, fields=names, languages=language))
        if pii:
            steps.append(_step(PIIRedact, fields=names))
        return steps

    _run("filter", build, dataset, out, executor_name=executor_name,
         executor_options=executor_options)


def measure(
    dataset: Data, fields: Fields = None,
    reference: Annotated[Path | None, typer.Option(help="A reference JSONL.")] = None,
    group_by: Annotated[str | None, typer.Option(help="Field to count per value.")] = None,
) -> None:
    """Print diversity and coverage measures as JSON."""
    from synthaug.io import load_jsonl
    from synthaug.measure.dataset import measure as compute

    with user_errors(console):
        result = compute(load_jsonl(records_file(dataset)), fields=fields,
                         reference=load_jsonl(reference) if reference else None,
                         group_by=group_by)
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

    with user_errors(console):
        path = write_report(dataset, out, fields=fields, reference=reference,
                            group_by=group_by)
    console.print(f"report: {path}")


COMMANDS = {"dedup": dedup, "decontaminate": decontaminate, "filter": filter_,
            "measure": measure, "report": report}
