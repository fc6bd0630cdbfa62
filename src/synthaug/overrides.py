"""Command-line overrides of a recipe: `--set STEP.PATH=VALUE` and backend options.

A value is typed by the option it sets: the raw text is validated against the option's
annotation first (so `--set 'generate.template={prompt}'` sets the string "{prompt}"), and
parsed as YAML only when that fails (lists, mappings) or the option is unknown (the options
model then reports the misspelt name).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from synthaug import registry
from synthaug.errors import ConfigError
from synthaug.executors.base import Executor, RunConfig, Watcher
from synthaug.pipeline import BackendSpec, ExecutorSpec, Pipeline, Recipe, resolve_recipe

_NOTHING = ("null", "~", "none", "None")


def apply_sets(recipe: Recipe, sets: list[str]) -> None:
    """Apply `STEP.FIELD=VALUE` / `STEP.SUB.FIELD=VALUE` overrides to the recipe's steps
    (`STEP.when=EXPR` sets the step's condition)."""
    for item in sets:
        target, sep, raw = item.partition("=")
        step_name, dot, path = target.partition(".")
        if not sep or not dot or not path:
            raise ConfigError(f"takes STEP.FIELD=VALUE, got {item!r}", field="--set")
        specs = [s for i, s in enumerate(recipe.steps) if step_name in (s.name, s.use, str(i))]
        if not specs:
            known = ", ".join(s.name or s.use for s in recipe.steps)
            raise ConfigError(f"no step named {step_name!r}; steps: {known}", field="--set")
        spec = specs[0]
        if path == "when":  # the step's condition, not one of its options
            spec.when = None if raw.strip() in _NOTHING else raw
            continue
        try:
            options: type[BaseModel] | None = registry.step_class(spec.use).Options
        except ConfigError:
            options = None
        keys = path.split(".")
        _put(spec.with_, keys, typed_value(_annotation(options, keys), raw))


def load_backends(recipe: Recipe, path: Path) -> None:
    """Replace roles of the recipe with the backends of a YAML file (role -> {use, with}),
    e.g. a pool for `policy` and an API model for `judge`; unknown roles and bad specs fail
    naming the file and field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read backends: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("a backends file maps role names to {use, with}", file=str(path))
    for role, spec in data.items():
        if role not in recipe.backends and role != "default":
            raise ConfigError(f"the recipe has no backend role {role!r}; its roles: "
                              f"{', '.join(sorted(recipe.backends))}", file=str(path),
                              field=str(role))
        try:
            recipe.backends[str(role)] = BackendSpec.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (role, *first["loc"]))
            raise ConfigError(str(first["msg"]), file=str(path), field=where) from None


def override_backend(recipe: Recipe, choices: dict[str, Any], extra: list[str]) -> None:
    """Set the default role's backend kind and options from command-line flags.

    `choices` holds `backend`, `base_url` and the plain options given (None: not given);
    `extra` holds `KEY=VALUE` items of `--backend-option`.
    """
    spec = recipe.backends.get("default", BackendSpec())
    backend, base_url = choices.pop("backend", None), choices.get("base_url")
    use = backend or ("openai" if base_url else spec.use)
    options = dict(spec.with_) if use == spec.use else {}
    options.update({key: value for key, value in choices.items() if value is not None})
    try:
        model: type[BaseModel] | None = registry.backend_class(use).Options
    except ConfigError:
        model = None
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"takes KEY=VALUE, got {item!r}", field="--backend-option")
        options[key] = typed_value(_annotation(model, [key]), raw)
    recipe.backends["default"] = BackendSpec(use=use, **{"with": options})


def _put(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            inner = {}
            target[key] = inner
        target = inner
    target[keys[-1]] = value


def _annotation(model: type[BaseModel] | None, keys: list[str]) -> Any:
    """The annotation of the option at `keys` in `model` (None if there is none)."""
    annotation: Any = model
    for key in keys:
        found = _model_in(annotation)
        if found is None or key not in found.model_fields:
            return None
        annotation = found.model_fields[key].annotation
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (`Sampling`, `Sampling | None`), if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def typed_value(annotation: Any, raw: str) -> Any:
    """`raw` as the option's type when it validates as such, else parsed as YAML."""
    if annotation is not None and annotation is not Any:
        if raw in _NOTHING and _allows_none(annotation):
            return None
        try:
            return TypeAdapter(annotation).validate_python(raw)
        except ValidationError:
            pass
    return yaml_value(raw)


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or (
        _is_union(annotation) and type(None) in typing.get_args(annotation))


def yaml_value(raw: str) -> Any:
    """YAML scalars and [lists]/{maps} typed; any other text kept as written."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list) and not raw.lstrip().startswith(("{", "[")):
        return raw
    return raw if value is None else value


def build_pipeline(recipe: str, *, backends_file: Path | None, choices: dict[str, Any],
                   backend_options: list[str] | None, sets: list[str] | None,
                   seed: int | None = None) -> Pipeline:
    """The pipeline a command runs: the recipe (a name or a file), then `--backends`, the
    default role's flags and `--backend-option`s, `--set`s and `--seed`, in that order."""
    spec, source = resolve_recipe(recipe)
    if backends_file is not None:
        load_backends(spec, backends_file)
    override_backend(spec, choices, backend_options or [])
    apply_sets(spec, sets or [])
    if seed is not None:
        spec.seed = seed
    return Pipeline.from_recipe(spec, source)


def build_executor(pipeline: Pipeline, *, name: str | None, options: list[str] | None,
                   config: RunConfig, watch: Watcher | None = None) -> Executor:
    """The executor a run uses: `--executor` (else the recipe's `executor:`, else local),
    with the recipe's options for it and `--executor-option KEY=VALUE`s over them."""
    spec = pipeline.recipe.executor if pipeline.recipe else ExecutorSpec()
    use = name or spec.use
    given = dict(spec.with_) if use == spec.use else {}
    try:
        cls = registry.executor_class(use)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=pipeline.source, field="executor") from None
    for item in options or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"takes KEY=VALUE, got {item!r}", field="--executor-option")
        given[key] = typed_value(_annotation(cls.Options, [key]), raw)
    try:
        chosen = cls.Options(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"executor {use}: {first['msg']}", file=pipeline.source,
                          field=f"executor.{where}") from None
    return cls(config, watch=watch, options=chosen)
