"""The `synthaug` command line: run recipes, list recipes/backends/steps, inspect outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from synthaug import (
    cli_annotate,
    cli_card,
    cli_curate,
    cli_preview,
    cli_sandbox,
    cli_serve,
    manifest,
    registry,
)
from synthaug.budget import budget_of, usage_lines
from synthaug.cli_common import status_code, user_errors
from synthaug.errors import ConfigError
from synthaug.executors.base import Executor, RunConfig, RunState
from synthaug.overrides import build_executor, build_pipeline
from synthaug.pipeline import Recipe, load_recipe
from synthaug.progress import ProgressView

# no locals in tracebacks of unexpected errors: they could hold an API key
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Synthesize and augment training data for LLMs.")
console = Console(stderr=True)


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a YAML file.")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSONL input.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    backend: Annotated[str | None, typer.Option(help="Backend for the default role.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL (implies --backend openai).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="In-flight request limit.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.001, help="Total seconds one request may take (default role; default 600).")] = None,
    idle_timeout: Annotated[float | None, typer.Option(
        min=0.001, help="Seconds a request may go without receiving data (default role; "
        "default 30).")] = None,
    n_threads: Annotated[int | None, typer.Option(min=1, help="llamacpp CPU threads.")] = None,
    limit: Annotated[int | None, typer.Option(
        min=0, help="Read at most N input records.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", help="Extra output: parquet, hf, sft (TRL messages), alpaca, prm (TRL "
        "stepwise rewards), dpo (TRL DPO/ORPO pairs), kto (TRL KTO rows) or rm (TRL reward "
        "modeling pairs).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Step option, STEP.FIELD=VALUE or STEP.SUB.FIELD=VALUE, e.g. "
        "generate.sampling.temperature=0.2 (repeatable).")] = None,
    backends_file: Annotated[Path | None, typer.Option(
        "--backends", help="YAML file of backend roles (role: {use, with}) replacing the "
        "recipe's, e.g. a pool of models for 'policy' and an API model for 'judge'.")] = None,
    backend_options: Annotated[list[str] | None, typer.Option(
        "--backend-option", help="Backend option KEY=VALUE, e.g. chat_template=... "
        "(repeatable).")] = None,
    id_field: Annotated[str, typer.Option(
        help="Input field holding a record id; repeats are rejected.")] = "id",
    cache: Annotated[Path | None, typer.Option(help="Cache file (default OUT/cache.sqlite).")]
    = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace the output in OUT (keeps the cache).")] = False,
    prices: Annotated[Path | None, typer.Option(help=cli_preview.PRICES_HELP)] = None,
    max_cost: Annotated[float | None, typer.Option(min=0, help=cli_preview.MAX_COST_HELP)]
    = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help=cli_preview.MAX_TOKENS_HELP)]
    = None,
    executor_name: Annotated[str | None, typer.Option(
        "--executor", help="Where the run goes: local (this process, the default) or ray "
        "(sharded over a Ray cluster: $RAY_ADDRESS, or one started here); overrides the "
        "recipe's `executor:`.")] = None,
    executor_options: Annotated[list[str] | None, typer.Option(
        "--executor-option", help="Executor option KEY=VALUE, e.g. workers=8, "
        "shard_size=5000, address=ray://head:10001 (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run a recipe; rerunning the same command resumes where it stopped.

    Exit codes: 0 complete, 1 stopped on an error, 2 usage or configuration error (nothing
    done), 3 finished with failures or rejects, 4 budget spent (--max-cost/--max-tokens;
    rerun with a larger budget to resume), 130 interrupted.
    """
    executor: Executor | None = None
    with user_errors(console, lambda: executor is not None and executor.started):
        pipeline = build_pipeline(recipe, backends_file=backends_file, choices={
            "backend": backend, "base_url": base_url, "model": model,
            "concurrency": concurrency, "timeout": timeout, "idle_timeout": idle_timeout,
            "n_threads": n_threads}, backend_options=backend_options, sets=sets, seed=seed)
        config = RunConfig(out_dir=out, input_path=input, limit=limit, formats=tuple(fmt or ()),
                           cache_path=cache, overwrite=overwrite, id_field=id_field,
                           budget=budget_of(prices, max_cost, max_tokens))
        view = None if quiet else ProgressView(console, [label for label, _ in pipeline.steps])
        executor = build_executor(pipeline, name=executor_name, options=executor_options,
                                  config=config, watch=view.update if view else None)
        with view or _Null():
            state = executor.run(pipeline)
    _summary(state)
    raise typer.Exit(status_code(state.status))


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _summary(state: RunState) -> None:
    table = Table(title="steps")
    for column in ("step", "in", "out", "dropped", "failures", "rejects", "cache hits",
                   "tokens", "s"):
        table.add_column(column)
    for s in state.steps:
        tokens = sum(t.tokens for t in state.usage.steps.get(s.label, {}).values())
        table.add_row(s.label, str(s.inputs), str(s.outputs), str(sum(s.dropped.values())),
                      str(s.failures), str(s.rejects), str(s.cache_hits), str(tokens),
                      f"{s.seconds:.1f}")
    console.print(table)
    calls = state.calls()
    failures, rejects = state.side.get("failures", 0), state.side.get("rejects", 0)
    console.print(f"{state.status}: wrote {state.written} new records ({state.resumed} from an "
                  f"earlier run), {calls} LLM calls, {failures} failures, {rejects} rejects "
                  f"in {state.seconds:.1f}s", soft_wrap=True)
    for line in usage_lines(state.usage):
        console.print(line, soft_wrap=True, markup=False)
    console.print(f"records: {state.out_dir / 'records.jsonl'}", soft_wrap=True)
    if failures:
        console.print(f"failures: {state.out_dir / 'failures.jsonl'} (a rerun retries them)")
    if rejects:
        console.print(f"rejects: {state.out_dir / 'rejects.jsonl'}")
    for fmt, path in state.exports.items():
        console.print(f"{fmt}: {path}")


