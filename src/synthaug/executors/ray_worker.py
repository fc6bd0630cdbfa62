"""What a Ray worker runs: one part of a shard segment, from its source to a committed part.

`ShardRunner` is the callable class Ray Data's `map_batches` places on each actor of the
pool: it keeps an event loop in a thread with the clients of the roles its segment calls
(each with its share of the role's concurrency and rate limits) and a cache file of its own
that reads through to the run's main cache. Each batch row is one part job (JSON);
`run_part` reads the source (an input shard or the previous segment's part), settles a
`FirstOfKeys` step with the driver's decisions, runs the per-record steps, writes the next
`FirstOfKeys` step's keys, and commits the part.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.backends.cache import ResponseCache, worker_cache
from synthaug.backends.pool import AnyClient, make_client
from synthaug.budget import Meter
from synthaug.executors.chain import chain_steps
from synthaug.executors.shards import (
    InputShard,
    PartStore,
    PartWriter,
    read_part,
    read_shard,
    stats_data,
    usage_data,
)
from synthaug.executors.shuffle import write_keys
from synthaug.io import aiter_records
from synthaug.pipeline import BackendSpec, Pipeline, build_backend
from synthaug.records import Record
from synthaug.steps.context import StepContext, StepStats
from synthaug.steps.sharded import FirstOfKeys

KEY_BATCH = 256  # records per call of a step's `record_keys`


@dataclass
class WorkerSetup:
    """What every worker of a segment needs besides the pipeline."""

    out_dir: str
    cache_path: str
    input_path: str | None  # absolute: workers run in the folder their cluster started in
    input_name: str | None  # the input as the user gave it (records' `_meta.source`)
    segment: dict[str, Any]  # Segment fields
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> option overrides
    buckets: int = 16
    queue_size: int = 256


class ShardRunner:
    """A Ray Data actor: runs part jobs of one segment with long-lived clients."""

    def __init__(self, pipeline: Pipeline, setup: WorkerSetup) -> None:
        self.pipeline, self.setup = pipeline, setup
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        roles = {use.role for i in setup.segment["steps"]
                 for use in pipeline.steps[i][1].uses()}
        self.cache: ResponseCache | None = None
        self.clients: dict[str, AnyClient] = {}
        if roles:
            name = f"{setup.segment['index']:02d}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            self.cache = worker_cache(Path(setup.cache_path), name)
            for role in sorted(roles):
                spec = pipeline.backends[role]
                shared = BackendSpec.model_validate(
                    {"use": spec.use, "with": {**spec.with_, **setup.shares.get(role, {})}})
                self.clients[role] = make_client(build_backend(shared, role=role), self.cache)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        results = []
        for text in batch["job"]:
            work = run_part(json.loads(str(text)), self.pipeline, self.setup, self.clients)
            results.append(json.dumps(asyncio.run_coroutine_threadsafe(work, self.loop)
                                      .result()))
        return {"result": results}


def run_parts(batch: dict[str, Any], pipeline: Pipeline, setup: WorkerSetup
              ) -> dict[str, list[str]]:
    """A Ray Data task over part jobs of a segment that calls no model (no clients to keep:
    Ray reuses warm worker processes across segments)."""
    return {"result": [json.dumps(asyncio.run(run_part(json.loads(str(text)), pipeline, setup,
                                                       {})))
                       for text in batch["job"]]}


async def run_part(job: dict[str, Any], pipeline: Pipeline, setup: WorkerSetup,
                   clients: dict[str, AnyClient]) -> dict[str, Any]:
    """Make and commit one part; returns its done record."""
    segment = setup.segment
    clock = time.monotonic()
    store = PartStore(Path(setup.out_dir) / "shards" / job["segment_name"])
    writer = store.writer(job["part"])
    stats = [StepStats(pipeline.steps[i][0]) for i in segment["counted"]]
    meter = Meter()
    calls_before = sum(c.stats.calls for c in clients.values())
    try:
        for index in segment["steps"]:
            await asyncio.to_thread(pipeline.steps[index][1].prepare)
        stream = aiter_records(_source(job, pipeline, setup))
        if segment["settle"] is not None:
            stream = _settled(stream, pipeline, segment["settle"], job, stats[0], writer)
        steps = [pipeline.steps[i] for i in segment["steps"]]
        made = chain_steps(steps, stream, recipe=pipeline.name, seed=pipeline.seed,
                           stats=stats[-len(steps):] if steps else [], side=writer,
                           clients=clients, usage=meter, out_dir=Path(setup.out_dir),
                           queue_size=setup.queue_size)
        keyer = pipeline.steps[segment["keys"]][1] if segment["keys"] is not None else None
        async with aclosing(made):
            await _write(made, writer, keyer, job["part"], setup.buckets)
    except BaseException:
        writer.abandon()
        raise
    done = {"fingerprint": job["fingerprint"], "stats": stats_data(stats),
            "usage": usage_data(meter),
            "calls": sum(c.stats.calls for c in clients.values()) - calls_before,
            "pid": os.getpid(), "max_rss_mb": peak_rss_mb(),
            "seconds": round(time.monotonic() - clock, 3), "finished": time.time()}
    committed = writer.commit(done)
    return {**done, "part": job["part"], "committed": committed}


def _source(job: dict[str, Any], pipeline: Pipeline, setup: WorkerSetup) -> Iterator[Record]:
    source = job["source"]
    if "shard" in source:
        assert setup.input_path is not None
        return read_shard(Path(setup.input_path), InputShard(**source["shard"]), pipeline.name,
                          setup.input_name)
    return read_part(Path(source["part"]))


async def _settled(stream: AsyncIterator[Record], pipeline: Pipeline, index: int,
                   job: dict[str, Any], stats: StepStats, side: PartWriter
                   ) -> AsyncIterator[Record]:
    """Records of the source after the driver's decisions of a FirstOfKeys step."""
    label, step = pipeline.steps[index]
    assert isinstance(step, FirstOfKeys)
    ctx = StepContext(label=label, recipe=pipeline.name, seed=pipeline.seed, stats=stats,
                      side=side)
    dropped: dict[str, str] = job.get("decisions", {})
    position, stats.started = 0, time.monotonic()
    async for record in stream:
        stats.inputs += 1
        kept = step.settle(record, dropped.get(str(position)), ctx)
        position += 1
        if kept is not None:
            stats.outputs += 1
            yield kept
    stats.seconds, stats.done = time.monotonic() - stats.started, True


async def _write(made: AsyncIterator[Record], writer: PartWriter, keyer: Any, part: int,
                 buckets: int) -> None:
    """Write the records made; with `keyer` (a FirstOfKeys step), their keys too."""
    keys: list[list[int]] = []
    batch: list[Record] = []
    async for record in made:
        writer.add(record)
        if keyer is not None:
            batch.append(record)
            if len(batch) >= KEY_BATCH:
                keys.extend(keyer.record_keys(batch))
                batch = []
    if keyer is not None:
        if batch:
            keys.extend(keyer.record_keys(batch))
        write_keys(writer.folder, part, keys, buckets)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (VmHWM: unlike ru_maxrss, not
    inherited from the process that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
