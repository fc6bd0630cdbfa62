"""The local executor: asyncio, steps streaming through bounded queues, results appended as made.

A run first validates everything (`executors/plan.py`: input, formats, fields, backends, run
identity) and only then acts: it clears the folder on `--overwrite`, opens the output files
and starts the steps. Every step runs as its own task between two bounded queues, so a slow
step applies back-pressure and memory stays flat for streaming steps. Output is appended record
by record; a rerun skips ids already written and replays answered prompts from the cache.

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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import ExitStack, aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug import manifest
from synthaug.backends.cache import ResponseCache
from synthaug.backends.pool import AnyClient, make_client
from synthaug.budget import Budget, BudgetExhausted, Meter, charging, check_prices, earlier_spent
from synthaug.errors import ConfigError
from synthaug.executors.plan import Plan, prepare
from synthaug.io import OUTPUT_FILES, RecordWriter, SideWriter, aiter_records, export, read_jsonl
from synthaug.pipeline import Pipeline
from synthaug.records import Record
from synthaug.steps.context import SideFiles, StepContext, StepStats
from synthaug.streams import drain, pipe

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


Watcher = Callable[[RunState], None]
Tap = Callable[[str, Record], None]  # (step label, a record the step made): a preview's trace


class LocalExecutor:
    """Runs a pipeline in this process; `started`: it got past validation and setup (an error
    before is a usage error, nothing was called)."""

    def __init__(self, config: RunConfig, watch: Watcher | None = None,
                 tap: Tap | None = None) -> None:
        self.config = config
        self.watch = watch
        self.tap = tap
        self.started = False

    def run(self, pipeline: Pipeline) -> RunState:
        """Run to completion; return the final state."""
        return asyncio.run(self.arun(pipeline))

    async def arun(self, pipeline: Pipeline) -> RunState:
        """Run to completion inside a running event loop."""
        cfg = self.config
        plan = await prepare(pipeline, out_dir=cfg.out_dir, input_path=cfg.input_path,
                             formats=cfg.formats, overwrite=cfg.overwrite,
                             id_field=cfg.id_field)
        try:
            check_prices(cfg.budget, plan.backends)
            meter = Meter(cfg.budget, {} if cfg.overwrite else earlier_spent(cfg.out_dir),
                          trace=[] if self.tap else None)
            files = self._open(plan)
        except BaseException:
            for backend in plan.backends.values():
                await backend.close()
            raise
        clients = {role: make_client(backend, files.cache)
                   for role, backend in plan.backends.items()}
        state = RunState(steps=[StepStats(label) for label, _ in pipeline.steps],
                         total=_count_lines(plan.input_path, cfg.limit),
                         resumed=files.writer.resumed, out_dir=cfg.out_dir,
                         clients=dict(clients), usage=meter)
        started = time.time()
        self._manifest(pipeline, plan, state, started)
        self.started = True
        ticker = asyncio.create_task(self._tick(pipeline, plan, state, started))
        try:
            await self._stream(pipeline, plan, files, clients, state)
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
            self._manifest(pipeline, plan, state, started)
        if self.watch:
            self.watch(state)
        return state

    def _open(self, plan: Plan) -> _Files:
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
            # per-round data and stored between-rounds results: a fresh run trains again
            shutil.rmtree(cfg.out_dir / "rounds", ignore_errors=True)
        with ExitStack() as opened:
            side = SideWriter(cfg.out_dir)
            opened.callback(side.close)
            cache = ResponseCache(cfg.cache_path or cfg.out_dir / "cache.sqlite")
            opened.callback(cache.close)
            writer = RecordWriter(cfg.out_dir / "records.jsonl")
            opened.pop_all()
        return _Files(side, cache, writer)

    async def _stream(self, pipeline: Pipeline, plan: Plan, files: _Files,
                      clients: dict[str, AnyClient], state: RunState) -> None:
        stream: AsyncIterator[Record] = aiter_records(iter(()))
        if plan.input_path:
            stream = aiter_records(read_jsonl(plan.input_path, required=plan.requirements,
                                              recipe=pipeline.name, side=files.side,
                                              limit=self.config.limit,
                                              id_field=self.config.id_field))
        made = run_steps(pipeline, stream, stats=state.steps, side=files.side, clients=clients,
                         usage=state.usage, out_dir=self.config.out_dir,
                         queue_size=self.config.queue_size, tap=self.tap)
        async with aclosing(made):
            async for record in made:
                if files.writer.write(record):
                    state.written += 1

    async def _tick(self, pipeline: Pipeline, plan: Plan, state: RunState,
                    started: float) -> None:
        """Refresh the progress view often and the manifest every few seconds."""
        for beat in itertools.count(1):
            if self.watch:
                self.watch(state)
            await asyncio.sleep(0.2)
            if beat % 25 == 0:
                self._manifest(pipeline, plan, state, started)

    def _manifest(self, pipeline: Pipeline, plan: Plan, state: RunState,
                  started: float) -> None:
        recipe = pipeline.recipe
        manifest.write(self.config.out_dir, {
            "recipe": pipeline.name,
            "status": state.status,
            "identity": plan.identity,
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


@dataclass
class _Files:
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


async def run_steps(pipeline: Pipeline, stream: AsyncIterator[Record], *,
                    stats: list[StepStats], side: SideFiles, clients: dict[str, AnyClient],
                    usage: Meter, out_dir: Path | None, queue_size: int = 256,
                    tap: Tap | None = None) -> AsyncGenerator[Record, None]:
    """The pipeline's steps over `stream`: each step a task between bounded queues, its calls
    charged to `usage`; closing the generator cancels every step (and its calls in flight).
    The one per-step machinery of a run, also used by `synthaug serve` per request."""
    pumps = []
    for (label, step), counts in zip(pipeline.steps, stats, strict=True):
        roles = [use.role for use in step.uses()]
        ctx = StepContext(label=label, recipe=pipeline.name, seed=pipeline.seed,
                          stats=counts, side=side,
                          clients={role: clients[role] for role in roles},
                          main_role=roles[0] if roles else None, out_dir=out_dir)
        queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        output = _counted(step.run(_counted_in(stream, counts), ctx), counts)
        if tap is not None:
            output = _tapped(output, label, tap)
        # the step's calls (in this task and those it starts) are charged to the meter
        pumps.append(asyncio.create_task(pipe(output, queue), context=charging(usage, label)))
        stream = drain(queue)
    try:
        async for record in stream:
            record.setdefault("_meta", {}).setdefault("recipe", pipeline.name)
            yield record
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _counted_in(stream: AsyncIterator[Record], stats: StepStats) -> AsyncIterator[Record]:
    async for record in stream:
        if stats.inputs == 0:
            stats.started = time.monotonic()  # a step's time runs from its first input
        stats.inputs += 1
        yield record


async def _tapped(stream: AsyncIterator[Record], label: str, tap: Tap) -> AsyncIterator[Record]:
    async for record in stream:
        tap(label, record)
        yield record


async def _counted(stream: AsyncIterator[Record], stats: StepStats) -> AsyncIterator[Record]:
    try:
        async for record in stream:
            stats.outputs += 1
            yield record
    finally:
        stats.seconds = time.monotonic() - stats.started
        stats.done = True


def _count_lines(path: Path | None, limit: int | None) -> int | None:
    if path is None or not path.is_file():
        return None
    with path.open("rb") as handle:
        count = sum(1 for line in handle if line.strip())
    return min(count, limit) if limit is not None else count
