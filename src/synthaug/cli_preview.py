"""`synthaug preview`: a few records through every step before paying for the whole run; and
the budget flags `run` shares with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from synthaug.budget import budget_of
from synthaug.cli_common import user_errors
from synthaug.overrides import build_pipeline
from synthaug.preview import estimate_lines, run_preview, trace_lines

PRICES_HELP = ("YAML price table, model: {input: X, output: Y} per million tokens; models "
               "left out have an unknown cost.")
MAX_COST_HELP = ("Start no call once this much is spent (needs --prices for every model; "
                 "earlier runs into OUT count). Calls in flight finish.")
MAX_TOKENS_HELP = ("Start no call once this many tokens (prompt + completion) are spent; "
                   "earlier runs into OUT count. Calls in flight finish.")

console = Console(stderr=True)


def preview(
    recipe: Annotated[str, typer.Argument(help="A built-in recipe name or a YAML file.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Input records to preview.")] = 3,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSONL input.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="The full run's output folder: only its cache.sqlite is filled "
        "(no records, no manifest).")] = Path("out"),
    backend: Annotated[str | None, typer.Option(help="Backend for the default role.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL (implies --backend openai).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="In-flight limit.")] = None,
    n_threads: Annotated[int | None, typer.Option(min=1, help="llamacpp CPU threads.")] = None,
    limit: Annotated[int | None, typer.Option(
        min=0, help="The full run's --limit (for the estimate).")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Step option, STEP.FIELD=VALUE (repeatable).")] = None,
    backends_file: Annotated[Path | None, typer.Option(
        "--backends", help="YAML file of backend roles replacing the recipe's.")] = None,
    backend_options: Annotated[list[str] | None, typer.Option(
        "--backend-option", help="Backend option KEY=VALUE (repeatable).")] = None,
    id_field: Annotated[str, typer.Option(help="Input field holding a record id.")] = "id",
    cache: Annotated[Path | None, typer.Option(help="Cache file (default OUT/cache.sqlite).")]
    = None,
    prices: Annotated[Path | None, typer.Option(help=PRICES_HELP)] = None,
) -> None:
    """Run N input records through every step and print each step's records with the prompts
    and replies behind them, what each filter drops and why, and an estimate of the full
    run's calls, tokens and cost. Writes no records or manifest; fills the run's cache, so
    `synthaug run` with the same options replays these calls for free.

    Exit codes: 0 done, 2 usage or configuration error, 130 interrupted.
    """
    with user_errors(console):
        pipeline = build_pipeline(recipe, backends_file=backends_file, choices={
            "backend": backend, "base_url": base_url, "model": model,
            "concurrency": concurrency, "n_threads": n_threads},
            backend_options=backend_options, sets=sets, seed=seed)
        found = run_preview(pipeline, input_path=input, n=n, cache=cache or out / "cache.sqlite",
                            budget=budget_of(prices, None, None), id_field=id_field,
                            limit=limit)
    for line in [*trace_lines(found), "", *estimate_lines(found, pipeline)]:
        typer.echo(line)
