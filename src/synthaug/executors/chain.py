"""Step chaining: a pipeline's steps over one stream, each step a task between bounded queues.

The one per-step machinery of a run: the local executor runs it over the whole input, the Ray
executor over each shard, `synthaug serve` over each request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from synthaug.backends.pool import AnyClient
from synthaug.budget import Meter, charging
from synthaug.records import Record
from synthaug.steps.base import AnyStep
from synthaug.steps.context import SideFiles, StepContext, StepStats
from synthaug.streams import drain, pipe

Tap = Callable[[str, Record], None]  # (step label, a record the step made): a preview's trace


async def chain_steps(steps: Sequence[tuple[str, AnyStep]], stream: AsyncIterator[Record], *,
                      recipe: str, seed: int, stats: list[StepStats], side: SideFiles,
                      clients: dict[str, AnyClient], usage: Meter, out_dir: Path | None,
                      queue_size: int = 256, tap: Tap | None = None
                      ) -> AsyncGenerator[Record, None]:
    """`steps` over `stream`: each step a task between bounded queues, its calls charged to
    `usage`; closing the generator cancels every step (and its calls in flight)."""
    pumps = []
    for (label, step), counts in zip(steps, stats, strict=True):
        roles = [use.role for use in step.uses()]
        ctx = StepContext(label=label, recipe=recipe, seed=seed, stats=counts, side=side,
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
            record.setdefault("_meta", {}).setdefault("recipe", recipe)
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