def _recipe_rows(stage: str | None, approach: str | None, function: str | None) -> list[Recipe]:
    rows = []
    for path in registry.recipe_files().values():
        r = load_recipe(path)
        tags = r.tags
        if stage and not any(stage in t for t in tags.stage):
            continue
        if approach and not any(approach in t for t in tags.approach):
            continue
        if function and not any(function in t for t in tags.function):
            continue
        rows.append(r)
    return rows


@app.command()
def recipes(
    stage: Annotated[str | None, typer.Option(help="Lifecycle stage, e.g. preference.")] = None,
    approach: Annotated[str | None, typer.Option(help="e.g. self-improvement.")] = None,
    function: Annotated[str | None, typer.Option(help="e.g. logic.")] = None,
) -> None:
    """List recipes with their citations and taxonomy tags."""
    table = Table(title="recipes")
    for column in ("name", "approach", "stage", "function", "cites"):
        table.add_column(column, overflow="fold")
    for r in _recipe_rows(stage, approach, function):
        table.add_row(r.name, ", ".join(r.tags.approach), ", ".join(r.tags.stage),
                      ", ".join(r.tags.function), "; ".join(r.cites) or "-")
    Console(width=200).print(table)


@app.command()
def backends() -> None:
    """List backends and their capabilities."""
    table = Table(title="backends")
    for column in ("name", "raw completion", "json schema", "logprobs", "options"):
        table.add_column(column, overflow="fold")
    for name in registry.backend_names():
        cls = registry.backend_class(name)
        table.add_row(name, str(cls.raw_completion), str(cls.json_schema), str(cls.logprobs),
                      ", ".join(cls.Options.model_fields))
    Console(width=200).print(table)


@app.command()
def steps() -> None:
    """List registered steps and their options."""
    table = Table(title="steps")
    table.add_column("name")
    table.add_column("options", overflow="fold")
    for name in registry.step_names():
        cls = registry.step_class(name)
        table.add_row(name, ", ".join(cls.Options.model_fields))
    Console(width=200).print(table)


@app.command()
def inspect(
    out: Annotated[Path, typer.Argument(help="An output folder of `synthaug run`.")],
    n: Annotated[int, typer.Option(help="Sample records to show.")] = 3,
) -> None:
    """Summarize a run: manifest counts and a few records."""
    with user_errors(console):
        data = _manifest_of(out)
    stdout = Console(width=160)
    stdout.print(f"recipe [bold]{data.get('recipe')}[/bold] ({data.get('status')}), "
                 f"{data.get('total_records')} records, {data.get('seconds')}s")
    for label, counts in (data.get("steps") or {}).items():
        stdout.print(f"  {label}: {json.dumps(counts)}")
    stdout.print(f"  side files: {json.dumps(data.get('side_files', {}))}")
    records = out / "records.jsonl"
    if records.exists():
        with records.open(encoding="utf-8", errors="replace") as handle:
            for _, line in zip(range(n), handle, strict=False):
                try:
                    stdout.print_json(line)
                except ValueError:
                    stdout.print(f"  (not JSON) {line.rstrip()[:200]}", markup=False)


def _manifest_of(out: Path) -> dict[str, Any]:
    try:
        data = manifest.read(out)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable manifest.json: {exc}", file=str(out)) from None
    if data is None:
        raise ConfigError("no manifest.json: not an output folder of synthaug run",
                          file=str(out))
    return data


for _name, _command in {**cli_curate.COMMANDS, **cli_card.COMMANDS}.items():
    app.command(_name)(_command)  # type: ignore[type-var]
app.command("preview")(cli_preview.preview)
app.command("serve")(cli_serve.serve)
app.add_typer(cli_sandbox.app, name="sandbox")
app.add_typer(cli_annotate.app, name="annotate")


def main() -> None:
    """Entry point of the `synthaug` command."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    app()


if __name__ == "__main__":
    main()
