"""The local executor: asyncio, steps streaming through bounded queues, results appended as made.

Every step runs as its own task between two bounded queues, so a slow step applies
back-pressure and memory stays flat for streaming steps. Output is appended record by
record; a rerun skips ids already written and replays answered prompts from the cache.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug import manifest
from synthaug.backends.cache import ResponseCache
from synthaug.backends.client import ClientStats, LLMClient
from synthaug.errors import ConfigError
from synthaug.io import RecordWriter, SideWriter, aiter_records, data_file, export, read_jsonl
from synthaug.pipeline import Pipeline, build_backend
from synthaug.records import Record
from synthaug.steps.context import StepContext, StepStats
from synthaug.streams import drain, pipe


@dataclass
class RunConfig:
    """Where a run reads and writes, and how."""

    out_dir: Path
    input_path: Path | None = None
    limit: int | None = None
    formats: tuple[str, ...] = ()
    cache_path: Path | None = None
    overwrite: bool = False
    queue_size: int = 256


@dataclass
class RunState:
    """What a run has done so far (what progress displays read)."""

    steps: list[StepStats]
    total: int | None = None
    written: int = 0
    resumed: int = 0
    clients: dict[str, ClientStats] = field(default_factory=dict)
    side: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    out_dir: Path = Path(".")
    exports: dict[str, str] = field(default_factory=dict)


Watcher = Callable[[RunState], None]


class LocalExecutor:
    """Runs a pipeline in this process."""

    def __init__(self, config: RunConfig, watch: Watcher | None = None) -> None:
        self.config = config
        self.watch = watch

    def run(self, pipeline: Pipeline) -> RunState:
        """Run to completion; return the final state."""
        return asyncio.run(self.arun(pipeline))

    async def arun(self, pipeline: Pipeline) -> RunState:
        """Run to completion inside a running event loop."""
        cfg = self.config
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_resume(pipeline)
        side = SideWriter(cfg.out_dir)
        self._check_fields(pipeline)
        cache = ResponseCache(cfg.cache_path or cfg.out_dir / "cache.sqlite")
        clients = self._clients(pipeline, cache)
        writer = RecordWriter(cfg.out_dir / "records.jsonl")
        state = RunState(steps=[StepStats(label) for label, _ in pipeline.steps],
                         total=_count_lines(cfg.input_path, cfg.limit), resumed=writer.resumed,
                         clients={r: c.stats for r, c in clients.items()}, out_dir=cfg.out_dir)
        started = time.time()
        self._manifest(pipeline, state, started, "running")
        ticker = asyncio.create_task(self._tick(pipeline, state, started))
        try:
            await self._stream(pipeline, side, clients, writer, state)
            status = "complete"
        except BaseException:
            status = "failed"
            raise
        finally:
            ticker.cancel()
            writer.close()
            side.close()
            for client in clients.values():
                await client.close()
            cache.close()
            state.side = dict(side.counts)
            state.seconds = time.time() - started
            self._manifest(pipeline, state, started, status)
        for fmt in cfg.formats:
            state.exports[fmt] = str(export(writer.path, fmt))
        if self.watch:
            self.watch(state)
        return state

    def _check_resume(self, pipeline: Pipeline) -> None:
        old = manifest.read(self.config.out_dir)
        records = self.config.out_dir / "records.jsonl"
        if self.config.overwrite:
            records.unlink(missing_ok=True)
            return
        if old and old.get("config_hash") != pipeline.config_hash() and records.exists():
            raise ConfigError(
                f"{self.config.out_dir} holds the output of a different configuration "
                "(recipe, options or seed changed); use --overwrite or another --out")

    def _check_fields(self, pipeline: Pipeline) -> None:
        cfg, recipe = self.config, pipeline.recipe
        if recipe and recipe.default_input and cfg.input_path is None:
            cfg.input_path = data_file(recipe.default_input)
        if recipe and recipe.input == "required" and cfg.input_path is None:
            raise ConfigError("this recipe needs input records: pass --input FILE",
                              file=pipeline.source)
        if cfg.input_path is not None and not cfg.input_path.is_file():
            raise ConfigError("input file not found", file=str(cfg.input_path))
        pipeline.check(_first_fields(cfg.input_path) if cfg.input_path else set())

    def _clients(self, pipeline: Pipeline, cache: ResponseCache) -> dict[str, LLMClient]:
        roles = {role for _, step in pipeline.steps for role in step.backend_roles()}
        return {role: LLMClient(build_backend(pipeline.backends[role], file=pipeline.source,
                                              role=role), cache)
                for role in sorted(roles)}

    async def _stream(self, pipeline: Pipeline, side: SideWriter,
                      clients: dict[str, LLMClient], writer: RecordWriter,
                      state: RunState) -> None:
        stream: AsyncIterator[Record] = aiter_records(iter(()))
        if self.config.input_path:
            first = pipeline.steps[0][1].requires() if pipeline.steps else set()
            stream = aiter_records(read_jsonl(self.config.input_path, required=first,
                                              recipe=pipeline.name, side=side,
                                              limit=self.config.limit))
        pumps = []
        for (label, step), stats in zip(pipeline.steps, state.steps, strict=True):
            roles = step.backend_roles()
            ctx = StepContext(label=label, recipe=pipeline.name, seed=pipeline.seed,
                              stats=stats, side=side,
                              llm=clients[roles[0]] if roles else None,
                              clients={role: clients[role] for role in roles})
            queue: asyncio.Queue[Any] = asyncio.Queue(self.config.queue_size)
            output = _counted(step.run(_counted_in(stream, stats), ctx), stats)
            pumps.append(asyncio.create_task(pipe(output, queue)))
            stream = drain(queue)
        try:
            async for record in stream:
                record.setdefault("_meta", {}).setdefault("recipe", pipeline.name)
                if writer.write(record):
                    state.written += 1
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _tick(self, pipeline: Pipeline, state: RunState, started: float) -> None:
        """Refresh the progress view often and the manifest every few seconds."""
        for beat in itertools.count(1):
            if self.watch:
                self.watch(state)
            await asyncio.sleep(0.2)
            if beat % 25 == 0:
                self._manifest(pipeline, state, started, "running")

    def _manifest(self, pipeline: Pipeline, state: RunState, started: float,
                  status: str) -> None:
        recipe = pipeline.recipe
        manifest.write(self.config.out_dir, {
            "recipe": pipeline.name,
            "status": status,
            "cites": recipe.cites if recipe else [],
            "tags": recipe.tags.model_dump() if recipe else {},
            "source": pipeline.source,
            "config": pipeline.config(),
            "config_hash": pipeline.config_hash(),
            "input": str(self.config.input_path) if self.config.input_path else None,
            "limit": self.config.limit,
            "versions": manifest.versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "written": state.written,
            "resumed": state.resumed,
            "total_records": state.resumed + state.written,
            "side_files": state.side,
            "steps": {s.label: s.as_dict() for s in state.steps},
            "backends": {role: vars(stats) for role, stats in state.clients.items()},
        })


async def _counted_in(stream: AsyncIterator[Record], stats: StepStats) -> AsyncIterator[Record]:
    async for record in stream:
        if stats.inputs == 0:
            stats.started = time.monotonic()  # a step's time runs from its first input
        stats.inputs += 1
        yield record


async def _counted(stream: AsyncIterator[Record], stats: StepStats) -> AsyncIterator[Record]:
    try:
        async for record in stream:
            stats.outputs += 1
            yield record
    finally:
        stats.seconds = time.monotonic() - stats.started
        stats.done = True


def _first_fields(path: Path, sample: int = 100) -> set[str] | None:
    """Fields seen in the first `sample` well-formed records (None if there are none)."""
    seen: set[str] = set()
    found = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(value, dict):
                seen |= set(value)
                found += 1
                if found >= sample:
                    break
    return seen if found else None


def _count_lines(path: Path | None, limit: int | None) -> int | None:
    if path is None or not path.is_file():
        return None
    with path.open("rb") as handle:
        count = sum(1 for line in handle if line.strip())
    return min(count, limit) if limit is not None else count
