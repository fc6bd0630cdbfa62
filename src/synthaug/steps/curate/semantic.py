"""Semantic deduplication (SemDeDup, Abbas et al., 2023; as applied by Tsai et al., 2024):
encode -> reduce -> cluster -> prune, in bounded memory.

Records are spooled to disk as they arrive and embedded in batches (a pluggable embedder);
the unit vectors go to a raw float32 file, read back in blocks. Vectors are optionally
reduced with PCA (fitted on a sample), clustered with k-means (exact k-means up to
`exact_up_to` records; above it mini-batch k-means refined by streamed Lloyd iterations over
the blocks, memory independent of the record count); inside each cluster,
records whose cosine similarity to a kept record exceeds 1 - eps are dropped. Which record of
a group is kept: `hard` (least similar to the centroid, the paper's default), `easy` (most
similar). Memory grows with the number of records only by a few bytes each (cluster label,
keep flag, id); the vectors and records stay on disk (`spool_dir`, default the run folder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from synthaug.records import Record, meta
from synthaug.steps.base import Global, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.spool import Spool
from synthaug.steps.curate.textkey import TEXTLIKE, record_text

if TYPE_CHECKING:
    import numpy as np

BLOCK = 16_384  # rows per block read back from the vector spool
PCA_SAMPLE = 50_000  # rows the PCA is fitted on


class SemanticOptions(StepOptions):
    """Options of semantic-dedup."""

    fields: list[str] = ["text"]
    embedder: str = "static"
    clusters: int | None = None  # default: about sqrt(n)
    dims: int | None = None  # PCA dimensions; None keeps the embedder's
    eps: float = 0.05
    keep: Literal["hard", "easy"] = "hard"
    seed: int = 0
    exact_up_to: int = Field(100_000, ge=0)  # above this many records: mini-batch k-means
    epochs: int = Field(5, ge=0)  # streamed Lloyd iterations after mini-batch k-means
    batch_size: int = Field(4_096, ge=1)  # texts embedded at once
    spool_dir: str | None = None  # default: OUT/.spool (a temporary folder without a run)


class SemanticDedup(Global[SemanticOptions]):
    """Drops records semantically near a kept record of the same k-means cluster."""

    Options: ClassVar[type[StepOptions]] = SemanticOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._spool: Spool | None = None
        self._texts: list[str] = []

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext
                  ) -> AsyncIterator[Record]:
        try:
            async for record in super().run(stream, ctx):
                yield record
        finally:  # an upstream error, Ctrl-C or a cancelled task: no spool left behind
            if self._spool is not None:
                self._spool.close()
            self._spool, self._texts = None, []

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        if self._spool is None:
            parent = Path(self.options.spool_dir) if self.options.spool_dir else (
                ctx.out_dir / ".spool" if ctx.out_dir is not None else None)
            self._spool = Spool(parent, "semantic-dedup")
        text = record_text(record, self.options.fields)  # a record unfit is rejected first
        self._spool.add_record(record)
        self._texts.append(text)
        if len(self._texts) >= self.options.batch_size:
            self._embed(self._spool)
        return ()

    def _embed(self, spool: Spool) -> None:
        from synthaug.embed import get_embedder

        if self._texts:
            spool.add_vectors(get_embedder(self.options.embedder).encode(self._texts))
            self._texts = []

    def finish(self, ctx: StepContext) -> Iterator[Record]:
        spool, self._spool = self._spool, None
        if spool is None:
            return
        try:
            self._embed(spool)
            spool.seal()
            keep, duplicate_of = self.prune(spool)
            yield from self._emit(spool, keep, duplicate_of, ctx)
        finally:
            spool.close()

    def _emit(self, spool: Spool, keep: np.ndarray, duplicate_of: np.ndarray,
              ctx: StepContext) -> Iterator[Record]:
        ids: dict[int, Any] = {int(j): None for j in duplicate_of[~keep]}
        for i, record in enumerate(spool.records()):  # ids of kept duplicated rows
            if i in ids:
                ids[i] = meta(record).get("id")
        for i, record in enumerate(spool.records()):
            if keep[i]:
                yield record
                continue
            first = ids[int(duplicate_of[i])]
            ctx.drop({**record, "_meta": {**meta(record), "cluster": first}},
                     "semantic duplicate", f"cosine > {1 - self.options.eps:.2f} with {first}")
            ctx.stats.notes["semantic duplicates"] += 1

    def prune(self, spool: Spool) -> tuple[np.ndarray, np.ndarray]:
        """Which spooled rows to keep, and for each dropped one the row it duplicates."""
        import numpy as np

        o, n = self.options, spool.count
        reduce = _reducer(spool, o.dims, o.seed)
        k = min(n, o.clusters or max(1, round(n ** 0.5)))
        labels = _cluster(spool, reduce, k, o, exact=n <= o.exact_up_to)
        keep, duplicate_of = np.ones(n, dtype=bool), np.arange(n)
        order = np.argsort(labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])
        for cluster in range(k):
            members = order[bounds[cluster]:bounds[cluster + 1]]
            if len(members) > 1:
                _prune_cluster(reduce(spool.rows(members)), members, o, keep, duplicate_of)
        return keep, duplicate_of


Reduce = Any  # a function from a block of unit vectors to (possibly reduced) unit vectors


def _reducer(spool: Spool, dims: int | None, seed: int) -> Reduce:
    """Identity, or a PCA fitted on a sample of the spooled rows (rows re-normalized)."""
    import numpy as np

    if not dims or dims >= spool.dim or spool.count <= dims:
        return lambda block: block
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(spool.count, min(spool.count, PCA_SAMPLE), replace=False))
    pca = PCA(dims, random_state=seed).fit(spool.rows(sample))

    def reduce(block: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(pca.transform(block), dtype=np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    return reduce


def _cluster(spool: Spool, reduce: Reduce, k: int, o: SemanticOptions, exact: bool
             ) -> np.ndarray:
    """A k-means cluster label per spooled row: exact k-means on all rows at once, or
    mini-batch k-means (seeded on a random sample, one pass over the blocks) refined by
    `epochs` streamed Lloyd iterations (per-cluster sums accumulated block by block)."""
    import numpy as np
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if exact:
        vectors = np.concatenate([reduce(b) for b in spool.chunks(BLOCK)])
        return np.asarray(KMeans(k, n_init=3, random_state=o.seed).fit_predict(vectors))
    rng = np.random.default_rng(o.seed)
    model = MiniBatchKMeans(k, random_state=o.seed, batch_size=BLOCK, n_init=3)
    start = np.sort(rng.choice(spool.count, min(spool.count, max(3 * k, BLOCK)),
                               replace=False))
    model.partial_fit(reduce(spool.rows(start)))
    for block in spool.chunks(BLOCK):
        if len(block) >= k:
            model.partial_fit(reduce(block))
    centroids = np.asarray(model.cluster_centers_, dtype=np.float32)
    for _ in range(o.epochs):
        centroids = _lloyd_step(spool, reduce, centroids)
    return np.concatenate([_nearest(reduce(b), centroids) for b in spool.chunks(BLOCK)])


def _nearest(block: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of each row."""
    import numpy as np

    scores = block @ centroids.T - 0.5 * (centroids * centroids).sum(axis=1)
    return np.asarray(scores.argmax(axis=1))


