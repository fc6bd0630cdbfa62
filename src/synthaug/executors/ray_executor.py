"""The Ray executor: the same recipe, sharded over a Ray cluster (`--executor ray`).

The driver (this process) keeps the run lifecycle of `executors/base.py`: identity, resume,
manifest, main cache, output files. It scans the input into shards (`executors/shards.py`),
cuts the pipeline into segments (`executors/segments.py`) and runs them in order:

- a shard segment goes through Ray Data: one row per part job, `map_batches` over an actor
  pool of `workers` `ShardRunner`s (`executors/ray_worker.py`) holding async clients, each with
  its share of the role's concurrency and rate limits; every part is committed atomically;
- between a segment that wrote a `FirstOfKeys` step's keys and the one that settles it, Ray
  tasks reduce the key buckets and the driver decides, in stream order, what is dropped
  (`executors/shuffle.py`): the result of one process, not dedup within each shard;
- a gather segment (other global steps: Self-Instruct rounds, semantic dedup, ...) runs on the
  driver over every part's records, in order, with the driver's clients.

Exactly once: record ids are deterministic, parts are committed whole or not at all, a rerun
reuses every part committed from the same input without failures, and the output file takes
each id at most once. Workers' cache files are folded into the main cache after each segment
and at the start of a run (also those of killed workers), so a rerun makes no call again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from synthaug.backends.cache import merge_caches
from synthaug.errors import ConfigError, MissingDependency, StepError
from synthaug.executors.base import Executor, ExecutorOptions, Session
from synthaug.executors.chain import chain_steps
from synthaug.executors.plan import Plan
from synthaug.executors.ray_worker import ShardRunner, WorkerSetup, run_parts
from synthaug.executors.segments import Segment, plan_segments
from synthaug.executors.shards import (
    InputShard,
    PartStore,
    PartWriter,
    add_stats,
    add_usage,
    read_part,
    read_shard,
    scan_input,
    stats_data,
)
from synthaug.executors.shuffle import SHIFT, decide, shared_keys
from synthaug.io import aiter_records
from synthaug.pipeline import Pipeline
from synthaug.records import Record, stable_hash

# a part's source: ("shard", InputShard fields) or ("part", committed part folder); + fingerprint
Source = tuple[str, Any, str]


class RayOptions(ExecutorOptions):
    """Where the cluster is and how the work is cut."""

    address: str | None = None  # None: $RAY_ADDRESS if set, else a Ray started here
    workers: int | None = Field(None, ge=1)  # actors per segment (default: the cluster's CPUs)
    worker_cpus: float = Field(1.0, gt=0)  # CPUs each actor reserves
    shard_size: int = Field(10_000, ge=1)  # input records per shard
    buckets: int | None = Field(None, ge=1)  # key shuffle partitions (default 2 x workers, >= 8)
    attempts: int = Field(3, ge=1)  # tries of a segment's unfinished parts before failing


class RayExecutor(Executor):
    """Runs a pipeline on Ray: shard segments on worker actors, the rest on the driver."""

    name: ClassVar[str] = "ray"
    Options: ClassVar[type[ExecutorOptions]] = RayOptions
    options: RayOptions
    _shipped: Pipeline
    _began: float = 0.0

    def check(self, pipeline: Pipeline, plan: Plan) -> None:
        super().check(pipeline, plan)
        budget = self.config.budget
        if budget.max_cost is not None or budget.max_tokens is not None:
            raise ConfigError("--max-tokens and --max-cost are enforced by the local executor "
                              "only: run without them, or with --executor local")
        if self.tap is not None:
            raise ConfigError("a preview runs on the local executor")
        _ray()

    async def schedule(self, session: Session) -> None:
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            self._init(ray)
        try:
            merge_caches(session.files.cache)  # what killed workers of an earlier run paid for
            workers = self._workers(ray)
            session.state.executor.update(workers=workers, shard_size=self.options.shard_size,
                                          segments=[], reused_parts=0, worker_max_rss_mb={})
            clock = time.monotonic()
            self._shipped = shippable(session.pipeline)
            segments = plan_segments(session.pipeline)
            warming = _warm_up(ray, self._shipped, workers, self.options.worker_cpus) \
                if segments and not _calls_models(session.pipeline, segments[0]) else []
            sources = self._input(session)
            del warming
            session.state.executor["scan_seconds"] = round(time.monotonic() - clock, 3)
            done_by_segment: list[tuple[PartStore, int]] = []
            decisions: dict[int, dict[str, str]] = {}
            for segment in segments:
                clock = time.monotonic()
                began = self._began = time.time()
                store = PartStore(self.config.out_dir.absolute() / "shards" / segment.name)
                if segment.kind == "gather":
                    sources = await self._gather(segment, sources, store, session)
                else:
                    sources = await self._shard(segment, sources, store, session, workers,
                                                decisions)
                    ran = time.monotonic()
                    decisions = await self._decide(segment, store, len(sources), workers)
                    session.state.executor["segments"][-1]["shuffle_seconds"] = round(
                        time.monotonic() - ran, 3)
                done_by_segment.append((store, len(sources)))
                merge_caches(session.files.cache)
                session.state.executor["segments"][-1].update(
                    seconds=round(time.monotonic() - clock, 3), began=round(began, 3))
            clock = time.monotonic()
            self._assemble(session, done_by_segment)
            session.state.executor["assemble_seconds"] = round(time.monotonic() - clock, 3)
        finally:
            if started_here:
                ray.shutdown()

    # -- setup -------------------------------------------------------------------------
    def _init(self, ray: Any) -> None:
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=self.options.workers, **kwargs)

    def _workers(self, ray: Any) -> int:
        if self.options.workers:
            return self.options.workers
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.options.worker_cpus))

    def _input(self, session: Session) -> list[Source]:
        path = session.plan.input_path
        if path is None:
            return []
        shards = scan_input(path, required=session.plan.requirements,
                            id_field=self.config.id_field, limit=self.config.limit,
                            shard_size=self.options.shard_size, side=session.files.side)
        return [("shard", asdict(s), s.fingerprint()) for s in shards]

    # -- shard segments ----------------------------------------------------------------
    async def _shard(self, segment: Segment, sources: list[Source], store: PartStore,
                     session: Session, workers: int,
                     decisions: dict[int, dict[str, str]]) -> list[Source]:
        """Run a shard segment over every source part; returns its committed parts."""
        buckets = self._buckets(workers)
        jobs, made = [], []
        for part, (kind, where, print_) in enumerate(sources):
            chosen = decisions.get(part, {}) if segment.settle is not None else {}
            fingerprint = stable_hash([segment.signature(), print_, chosen, buckets])
            made.append(fingerprint)
            done = store.done(part, fingerprint)
            if done is not None:
                self._absorb(session, done, reused=True)
                continue
            store.discard(part)  # outdated, or with failures to try again
            source = {"shard": where} if kind == "shard" else {"part": str(Path(where).absolute())}
            jobs.append({"segment_name": segment.name, "part": part, "source": source,
                         "fingerprint": fingerprint, "decisions": chosen})
        store.clear_unfinished()
        session.state.executor["segments"].append(
            {"name": segment.name, "steps": [session.pipeline.steps[i][0]
                                             for i in segment.counted()],
             "parts": len(sources), "ran": len(jobs)})
        given = session.plan.input_path
        actors = max(1, min(workers, len(jobs)))  # the role's limits are shared by these
        setup = WorkerSetup(out_dir=str(self.config.out_dir.absolute()),
                            cache_path=str(session.files.cache.path.absolute()),
                            input_path=str(given.absolute()) if given else None,
                            input_name=str(given) if given else None,
                            segment={**asdict(segment), "counted": segment.counted()},
                            shares=self._shares(session, segment, actors), buckets=buckets,
                            queue_size=self.config.queue_size)
        await self._run_jobs(jobs, store, session, setup, workers)
        return [("part", store.path(part),
                 store.done(part, fp, retry_failed=False)["digest"])  # type: ignore[index]
                for part, fp in enumerate(made)]

    async def _run_jobs(self, jobs: list[dict[str, Any]], store: PartStore, session: Session,
                        setup: WorkerSetup, workers: int) -> None:
        """Run part jobs on Ray Data until every part is committed (or attempts run out)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.options.attempts + 1):
            left = [job for job in jobs if not _committed(store, job)]
            if not left:
                return
            try:
                await asyncio.to_thread(
                    _map_parts, left, self._shipped, setup, min(workers, len(left)),
                    self.options.worker_cpus,
                    lambda done: _call_soon(loop, self._absorb, session, done))
            except Exception as exc:  # a worker or the pool died: retry what is unfinished
                merge_caches(session.files.cache)
                if attempt == self.options.attempts:
                    raise StepError(f"segment {setup.segment['index']}: parts still unfinished "
                                    f"after {attempt} attempts: {exc}") from exc
        unfinished = [job["part"] for job in jobs if not _committed(store, job)]
        if unfinished:
            raise StepError(f"parts {unfinished[:5]} were not committed")

    def _absorb(self, session: Session, done: dict[str, Any], reused: bool = False) -> None:
        """Add a part's counters to the run's."""
        state = session.state
        add_stats({s.label: s for s in state.steps}, done["stats"])
        if reused:
            state.executor["reused_parts"] += 1
            return
        segment = state.executor["segments"][-1]
        if "first_part_s" not in segment:  # how long the workers took to start
            segment["first_part_s"] = round(time.time() - done["seconds"] - self._began, 3)
        add_usage(state.usage, done["usage"])
        state.worker_calls += done["calls"]
        rss = state.executor["worker_max_rss_mb"]
        rss[str(done["pid"])] = max(rss.get(str(done["pid"]), 0.0), done["max_rss_mb"])

    def _buckets(self, workers: int) -> int:
        return self.options.buckets or max(8, 2 * workers)

    def _shares(self, session: Session, segment: Segment,
                workers: int) -> dict[str, dict[str, Any]]:
        """Each actor's share of every role's concurrency and rate limits."""
        shares: dict[str, dict[str, Any]] = {}
        for index in segment.steps:
            for use in session.pipeline.steps[index][1].uses():
                options = session.plan.backends[use.role].options
                share: dict[str, Any] = {"concurrency": math.ceil(options.concurrency / workers)}
                for name in ("requests_per_minute", "tokens_per_minute"):
                    if getattr(options, name) is not None:
                        share[name] = getattr(options, name) / workers
                shares[use.role] = share
        return shares

    # -- the key shuffle ---------------------------------------------------------------
    async def _decide(self, segment: Segment, store: PartStore, parts: int,
                      workers: int) -> dict[int, dict[str, str]]:
        """{part: {record index: id of the kept record it duplicates}} for the next settle."""
        if segment.keys is None:
            return {}
        ray = _ray()
        folders = [store.path(part) for part in range(parts)]
        reduce = ray.remote(num_cpus=1)(shared_keys)
        refs = [reduce.remote(folders, bucket) for bucket in range(self._buckets(workers))]
        rows = await asyncio.to_thread(ray.get, refs)
        dropped = decide(rows)
        ids: dict[int, list[str]] = {}
        chosen: dict[int, dict[str, str]] = {}
        mask = (1 << SHIFT) - 1
        for position, first in dropped.items():
            owner = first >> SHIFT
            if owner not in ids:
                ids[owner] = store.ids(owner)
            chosen.setdefault(position >> SHIFT, {})[str(position & mask)] = \
                ids[owner][first & mask]
        return chosen

    # -- gather segments ---------------------------------------------------------------
    async def _gather(self, segment: Segment, sources: list[Source], store: PartStore,
                      session: Session) -> list[Source]:
        """Run global steps on the driver over every part, in order; output re-sharded."""
        fingerprint = stable_hash([segment.signature(), [s[2] for s in sources]])
        labels = [session.pipeline.steps[i][0] for i in segment.steps]
        session.state.executor["segments"].append(
            {"name": segment.name, "steps": labels, "parts": len(sources), "ran": 1})
        parts = _gathered_parts(store, fingerprint)
        if parts is not None:
            session.state.executor["segments"][-1]["ran"] = 0
            self._absorb(session, parts[-1], reused=True)
            return [("part", store.path(i), d["digest"]) for i, d in enumerate(parts)]
        stats = [s for s in session.state.steps if s.label in labels]
        writers: list[PartWriter] = []
        side = _Rolling(store, writers)
        made = chain_steps([session.pipeline.steps[i] for i in segment.steps],
                           aiter_records(self._records(sources, session)),
                           recipe=session.pipeline.name, seed=session.pipeline.seed,
                           stats=stats, side=side, clients=session.clients,
                           usage=session.state.usage, out_dir=self.config.out_dir,
                           queue_size=self.config.queue_size)
        async for record in made:
            side.current(self.options.shard_size).add(record)
        side.current(0)  # at least one part, even for no output
        for i, writer in enumerate(writers):
            last = i == len(writers) - 1
            writer.commit({"fingerprint": fingerprint, "part_of": len(writers), "last": last,
                           "stats": stats_data(stats) if last else [], "usage": {},
                           "calls": 0, "pid": os.getpid(), "max_rss_mb": 0.0})
        found = _gathered_parts(store, fingerprint) or []
        return [("part", store.path(i), d["digest"]) for i, d in enumerate(found)]

    def _records(self, sources: list[Source], session: Session) -> Iterator[Record]:
        """Every source part's records, in order."""
        for kind, where, _ in sources:
            if kind == "shard":
                assert session.plan.input_path is not None
                yield from read_shard(session.plan.input_path, InputShard(**where),
                                      session.pipeline.name)
            else:
                yield from read_part(Path(where))

    # -- output ------------------------------------------------------------------------
    def _assemble(self, session: Session, segments: list[tuple[PartStore, int]]) -> None:
        """Records of the last segment's parts into records.jsonl (each id once); every
        part's side rows into the side files."""
        files, state = session.files, session.state
        for store, parts in segments:
            for part in range(parts):
                for kind, row in store.side_rows(part):
                    files.side.write(kind, row)
        if segments:
            store, parts = segments[-1]
            for part in range(parts):
                state.written += files.writer.copy_lines(store.path(part) / "records.jsonl",
                                                         store.ids(part))


