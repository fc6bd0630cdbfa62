"""Pipelines and recipes: an ordered list of steps plus named backends, from Python or YAML.

A recipe is validated before any call: unknown steps, unknown or ill-typed options,
unknown backends and input fields no step provides fail with the file, step and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthaug import registry
from synthaug.backends.base import AnyBackend
from synthaug.errors import ConfigError, SynthaugError
from synthaug.records import ID_SCHEME
from synthaug.steps.base import AnyStep, requirements
from synthaug.steps.llm import Sampling
from synthaug.steps.when import condition_of, conditional, conditional_fields, unwrap


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StepSpec(_Strict):
    """One step in a recipe: a registered name, an optional label, and its options."""

    use: str
    name: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = None  # a condition over the record's fields (synthaug.steps.when)


class BackendSpec(_Strict):
    """A backend in a recipe: a registered name and its options."""

    use: str = "llamacpp"
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class ExecutorSpec(_Strict):
    """Where a recipe runs by default: a registered executor and its options (`--executor`
    and `--executor-option` override it). Never part of the run identity."""

    use: str = "local"
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Tags(_Strict):
    """Where a recipe sits in the survey's taxonomy."""

    approach: list[str] = []
    stage: list[str] = []
    function: list[str] = []


class Recipe(_Strict):
    """A recipe file's content."""

    name: str
    description: str = ""
    cites: list[str] = []
    tags: Tags = Tags()
    input: str | None = None  # "required", "optional" or None (no input)
    default_input: str | None = None  # a data file shipped in synthaug/data, used without --input
    seed: int = 0
    backends: dict[str, BackendSpec] = Field(default_factory=lambda: {"default": BackendSpec()})
    executor: ExecutorSpec = ExecutorSpec()
    steps: list[StepSpec]


def _main_error(error: ValidationError) -> Any:
    """The error to report: a misspelt (unknown) option first, since it explains the rest."""
    errors = error.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _field_of(error: ValidationError) -> str:
    return ".".join(str(p) for p in _main_error(error)["loc"]) or "?"


def _message_of(error: ValidationError) -> str:
    first = _main_error(error)
    if first["type"] != "extra_forbidden":
        return str(first["msg"])
    name = str(first["loc"][-1]) if first["loc"] else ""
    if len(first["loc"]) == 1 and name in Sampling.model_fields:
        return (f"unknown option; sampling options go under 'sampling:' "
                f"(e.g. sampling: {{{name}: ...}})")
    return f"{first['msg']} (unknown option)"


def build_backend(spec: BackendSpec, *, file: str | None = None,
                  role: str = "default") -> AnyBackend:
    """A backend instance from its spec; bad options fail naming the field."""
    where = f"backend {role}"
    try:
        cls = registry.backend_class(spec.use)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, step=where,
                          field="use") from None
    try:
        options = cls.Options(**spec.with_)
    except ValidationError as exc:
        raise ConfigError(_message_of(exc), file=file, step=where, field=_field_of(exc)) from None
    try:
        return cls(options)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, step=where, field=exc.field) from None


