"""synthaug: synthesize and augment training data for LLMs with published methods.

Names are imported on first use (PEP 562), so `import synthaug` stays light: worker
processes and the CLI load only what they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# `X as X`: an explicit re-export for type checkers; the names must match _LAZY below
# (tests/test_streaming.py parses this block to check)
if TYPE_CHECKING:
    # isort: off
    from synthaug.backends.base import (
        Backend as Backend, BackendOptions as BackendOptions, Completion as Completion,
        Request as Request,
    )
    from synthaug.backends.client import LLMClient as LLMClient
    from synthaug.errors import (
        BackendError as BackendError, ConfigError as ConfigError,
        FatalBackendError as FatalBackendError, InputError as InputError,
        MissingDependency as MissingDependency, MissingField as MissingField,
        ParseError as ParseError, RecordError as RecordError, RetryableError as RetryableError,
        StepError as StepError, SynthaugError as SynthaugError, WrongType as WrongType,
    )
    from synthaug.executors.local import (
        LocalExecutor as LocalExecutor, RunConfig as RunConfig, RunState as RunState,
    )
    from synthaug.pipeline import (
        Pipeline as Pipeline, Recipe as Recipe, load_recipe as load_recipe,
        resolve_recipe as resolve_recipe,
    )
    from synthaug.records import Record as Record
    from synthaug.registry import (
        register_backend as register_backend, register_step as register_step,
    )
    from synthaug.steps.base import (
        Each as Each, Filter as Filter, Generator as Generator, Global as Global,
        LLMOptions as LLMOptions, LLMStep as LLMStep, Map as Map, Rounds as Rounds,
        RoundsOptions as RoundsOptions, Step as Step, StepOptions as StepOptions,
    )
    from synthaug.steps.context import StepContext as StepContext
    from synthaug.steps.llm import Reply as Reply, Sampling as Sampling, Uses as Uses
    # isort: on

__version__ = "0.1.0"

# the public API, name -> module: the one source of __all__ and of the lazy imports
_LAZY = {
    "Backend": "synthaug.backends.base",
    "BackendError": "synthaug.errors",
    "BackendOptions": "synthaug.backends.base",
    "Completion": "synthaug.backends.base",
    "ConfigError": "synthaug.errors",
    "Each": "synthaug.steps.base",
    "FatalBackendError": "synthaug.errors",
    "Filter": "synthaug.steps.base",
    "Generator": "synthaug.steps.base",
    "Global": "synthaug.steps.base",
    "InputError": "synthaug.errors",
    "LLMClient": "synthaug.backends.client",
    "LLMOptions": "synthaug.steps.base",
    "LLMStep": "synthaug.steps.base",
    "load_recipe": "synthaug.pipeline",
    "LocalExecutor": "synthaug.executors.local",
    "Map": "synthaug.steps.base",
    "MissingDependency": "synthaug.errors",
    "MissingField": "synthaug.errors",
    "ParseError": "synthaug.errors",
    "Pipeline": "synthaug.pipeline",
    "Recipe": "synthaug.pipeline",
    "Record": "synthaug.records",
    "RecordError": "synthaug.errors",
    "register_backend": "synthaug.registry",
    "register_step": "synthaug.registry",
    "Reply": "synthaug.steps.llm",
    "Request": "synthaug.backends.base",
    "resolve_recipe": "synthaug.pipeline",
    "RetryableError": "synthaug.errors",
    "Rounds": "synthaug.steps.base",
    "RoundsOptions": "synthaug.steps.base",
    "RunConfig": "synthaug.executors.local",
    "RunState": "synthaug.executors.local",
    "Sampling": "synthaug.steps.llm",
    "Step": "synthaug.steps.base",
    "StepContext": "synthaug.steps.context",
    "StepError": "synthaug.errors",
    "StepOptions": "synthaug.steps.base",
    "SynthaugError": "synthaug.errors",
    "Uses": "synthaug.steps.llm",
    "WrongType": "synthaug.errors",
}

__all__ = [*_LAZY, "run"]


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
    overwrite: bool = False,
    executor: str | None = None,
    executor_options: dict[str, Any] | None = None,
) -> RunState:
    """Run `pipeline`, writing to `out_dir` (resumes if it holds an earlier run of the same
    identity; `overwrite` replaces another run's output). `executor`: "local" (default, or
    the recipe's) or "ray", with `executor_options` (e.g. {"workers": 8})."""
    from pathlib import Path

    from synthaug.executors.base import RunConfig
    from synthaug.overrides import build_executor

    config = RunConfig(out_dir=Path(out_dir), input_path=Path(input_path) if input_path else None,
                       limit=limit, overwrite=overwrite)
    options = [f"{key}={value}" for key, value in (executor_options or {}).items()]
    return build_executor(pipeline, name=executor, options=options, config=config).run(pipeline)