class _Rolling:
    """Side rows and records of a gather segment, cut into parts of `shard_size` records."""

    def __init__(self, store: PartStore, writers: list[PartWriter]) -> None:
        self.store, self.writers = store, writers

    def current(self, size: int) -> PartWriter:
        if not self.writers or (size and self.writers[-1].written >= size):
            self.writers.append(self.store.writer(len(self.writers)))
        return self.writers[-1]

    def write(self, kind: str, row: dict[str, Any]) -> None:
        self.current(0).write(kind, row)


def shippable(pipeline: Pipeline) -> Pipeline:
    """The pipeline workers get: built again from its recipe, so that what validation loaded
    on the driver (benchmark indexes, sandboxes, models) is not shipped; workers prepare the
    steps they run themselves."""
    if pipeline.recipe is None:
        return pipeline
    return Pipeline.from_recipe(pipeline.recipe.model_copy(deep=True), pipeline.source)


def _committed(store: PartStore, job: dict[str, Any]) -> bool:
    return store.done(job["part"], job["fingerprint"], retry_failed=False) is not None


def _gathered_parts(store: PartStore, fingerprint: str) -> list[dict[str, Any]] | None:
    """The done records of a gather segment's parts, if all were committed."""
    first = store.done(0, fingerprint, retry_failed=False)
    if first is None:
        return None
    found = [store.done(i, fingerprint, retry_failed=False) for i in range(int(first["part_of"]))]
    if any(d is not None and d["side"].get("failures") for d in found):
        return None  # a rerun tries failed records again
    if any(d is None for d in found) or not found[-1].get("last"):  # type: ignore[union-attr]
        return None
    return found  # type: ignore[return-value]


