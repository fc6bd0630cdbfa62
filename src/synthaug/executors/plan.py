"""Validate everything, then act: what a run checks before it touches a file or calls a model.

`prepare` resolves the input, checks that it can be read, that the output formats are known
and installed, that every field a step needs is provided, builds every backend and checks its
capabilities, and compares the run identity with the one stored in the output folder. It
writes nothing, creates nothing and calls no model; any problem raises a SynthaugError.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthaug import identity, manifest
from synthaug.backends.base import AnyBackend
from synthaug.errors import ConfigError
from synthaug.inputs import first_fields
from synthaug.io import OUTPUT_FILES, check_format, data_file
from synthaug.pipeline import Pipeline, build_backend


@dataclass
class Plan:
    """What a validated run will read, call and write."""

    input_path: Path | None
    requirements: dict[str, tuple[type, ...]]
    backends: dict[str, AnyBackend]
    identity: dict[str, Any]


async def prepare(pipeline: Pipeline, *, out_dir: Path, input_path: Path | None,
                  formats: Iterable[str], overwrite: bool, id_field: str) -> Plan:
    """Every check a run makes before it starts; raises a SynthaugError, touches nothing."""
    source = resolve_input(pipeline, input_path)
    for fmt in formats:
        check_format(fmt)
    pipeline.check(first_fields(source) if source else set())
    backends: dict[str, AnyBackend] = {}
    try:
        for role in pipeline.roles():
            backends[role] = build_backend(pipeline.backends[role], file=pipeline.source,
                                           role=role)
        pipeline.check_backends(backends)
        found = {**pipeline.identity(backends), "id_field": id_field,
                 "input": identity.fingerprint(source)}
        if not overwrite:
            check_output(out_dir, found, source)
    except BaseException:
        for backend in backends.values():
            await backend.close()
        raise
    return Plan(input_path=source, requirements=pipeline.input_requirements(),
                backends=backends, identity=found)


def resolve_input(pipeline: Pipeline, given: Path | None) -> Path | None:
    """The input file (given, or the recipe's shipped default), checked to be readable."""
    recipe = pipeline.recipe
    path = given
    if path is None and recipe and recipe.default_input:
        path = data_file(recipe.default_input)
    if path is None:
        if recipe and recipe.input == "required":
            raise ConfigError("this recipe needs input records: pass --input FILE",
                              file=pipeline.source)
        return None
    if not path.exists():
        raise ConfigError("input file not found", file=str(path))
    if not path.is_file():
        raise ConfigError("input is not a file", file=str(path))
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"input file cannot be read: {exc.strerror}", file=str(path)) from None
    return path


def check_output(out_dir: Path, found: dict[str, Any], source: Path | None) -> None:
    """Refuse an output folder that holds another run's output (nothing is touched)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("the output path exists and is not a folder", file=str(out_dir))
    try:
        stored = manifest.read(out_dir)
    except (OSError, ValueError):
        stored = {}
    if stored is None:
        if any((out_dir / name).exists() for name in OUTPUT_FILES):
            identity.check(out_dir, None, found, source)
        return
    identity.check(out_dir, stored.get("identity"), found, source)