def _lloyd_step(spool: Spool, reduce: Reduce, centroids: np.ndarray) -> np.ndarray:
    """One k-means iteration over the spooled rows; an empty cluster keeps its centroid."""
    import numpy as np
    from scipy.sparse import csr_matrix

    k = len(centroids)
    sums = np.zeros_like(centroids, dtype=np.float64)
    counts = np.zeros(k)
    for raw in spool.chunks(BLOCK):
        block = reduce(raw)
        labels = _nearest(block, centroids)
        onehot = csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                            shape=(k, len(labels)))
        sums += onehot @ block
        counts += np.bincount(labels, minlength=k)
    filled = counts > 0
    out = centroids.copy()
    out[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return out


def _prune_cluster(vectors: np.ndarray, members: np.ndarray, o: SemanticOptions,
                   keep: np.ndarray, duplicate_of: np.ndarray) -> None:
    """Greedy pruning inside one cluster, in centroid order, against the records kept so
    far; similarities are computed a block at a time."""
    import numpy as np

    centroid = vectors.mean(axis=0)
    to_centroid = vectors @ centroid
    order = np.argsort(to_centroid if o.keep == "hard" else -to_centroid, kind="stable")
    kept = np.empty((0, vectors.shape[1]), dtype=vectors.dtype)
    kept_rows: list[int] = []
    threshold = 1 - o.eps
    for start in range(0, len(order), 1024):
        block = order[start:start + 1024]
        block_vectors = vectors[block]
        earlier = block_vectors @ kept.T
        inside = block_vectors @ block_vectors.T
        new: list[int] = []
        for j, position in enumerate(block):
            sims = np.concatenate([earlier[j], inside[j, new]]) if new else earlier[j]
            if len(sims):
                best = int(np.argmax(sims))
                if sims[best] > threshold:
                    row = kept_rows[best] if best < len(kept_rows) else \
                        int(block[new[best - len(kept_rows)]])
                    keep[members[position]] = False
                    duplicate_of[members[position]] = members[row]
                    continue
            new.append(j)
        kept = np.concatenate([kept, block_vectors[new]])
        kept_rows.extend(int(block[j]) for j in new)
