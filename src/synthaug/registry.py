"""Registries of steps, backends and recipes, filled from entry points.

Built-ins are declared in synthaug's own pyproject under the same groups a
third-party plugin uses: `synthaug.steps`, `synthaug.backends`, `synthaug.executors`,
`synthaug.recipes`.
Classes can also be registered at run time with `register_step` / `register_backend`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from synthaug.errors import ConfigError

if TYPE_CHECKING:
    from synthaug.backends.base import AnyBackend
    from synthaug.executors.base import Executor
    from synthaug.steps.base import AnyStep

_extra_steps: dict[str, type[AnyStep]] = {}
_extra_executors: dict[str, type[Executor]] = {}
_extra_backends: dict[str, type[AnyBackend]] = {}


@cache
def _entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}


def register_step(name: str, cls: type[AnyStep]) -> None:
    """Register a step class under `name` (for code that is not a packaged plugin)."""
    _extra_steps[name] = cls


def register_backend(name: str, cls: type[AnyBackend]) -> None:
    """Register a backend class under `name`."""
    _extra_backends[name] = cls


def _load(group: str, name: str, extra: dict[str, Any], kind: str) -> Any:
    if name in extra:
        return extra[name]
    eps = _entry_points(group)
    if name not in eps:
        known = ", ".join(sorted({*eps, *extra}))
        raise ConfigError(f"unknown {kind} '{name}'; known: {known}", field="use")
    return eps[name].load()


def step_class(name: str) -> type[AnyStep]:
    """The step class registered as `name`."""
    cls: type[AnyStep] = _load("synthaug.steps", name, _extra_steps, "step")
    return cls


def backend_class(name: str) -> type[AnyBackend]:
    """The backend class registered as `name`."""
    cls: type[AnyBackend] = _load("synthaug.backends", name, _extra_backends, "backend")
    return cls


def register_executor(name: str, cls: type[Executor]) -> None:
    """Register an executor class under `name`."""
    _extra_executors[name] = cls


def executor_class(name: str) -> type[Executor]:
    """The executor class registered as `name`."""
    cls: type[Executor] = _load("synthaug.executors", name, _extra_executors, "executor")
    return cls


def executor_names() -> list[str]:
    """Every registered executor name."""
    return sorted({*_entry_points("synthaug.executors"), *_extra_executors})


def step_names() -> list[str]:
    """Every registered step name."""
    return sorted({*_entry_points("synthaug.steps"), *_extra_steps})


def backend_names() -> list[str]:
    """Every registered backend name."""
    return sorted({*_entry_points("synthaug.backends"), *_extra_backends})


def recipe_files() -> dict[str, Path]:
    """Recipe name -> YAML file, from every `synthaug.recipes` entry point."""
    found: dict[str, Path] = {}
    for ep in _entry_points("synthaug.recipes").values():
        provider: Callable[[], Path] = ep.load()
        folder = Path(provider())
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            found[str(data.get("name", path.stem))] = path
    return found
