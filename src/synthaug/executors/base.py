"""The run lifecycle every executor shares; executors differ only in how they schedule steps.

`Executor.arun` validates everything first (`executors/plan.py`: input, formats, fields,
backends, run identity) and only then acts: it clears the folder on `--overwrite`, opens the
output files, the cache and the clients, writes the manifest, and hands a `Session` to the
executor's `schedule`. Whatever `schedule` does, the lifecycle sets the final status, writes
the exports, closes everything and writes the last manifest.

A run ends with a status (manifest and `RunState.status`): `complete` (every input record made
its outputs), `partial` (finished with failures or rejects), `interrupted` (Ctrl-C), `failed`
(stopped on an error after it started) or `budget_exhausted` (`--max-tokens`/`--max-cost`
spent: calls in flight finished and were written, no new call started; a rerun with a larger
budget resumes). Tokens and money go to the manifest's `usage` (see `synthaug.budget`).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from synthaug import manifest
from synthaug.backends.cache import ResponseCache
from synthaug.backends.pool import AnyClient, make_client
from synthaug.budget import Budget, BudgetExhausted, Meter, check_prices, earlier_spent
from synthaug.errors import ConfigError
from synthaug.executors.chain import Tap
from synthaug.executors.plan import Plan, prepare
from synthaug.inputs import count_units
from synthaug.io import OUTPUT_FILES, RecordWriter, SideWriter, export
from synthaug.pipeline import Pipeline
from synthaug.steps.context import StepStats

STATUSES = ("running", "complete", "partial", "interrupted", "failed", "budget_exhausted")


@dataclass
class RunConfig:
    """Where a run reads and writes, and how (`limit`, `queue_size`: not part of identity)."""

    out_dir: Path
    input_path: Path | None = None
    limit: int | None = None
    formats: tuple[str, ...] = ()
    cache_path: Path | None = None
    overwrite: bool = False
    queue_size: int = 256
    id_field: str = "id"  # input records repeating a value of this field are rejected
    budget: Budget = field(default_factory=Budget)  # prices and spending limits


@dataclass
class RunState:
    """What a run has done so far (what progress displays read)."""

    steps: list[StepStats]
    total: int | None = None
    written: int = 0
    resumed: int = 0
    clients: dict[str, AnyClient] = field(default_factory=dict)
    side: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    out_dir: Path = Path(".")
    exports: dict[str, str] = field(default_factory=dict)
    status: str = "running"
    usage: Meter = field(default_factory=Meter)  # tokens and money by step and model
    worker_calls: int = 0  # LLM calls made by other processes (Ray workers)
    executor: dict[str, Any] = field(default_factory=dict)  # the executor's own facts

    def calls(self) -> int:
        """LLM calls this run made, in this process and in workers."""
        return sum(c.stats.calls for c in self.clients.values()) + self.worker_calls


Watcher = Callable[[RunState], None]


@dataclass
class RunFiles:
    """What a run writes to: side files, the response cache, the records."""

    side: SideWriter
    cache: ResponseCache
    writer: RecordWriter

    async def close(self, clients: dict[str, AnyClient]) -> None:
        """Close the files and every client (its backend)."""
        self.writer.close()
        self.side.close()
        for client in clients.values():
            await client.close()
        self.cache.close()


@dataclass
class Session:
    """A started run: what `schedule` works with."""

    pipeline: Pipeline
    plan: Plan
    config: RunConfig
    files: RunFiles
    clients: dict[str, AnyClient]
    state: RunState


class ExecutorOptions(BaseModel):
    """An executor's own options (recipe `executor: {use, with}`, `--executor-option`);
    unknown keys fail. They change where and how fast a run goes, never its output."""

    model_config = ConfigDict(extra="forbid")


class Executor(ABC):
    """Runs a pipeline; `started`: it got past validation and setup (an error before is a
    usage error, nothing was called)."""

    name: ClassVar[str]
    Options: ClassVar[type[ExecutorOptions]]

    def __init__(self, config: RunConfig, watch: Watcher | None = None,
                 tap: Tap | None = None, options: ExecutorOptions | None = None) -> None:
        self.config = config
        self.watch = watch
        self.tap = tap
        self.options = options if options is not None else self.Options()
        self.started = False

    def run(self, pipeline: Pipeline) -> RunState:
        """Run to completion; return the final state."""
        return asyncio.run(self.arun(pipeline))

    def check(self, pipeline: Pipeline, plan: Plan) -> None:
        """Refuse, before anything is touched, what this executor cannot run."""
        stored = _stored_executor(self.config.out_dir)
        if not self.config.overwrite and stored is not None and stored != self.name:
            raise ConfigError(f"this folder holds a run of the {stored} executor: resume it "
                              f"with --executor {stored}, or pass --overwrite",
                              file=str(self.config.out_dir))

    @abstractmethod
    async def schedule(self, session: Session) -> None:
        """Run the steps: records to `session.files.writer`, counts to `session.state`."""

    async def arun(self, pipeline: Pipeline) -> RunState:
        """Run to completion inside a running event loop."""
        cfg = self.config
        plan = await prepare(pipeline, out_dir=cfg.out_dir, input_path=cfg.input_path,
                             formats=cfg.formats, overwrite=cfg.overwrite,
                             id_field=cfg.id_field)
        try:
            self.check(pipeline, plan)
            check_prices(cfg.budget, plan.backends)
            meter = Meter(cfg.budget, {} if cfg.overwrite else earlier_spent(cfg.out_dir),
                          trace=[] if self.tap else None)
            files = self._open()
        except BaseException:
            for backend in plan.backends.values():
                await backend.close()
            raise
        clients = {role: make_client(backend, files.cache)
                   for role, backend in plan.backends.items()}
        state = RunState(steps=[StepStats(label) for label, _ in pipeline.steps],
                         total=count_units(plan.input_path, cfg.limit),
                         resumed=files.writer.resumed, out_dir=cfg.out_dir,
                         clients=dict(clients), usage=meter)
        session = Session(pipeline, plan, cfg, files, clients, state)
        started = time.time()
        self._manifest(session, started)
        self.started = True
        ticker = asyncio.create_task(self._tick(session, started))
        try:
            await self.schedule(session)
            files.writer.close()
            for fmt in (f for f in cfg.formats if f != "jsonl"):
                state.exports[fmt] = str(export(files.writer.path, fmt))
            state.status = "partial" if files.side.counts["failures"] \
                or files.side.counts["rejects"] else "complete"
            if meter.exhausted:
                state.status = "budget_exhausted"
        except BudgetExhausted:  # a step that let it through stops the run, as a budget stop
            state.status = "budget_exhausted"
        except (KeyboardInterrupt, asyncio.CancelledError):
            state.status = "interrupted"
            raise
        except BaseException:
            state.status = "failed"
            raise
        finally:
            ticker.cancel()
            await files.close(clients)
            state.side = dict(files.side.counts)
            state.seconds = time.time() - started
            self._manifest(session, started)
        if self.watch:
            self.watch(state)
        return state

    def _open(self) -> RunFiles:
        """Act on a validated run: clear the folder on --overwrite, open the output files."""
        cfg = self.config
        try:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder: {exc.strerror}",
                              file=str(cfg.out_dir)) from None
        if cfg.overwrite:
            for name in OUTPUT_FILES:
                (cfg.out_dir / name).unlink(missing_ok=True)
            # per-round data, stored between-rounds results and committed shards
            for folder in ("rounds", "shards"):
                shutil.rmtree(cfg.out_dir / folder, ignore_errors=True)
        with ExitStack() as opened:
            side = SideWriter(cfg.out_dir)
            opened.callback(side.close)
            cache = ResponseCache(cfg.cache_path or cfg.out_dir / "cache.sqlite")
            opened.callback(cache.close)
            writer = RecordWriter(cfg.out_dir / "records.jsonl")
            opened.pop_all()
        return RunFiles(side, cache, writer)

    async def _tick(self, session: Session, started: float) -> None:
        """Refresh the progress view often and the manifest every few seconds."""
        for beat in itertools.count(1):
            if self.watch:
                self.watch(session.state)
            await asyncio.sleep(0.2)
            if beat % 25 == 0:
                self._manifest(session, started)

    def _manifest(self, session: Session, started: float) -> None:
        pipeline, plan, state = session.pipeline, session.plan, session.state
        recipe = pipeline.recipe
        manifest.write(self.config.out_dir, {
            "recipe": pipeline.name,
            "status": state.status,
            "identity": plan.identity,
            "executor": {"name": self.name, **state.executor},
            "cites": recipe.cites if recipe else [],
            "tags": recipe.tags.model_dump() if recipe else {},
            "source": pipeline.source,
            "config": pipeline.config(),
            "input": str(plan.input_path) if plan.input_path else None,
            "limit": self.config.limit,
            "versions": manifest.versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "written": state.written,
            "resumed": state.resumed,
            "total_records": state.resumed + state.written,
            "side_files": state.side,
            "steps": {s.label: s.as_dict() for s in state.steps},
            "backends": {role: client.summary() for role, client in state.clients.items()},
            "usage": state.usage.summary(),
        })


def _stored_executor(out_dir: Path) -> str | None:
    """The executor that wrote the run in `out_dir` (older manifests: local)."""
    try:
        stored = manifest.read(out_dir)
    except (OSError, ValueError):
        return None
    if not stored:
        return None
    found = stored.get("executor")
    return str(found.get("name", "local")) if isinstance(found, dict) else "local"
