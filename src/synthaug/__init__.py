"""synthaug: synthesize and augment training data for LLMs with published methods."""

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


def run(
    pipeline: Pipeline,
    out_dir: str,
    *,
    input_path: str | None = None,
    limit: int | None = None,
) -> RunState:
    """Run `pipeline` locally, writing to `out_dir` (resumes if it holds an earlier run)."""
    from pathlib import Path

    config = RunConfig(out_dir=Path(out_dir), input_path=Path(input_path) if input_path else None,
                       limit=limit)
    return LocalExecutor(config).run(pipeline)
