"""The local executor: asyncio in this process, steps streaming through bounded queues.

Every step runs as its own task between two bounded queues (`executors/chain.py`), so a slow
step applies back-pressure and memory stays flat for streaming steps. Output is appended
record by record as it is made; a rerun skips ids already written and replays answered prompts
from the cache. The run lifecycle (validation, files, manifest, status) is `executors/base.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import ClassVar

from synthaug.executors.base import (
    STATUSES,
    Executor,
    ExecutorOptions,
    RunConfig,
    RunState,
    Session,
    Watcher,
)
from synthaug.executors.chain import Tap, chain_steps
from synthaug.inputs import read_input
from synthaug.io import aiter_records
from synthaug.records import Record

__all__ = ["STATUSES", "LocalExecutor", "RunConfig", "RunState", "Tap", "Watcher"]


class LocalExecutor(Executor):
    """Runs a pipeline in this process."""

    name: ClassVar[str] = "local"
    Options: ClassVar[type[ExecutorOptions]] = ExecutorOptions

    async def schedule(self, session: Session) -> None:
        pipeline, plan, files, cfg = session.pipeline, session.plan, session.files, self.config
        stream: AsyncIterator[Record] = aiter_records(iter(()))
        if plan.input_path:
            stream = aiter_records(read_input(plan.input_path, required=plan.requirements,
                                              recipe=pipeline.name, side=files.side,
                                              limit=cfg.limit, id_field=cfg.id_field))
        made = chain_steps(pipeline.steps, stream, recipe=pipeline.name, seed=pipeline.seed,
                           stats=session.state.steps, side=files.side, clients=session.clients,
                           usage=session.state.usage, out_dir=cfg.out_dir,
                           queue_size=cfg.queue_size, tap=self.tap)
        async with aclosing(made):
            async for record in made:
                if files.writer.write(record):
                    session.state.written += 1
