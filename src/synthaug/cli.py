"""The `synthaug` command line: run recipes, list recipes/backends/steps, inspect outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from synthaug import cli_curate, registry
from synthaug.errors import SynthaugError
from synthaug.executors.local import LocalExecutor, RunConfig, RunState
from synthaug.pipeline import BackendSpec, Pipeline, Recipe, load_recipe, resolve_recipe
from synthaug.progress import ProgressView

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Synthesize and augment training data for LLMs.")
console = Console(stderr=True)


def _override_backend(recipe: Recipe, backend: str | None, base_url: str | None,
                      model: str | None, concurrency: int | None,
                      n_threads: int | None, extra: list[str]) -> None:
    spec = recipe.backends.get("default", BackendSpec())
    use = backend or ("openai" if base_url else spec.use)
    options = dict(spec.with_) if use == spec.use else {}
    for key, value in (("base_url", base_url), ("model", model),
                       ("concurrency", concurrency), ("n_threads", n_threads)):
        if value is not None:
            options[key] = value
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--backend-option takes KEY=VALUE, got {item!r}")
        options[key] = _value(raw)
    recipe.backends["default"] = BackendSpec(use=use, **{"with": options})


def _apply_sets(recipe: Recipe, sets: list[str]) -> None:
    for item in sets:
        target, sep, raw = item.partition("=")
        step_name, dot, field = target.partition(".")
        if not sep or not dot:
            raise typer.BadParameter(f"--set takes STEP.FIELD=VALUE, got {item!r}")
        specs = [s for i, s in enumerate(recipe.steps)
                 if step_name in (s.name, s.use, str(i))]
        if not specs:
            raise typer.BadParameter(f"--set: no step named {step_name!r}")
        specs[0].with_[field] = _value(raw)


def _value(raw: str) -> Any:
    """A --set value: YAML scalars and [lists]/{maps} typed, any other text kept as written."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list) and not raw.lstrip().startswith(("{", "[")):
        return raw
    return raw if value is None else value


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a YAML file.")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSONL input.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    backend: Annotated[str | None, typer.Option(help="Backend for the default role.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL (implies --backend openai).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="In-flight request limit.")] = None,
    n_threads: Annotated[int | None, typer.Option(help="llamacpp CPU threads.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most N input records.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", help="Extra output: parquet, hf, sft (TRL messages) or alpaca.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Step option, STEP.FIELD=VALUE (repeatable).")] = None,
    backend_options: Annotated[list[str] | None, typer.Option(
        "--backend-option", help="Backend option KEY=VALUE, e.g. chat_template=... "
        "(repeatable).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Cache file (default OUT/cache.sqlite).")]
    = None,
    overwrite: Annotated[bool, typer.Option(help="Discard earlier output in OUT.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run a recipe; rerunning the same command resumes where it stopped."""
    try:
        spec, source = resolve_recipe(recipe)
        _override_backend(spec, backend, base_url, model, concurrency, n_threads,
                          backend_options or [])
        _apply_sets(spec, sets or [])
        if seed is not None:
            spec.seed = seed
        pipeline = Pipeline.from_recipe(spec, source)
        config = RunConfig(out_dir=out, input_path=input, limit=limit,
                           formats=tuple(f for f in fmt or [] if f != "jsonl"),
                           cache_path=cache, overwrite=overwrite)
        view = None if quiet else ProgressView(console, [label for label, _ in pipeline.steps])
        with view or _Null():
            state = LocalExecutor(config, watch=view.update if view else None).run(pipeline)
    except SynthaugError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _summary(state)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _summary(state: RunState) -> None:
    table = Table(title="steps")
    for column in ("step", "in", "out", "dropped", "failures", "rejects", "cache hits", "s"):
        table.add_column(column)
    for s in state.steps:
        table.add_row(s.label, str(s.inputs), str(s.outputs), str(sum(s.dropped.values())),
                      str(s.failures), str(s.rejects), str(s.cache_hits), f"{s.seconds:.1f}")
    console.print(table)
    calls = sum(c.calls for c in state.clients.values())
    console.print(f"wrote {state.written} new records ({state.resumed} from an earlier run), "
                  f"{calls} LLM calls, {state.side.get('failures', 0)} failures, "
                  f"{state.side.get('rejects', 0)} rejects in {state.seconds:.1f}s")
    console.print(f"records: {state.out_dir / 'records.jsonl'}")
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
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        console.print(f"[red]error:[/red] no manifest.json in {out}")
        raise typer.Exit(2)
    data: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    stdout = Console(width=160)
    stdout.print(f"recipe [bold]{data['recipe']}[/bold] ({data['status']}), "
                 f"{data['total_records']} records, {data['seconds']}s")
    for label, counts in data["steps"].items():
        stdout.print(f"  {label}: {json.dumps(counts)}")
    stdout.print(f"  side files: {json.dumps(data.get('side_files', {}))}")
    records = out / "records.jsonl"
    if records.exists():
        with records.open(encoding="utf-8") as handle:
            for _, line in zip(range(n), handle, strict=False):
                stdout.print_json(line)


for _name, _command in cli_curate.COMMANDS.items():
    app.command(_name)(_command)  # type: ignore[type-var]


def main() -> None:
    """Entry point of the `synthaug` command."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    app()


if __name__ == "__main__":
    main()