def _calls_models(pipeline: Pipeline, segment: Segment) -> bool:
    return any(pipeline.steps[i][1].uses() for i in segment.steps)


def _warm_up(ray: Any, pipeline: Pipeline, workers: int, cpus: float) -> list[Any]:
    """Start `workers` tasks that import what the shard segments run, while the driver scans
    the input: Ray reuses those warm processes for a CPU segment's tasks (an actor pool
    starts processes of its own: then this would only hold the CPUs it waits for)."""
    task = ray.remote(num_cpus=cpus)(_imported)
    return [task.remote(pipeline) for _ in range(workers)]


def _imported(pipeline: Pipeline) -> int:
    return len(pipeline.steps)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    loop.call_soon_threadsafe(fn, *args)


def _map_parts(jobs: list[dict[str, Any]], pipeline: Pipeline, setup: WorkerSetup,
               actors: int, cpus: float, report: Callable[[dict[str, Any]], None]) -> None:
    """Run part jobs (blocking): an actor pool through Ray Data `map_batches` when they call
    models (actors keep their clients, cache and limits between parts), else plain tasks on
    worker processes Ray keeps warm (a Ray Data dataset costs seconds to start, more than
    a CPU segment's small parts take)."""
    ray = _ray()
    rows = [{"job": json.dumps(job)} for job in jobs]
    if not setup.shares:
        task = ray.remote(num_cpus=cpus)(run_parts)
        where = ray.put(pipeline)
        pending = [task.remote({"job": [row["job"]]}, where, setup) for row in rows]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for text in ray.get(ready[0])["result"]:
                    report(json.loads(text))
        finally:  # a failed attempt leaves no task behind to race the next one
            for ref in pending:
                ray.cancel(ref, force=True)
        return
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress lines and notices
    with warnings.catch_warnings():  # Ray Data's own deprecations are not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        data = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = data.map_batches(ShardRunner, fn_constructor_args=(pipeline, setup),
                                   batch_size=1, num_cpus=cpus, batch_format="default",
                                   compute=ray.data.ActorPoolStrategy(size=actors))
        for row in results.iter_rows():
            report(json.loads(row["result"]))


def _ray() -> Any:
    """The ray module, or a MissingDependency naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependency("ray[data]", "the ray executor", "ray") from None
    return ray
