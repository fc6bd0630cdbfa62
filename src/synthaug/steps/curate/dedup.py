"""Exact and near-duplicate removal (MinHash-LSH) as streaming steps.

Both keep the first record of each cluster and drop later members with the id of the record
they duplicate; kept records carry `_meta.cluster` (their own id: the cluster's key). Both are
`FirstOfKeys` steps (`steps/sharded.py`): a sharding executor combines shards by shuffling their
keys, with the same result as one process.
MinHash signatures come from `rensa` in batches; the LSH band index is ours: one dict of band
keys (the hash of each band's values) for kept records only, so memory grows with unique
documents, not all documents. Keys of different bands share the dict: two bands collide only if
their value tuples are equal, which random 32-bit hashes make negligible.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import ClassVar

from pydantic import Field

from synthaug.errors import ConfigError
from synthaug.records import Record, meta
from synthaug.steps.base import Global, Requirements, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.minhash import band_keys
from synthaug.steps.curate.textkey import TEXTLIKE, normalize, record_text
from synthaug.steps.sharded import FirstIndex


class DedupOptions(StepOptions):
    """Options shared by the dedup steps."""

    fields: list[str] = ["text"]


def settle(record: Record, first: str | None, ctx: StepContext, reason: str,
           detail: str) -> Record | None:
    """The kept record, marked as its cluster's key; or None after dropping a duplicate."""
    if first is None:
        return {**record, "_meta": {**meta(record), "cluster": meta(record).get("id")}}
    ctx.drop({**record, "_meta": {**meta(record), "cluster": first}}, reason,
             f"{detail} {first}")
    ctx.stats.notes["duplicates"] += 1
    return None


class ExactDedup(Global[DedupOptions]):
    """Drops records whose normalized text was seen before (8-byte BLAKE2b keys)."""

    Options: ClassVar[type[StepOptions]] = DedupOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._seen: FirstIndex[str] = FirstIndex()

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def record_keys(self, records: list[Record]) -> list[list[int]]:
        """One key per record: the hash of its normalized text."""
        return [[int.from_bytes(hashlib.blake2b(
            normalize(record_text(r, self.options.fields)).encode(), digest_size=8).digest(),
            "big", signed=True)] for r in records]

    def settle(self, record: Record, first: str | None, ctx: StepContext) -> Record | None:
        return settle(record, first, ctx, "exact duplicate", "duplicate of")

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        rid = str(meta(record).get("id"))
        kept = self.settle(record, self._seen.offer(rid, self.record_keys([record])[0]), ctx)
        return [kept] if kept is not None else []


class MinHashOptions(DedupOptions):
    """Options of minhash-dedup: shingles, permutations, and bands x rows or a threshold."""

    shingle_size: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    batch_size: int = Field(256, ge=1)
    workers: int = Field(1, ge=1)

    tuning: ClassVar[frozenset[str]] = frozenset({"batch_size", "workers"})


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false-positive and false-negative areas."""
    import numpy as np

    xs = np.linspace(0.0, 1.0, 201)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        if rows == 0:
            continue
        prob = 1.0 - (1.0 - xs**rows) ** bands
        below, above = xs <= threshold, xs > threshold
        fp = float(np.trapezoid(prob[below], xs[below]))
        fn = float(np.trapezoid(1.0 - prob[above], xs[above]))
        cost = fp_weight * fp + (1.0 - fp_weight) * fn
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


class MinHashDedup(Step[MinHashOptions]):
    """Near-duplicate removal: a record matching a kept record in any LSH band is dropped.

    Signatures are computed per batch, in this process or in `workers` processes (batches
    are processed in order, so the result does not depend on the number of workers).
    """

    Options: ClassVar[type[StepOptions]] = MinHashOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        if (o.bands is None) != (o.rows is None):
            raise ConfigError("set both bands and rows, or neither (then threshold is used)",
                              field="bands")
        self.bands, self.rows = (o.bands, o.rows) if o.bands and o.rows else optimal_bands(
            o.threshold, o.num_perm)
        if self.bands * self.rows > o.num_perm:
            raise ConfigError(f"bands x rows = {self.bands * self.rows} exceeds num_perm "
                              f"{o.num_perm}", field="bands")
        self._index: FirstIndex[str] = FirstIndex()  # band key -> id of the kept record

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def _args(self, batch: list[Record]) -> tuple[list[str], int, int, int, int, int]:
        o = self.options
        return ([record_text(r, o.fields) for r in batch], o.shingle_size, o.num_perm, o.seed,
                self.rows, self.bands)

    def record_keys(self, records: list[Record]) -> list[list[int]]:
        """Each record's LSH band keys, in band order."""
        return band_keys(*self._args(records))

    def settle(self, record: Record, first: str | None, ctx: StepContext) -> Record | None:
        return settle(record, first, ctx, "near duplicate", "near duplicate of")

    def _keys(self, batch: list[Record], pool: Executor | None) -> Awaitable[list[list[int]]]:
        if pool is None:
            future: asyncio.Future[list[list[int]]] = asyncio.get_running_loop().create_future()
            future.set_result(self.record_keys(batch))
            return future
        return asyncio.get_running_loop().run_in_executor(pool, band_keys, *self._args(batch))

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        workers = self.options.workers
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) \
            if workers > 1 else None
        pending: deque[tuple[list[Record], Awaitable[list[list[int]]]]] = deque()
        batch: list[Record] = []
        try:
            async for record in stream:
                batch.append(record)
                if len(batch) >= self.options.batch_size:
                    pending.append((batch, self._keys(batch, pool)))
                    batch = []
                    while len(pending) > workers:
                        for out in await self._select(*pending.popleft(), ctx):
                            yield out
                        await asyncio.sleep(0)
            if batch:
                pending.append((batch, self._keys(batch, pool)))
            while pending:
                for out in await self._select(*pending.popleft(), ctx):
                    yield out
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    async def _select(self, batch: list[Record], keys_future: Awaitable[list[list[int]]],
                      ctx: StepContext) -> list[Record]:
        out = []
        for record, keys in zip(batch, await keys_future, strict=True):
            first = self._index.offer(str(meta(record).get("id")), keys)
            kept = self.settle(record, first, ctx)
            if kept is not None:
                out.append(kept)
        return out
