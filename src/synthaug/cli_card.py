"""Publishing verbs of the command line: `card` (a Hugging Face dataset card) and `push`
(the card, manifest and data to a Hub dataset repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from synthaug.cli_common import user_errors

console = Console(stderr=True)
Out = Annotated[Path, typer.Argument(help="An output folder of `synthaug run` (or of a "
                                     "curation verb).")]
Formats = Annotated[list[str] | None, typer.Option(
    "--format", help="Data to publish: jsonl, parquet, sft, alpaca, prm, dpo, kto, rm "
    "(repeatable; exported when missing; default: records.jsonl and the exports present).")]
License = Annotated[str | None, typer.Option(
    help="The dataset's license (a Hub id such as cc-by-4.0, else published as 'other' "
    "with this name); 'unknown' when not given.")]
Language = Annotated[list[str] | None, typer.Option(
    "--language", help="Language code of the data (repeatable; default: those a language "
    "filter kept, else none).")]
Task = Annotated[list[str] | None, typer.Option(
    "--task-category", help="Hub task category (repeatable; default: from the recipe's tags).")]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="Extra tag (repeatable).")]
Name = Annotated[str | None, typer.Option(help="Pretty name (default: RECIPE (synthaug)).")]
Measures = Annotated[bool, typer.Option(
    help="Add the measures `synthaug report` shows (needs the curate extra).")]


def card(out: Out, fmt: Formats = None, license: License = None, language: Language = None,
         task_category: Task = None, tag: Tag = None, pretty_name: Name = None,
         measures: Measures = False,
         repo: Annotated[str | None, typer.Option(
             help="Hub repository, for the loading example.")] = None) -> None:
    """Write OUT/README.md: a Hugging Face dataset card for the run."""
    from synthaug.publish.card import CardOptions, write_card

    with user_errors(console):
        options = CardOptions(license=license, language=language or [],
                              task_categories=task_category or [], pretty_name=pretty_name,
                              tags=tag or [], repo=repo, measures=measures)
        path, made = write_card(out, options, fmt)
    console.print(f"card: {path} ({made.facts.count} records, license "
                  f"{made.metadata['license']}, configs "
                  f"{[c['config_name'] for c in made.metadata.get('configs', [])]})")
    if made.facts.embedded:
        console.print(f"{made.facts.embedded} records were made by the embedded demo model: "
                      "the card says so.")


def push(out: Out,
         repo: Annotated[str, typer.Option(help="Dataset repository, NAME or OWNER/NAME.")],
         token: Annotated[str | None, typer.Option(
             envvar="HF_TOKEN", show_envvar=True, help="Hub token with write access.")] = None,
         private: Annotated[bool, typer.Option(
             "--private", help="Create the repository private.")] = False,
         fmt: Formats = None, license: License = None, language: Language = None,
         task_category: Task = None, tag: Tag = None, pretty_name: Name = None,
         measures: Measures = False,
         card_file: Annotated[Path | None, typer.Option(
             "--card", help="Upload this card (e.g. an edited OUT/README.md) instead of "
             "building a fresh one.")] = None,
         message: Annotated[str | None, typer.Option(help="Commit message.")] = None) -> None:
    """Upload the card, the manifest (secrets removed) and the data to a Hub dataset repo."""
    from synthaug.publish.card import CardOptions
    from synthaug.publish.hub import prepare, send, token_or_fail

    sending = False  # an error before sending is a usage error (2), after it 1
    with user_errors(console, lambda: sending):
        key = token_or_fail(token)
        options = CardOptions(license=license, language=language or [],
                              task_categories=task_category or [], pretty_name=pretty_name,
                              tags=tag or [], repo=repo, measures=measures)
        upload = prepare(out, repo, options, fmt, card_file, key)
        sending = True
        done = send(upload, repo, key, private=private,
                    message=message or f"Upload {out.name} with synthaug")
    console.print(f"pushed {', '.join(done.files)} to {done.repo_url} ({done.commit_url})",
                  soft_wrap=True)


COMMANDS = {"card": card, "push": push}
