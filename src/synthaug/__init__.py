"""synthaug: synthesize and augment training data for LLMs with published methods.

Names are imported on first use (PEP 562), so `import synthaug` stays light: worker
processes and the CLI load only what they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthaug.backends.base import Backend, BackendOptions, Completion, Request
    from synthaug.backends.client import LLMClient
    from synthaug.errors import (
        BackendError,
        ConfigError,
        FatalBackendError,
        InputError,
        MissingDependency,
        ParseError,
        RetryableError,
        SynthaugError,
    )
    from synthaug.executors.local import LocalExecutor, RunConfig, RunState
    from synthaug.pipeline import Pipeline, Recipe, load_recipe, resolve_recipe
    from synthaug.records import Record
    from synthaug.registry import register_backend, register_step
    from synthaug.steps.base import (
        Filter,
        Generator,
        Global,
        LLMOptions,
        LLMStep,
        Map,
        Rounds,
        RoundsOptions,
        Step,
        StepOptions,
    )
    from synthaug.steps.context import StepContext

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendOptions",
    "Completion",
    "ConfigError",
    "FatalBackendError",
    "Filter",
    "Generator",
    "Global",
    "InputError",
    "LLMClient",
    "LLMOptions",
    "LLMStep",
    "LocalExecutor",
    "Map",
    "MissingDependency",
    "ParseError",
    "Pipeline",
    "Recipe",
    "Record",
    "Request",
    "RetryableError",
    "Rounds",
    "RoundsOptions",
    "RunConfig",
    "RunState",
    "Step",
    "StepContext",
    "StepOptions",
    "SynthaugError",
    "load_recipe",
    "register_backend",
    "register_step",
    "resolve_recipe",
    "run",
]

_LAZY = {
    "Backend": "synthaug.backends.base",
    "BackendError": "synthaug.errors",
    "BackendOptions": "synthaug.backends.base",
    "Completion": "synthaug.backends.base",
    "ConfigError": "synthaug.errors",
    "FatalBackendError": "synthaug.errors",
    "Filter": "synthaug.steps.base",
    "Generator": "synthaug.steps.base",
    "Global": "synthaug.steps.base",
    "InputError": "synthaug.errors",
    "LLMClient": "synthaug.backends.client",
    "LLMOptions": "synthaug.steps.base",
    "LLMStep": "synthaug.steps.base",
    "LocalExecutor": "synthaug.executors.local",
    "Map": "synthaug.steps.base",
    "MissingDependency": "synthaug.errors",
    "ParseError": "synthaug.errors",
    "Pipeline": "synthaug.pipeline",
    "Recipe": "synthaug.pipeline",
    "Record": "synthaug.records",
    "Request": "synthaug.backends.base",
    "RetryableError": "synthaug.errors",
    "Rounds": "synthaug.steps.base",
    "RoundsOptions": "synthaug.steps.base",
    "RunConfig": "synthaug.executors.local",
    "RunState": "synthaug.executors.local",
    "Step": "synthaug.steps.base",
    "StepContext": "synthaug.steps.context",
    "StepOptions": "synthaug.steps.base",
    "SynthaugError": "synthaug.errors",
    "load_recipe": "synthaug.pipeline",
    "register_backend": "synthaug.registry",
    "register_step": "synthaug.registry",
    "resolve_recipe": "synthaug.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")


def run(
    pipeline: Pipeline,
    out_dir: str,
    *,
    input_path: str | None = None,
    limit: int | None = None,
) -> RunState:
    """Run `pipeline` locally, writing to `out_dir` (resumes if it holds an earlier run)."""
    from pathlib import Path

    from synthaug.executors.local import LocalExecutor, RunConfig

    config = RunConfig(out_dir=Path(out_dir), input_path=Path(input_path) if input_path else None,
                       limit=limit)
    return LocalExecutor(config).run(pipeline)