@dataclass
class Pipeline:
    """Steps with labels, named backend specs, and the recipe they came from."""

    steps: list[tuple[str, AnyStep]]
    backends: dict[str, BackendSpec] = field(default_factory=lambda: {"default": BackendSpec()})
    name: str = "pipeline"
    seed: int = 0
    recipe: Recipe | None = None
    source: str | None = None

    @classmethod
    def from_steps(cls, *steps: AnyStep, name: str = "pipeline", **kw: Any) -> Pipeline:
        """A pipeline from step objects, labelled by position and class name."""
        labelled = [(f"{i}-{type(s).__name__.lower()}", s) for i, s in enumerate(steps)]
        return cls(steps=labelled, name=name, **kw)

    @classmethod
    def from_recipe(cls, recipe: Recipe, source: str | None = None) -> Pipeline:
        """Build every step, failing on the first unknown step or bad option."""
        steps: list[tuple[str, AnyStep]] = []
        for index, spec in enumerate(recipe.steps):
            label = spec.name or f"{index}-{spec.use}"
            try:
                step_cls = registry.step_class(spec.use)
            except ConfigError as exc:
                raise ConfigError(exc.message, file=source, step=label, field="use") from None
            try:
                step = step_cls(step_cls.Options(**spec.with_))
            except ValidationError as exc:
                raise ConfigError(_message_of(exc), file=source, step=label,
                                  field=_field_of(exc)) from None
            try:
                step = conditional(step, spec.when)
            except ConfigError as exc:
                raise ConfigError(exc.message, file=source, step=label, field="when") from None
            steps.append((label, step))
        return cls(steps=steps, backends=dict(recipe.backends), name=recipe.name,
                   seed=recipe.seed, recipe=recipe, source=source)

    def roles(self) -> list[str]:
        """The backend roles the steps declare, in order of first use."""
        return list(dict.fromkeys(u.role for _, step in self.steps for u in step.uses()))

    def check(self, input_fields: set[str] | None) -> None:
        """Fail if a step needs a field nothing provides, or names an unknown backend role."""
        available = input_fields
        only_when: dict[str, str] = {}  # fields only a conditional step adds: the error
        for index, (label, step) in enumerate(self.steps):
            if index and getattr(unwrap(step), "from_nothing", False):
                raise ConfigError("`count` makes records from nothing, which only the recipe's "
                                  "first step may do", file=self.source, step=label,
                                  field="count")
            try:
                step.prepare()
            except SynthaugError as exc:
                raise ConfigError(str(exc), file=self.source, step=label) from None
            for use in step.uses():
                if use.role not in self.backends:
                    raise ConfigError(f"unknown backend role '{use.role}'; the recipe defines "
                                      f"{sorted(self.backends)}", file=self.source, step=label,
                                      field="backend")
            if available is not None:
                for name in sorted(set(requirements(step)) - available):
                    raise ConfigError(only_when.get(name, "input records lack this field and no "
                                      "earlier step provides it"), file=self.source, step=label,
                                      field=name)
                for name in sorted(set(requirements(unwrap(step))) - available - set(only_when)):
                    raise ConfigError("input records lack this field and no earlier step "
                                      "provides it", file=self.source, step=label, field=name)
            provided = step.provides()
            if provided is None:
                available = None
            elif available is not None:
                available = available | provided
                only_when.update(conditional_fields(step, label))

    def check_backends(self, built: dict[str, AnyBackend]) -> None:
        """Fail if a step needs a capability its role's backend lacks (before any call)."""
        for label, step in self.steps:
            for use in step.uses():
                lacking = use.lacking(built[use.role])
                if lacking:
                    raise ConfigError(
                        f"needs {', '.join(lacking)} from backend role '{use.role}' "
                        f"({built[use.role].name}), which lacks it"
                        + ("; set the backend's chat_template option"
                           if lacking == ["chat_template"] else ""),
                        file=self.source, step=label, field="backend")

    def input_requirements(self) -> dict[str, tuple[type, ...]]:
        """Fields input records must hold, with their types: those a step needs and no
        earlier step provides."""
        needed: dict[str, tuple[type, ...]] = {}
        provided: set[str] = set()
        for _, step in self.steps:
            for name, kinds in requirements(step).items():
                if name not in provided:
                    needed.setdefault(name, kinds)
            made = step.provides()
            if made is None:
                break
            provided |= made
        return needed

    def config(self) -> dict[str, Any]:
        """The resolved configuration, secret-free."""
        return {
            "name": self.name,
            "seed": self.seed,
            "steps": [{"name": label, "use": type(unwrap(step)).__name__,
                       "with": step.options.model_dump(mode="json"), **_when(step)}
                      for label, step in self.steps],
            "backends": {role: {"use": spec.use, "with": _scrub(spec.with_)}
                         for role, spec in self.backends.items()},
        }

    def identity(self, built: dict[str, AnyBackend]) -> dict[str, Any]:
        """The run identity without the input: recipe, resolved options, seed, id scheme and
        each used role's backend identity (kind, model, endpoint or file, chat template)."""
        cfg = self.config()
        return {"recipe": cfg["name"], "seed": cfg["seed"], "id_scheme": ID_SCHEME,
                "steps": {label: {"use": type(unwrap(step)).__name__, **_when(step),
                                  "with": step.options.model_dump(
                    mode="json", exclude=set(step.options.tuning))} for label, step in self.steps},
                "backends": {role: built[role].identity() for role in self.roles()}}


SECRET_WORDS = ("key", "token", "secret", "password", "authorization", "credential")


def _scrub(value: Any) -> Any:
    """`value` without the entries whose names look secret, at any depth (pool members,
    headers)."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if not any(word in str(k).lower() for word in SECRET_WORDS)}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _when(step: AnyStep) -> dict[str, str]:
    """{"when": condition} for a conditional step, {} otherwise (identities stay as before)."""
    found = condition_of(step)
    return {"when": found} if found else {}


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping", file=str(path))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message_of(exc), file=str(path), field=_field_of(exc)) from None


def resolve_recipe(name_or_path: str) -> tuple[Recipe, str]:
    """A recipe by registered name or by YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".jsonl", ".json", ".parquet", ".csv"):
        raise ConfigError("this is a data file, not a recipe: pass a recipe name or YAML file, "
                          "and the data with --input", file=str(path))
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError("recipe file not found", file=str(path))
        return load_recipe(path), str(path)
    files = registry.recipe_files()
    if name_or_path not in files:
        raise ConfigError(f"unknown recipe '{name_or_path}'; known: {', '.join(sorted(files))}")
    return load_recipe(files[name_or_path]), str(files[name_or_path])
