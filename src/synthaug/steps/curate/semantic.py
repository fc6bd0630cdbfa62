"""Semantic deduplication (SemDeDup, Abbas et al., 2023; as applied by Tsai et al., 2024):
encode -> reduce -> cluster -> prune.

Embeddings (a pluggable embedder) are optionally reduced with PCA, clustered with k-means;
inside each cluster, records whose cosine similarity to a kept record exceeds 1 - eps are
dropped. Which record of a group is kept: `hard` (least similar to the centroid, the paper's
default), `easy` (most similar). Needs the whole stream, so it holds texts until the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from synthaug.records import Record, meta
from synthaug.steps.base import Global, Requirements, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.curate.textkey import TEXTLIKE, record_text


class SemanticOptions(StepOptions):
    """Options of semantic-dedup."""

    fields: list[str] = ["text"]
    embedder: str = "static"
    clusters: int | None = None  # default: about sqrt(n)
    dims: int | None = None  # PCA dimensions; None keeps the embedder's
    eps: float = 0.05
    keep: Literal["hard", "easy"] = "hard"
    seed: int = 0


class SemanticDedup(Global[SemanticOptions]):
    """Drops records semantically near a kept record of the same k-means cluster."""

    Options: ClassVar[type[StepOptions]] = SemanticOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._records: list[Record] = []

    def requires(self) -> Requirements:
        return dict.fromkeys(self.options.fields, TEXTLIKE)

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        self._records.append(record)
        return ()

    def finish(self, ctx: StepContext) -> Iterable[Record]:
        records, self._records = self._records, []
        if not records:
            return []
        keep, duplicate_of = self.prune(
            [record_text(r, self.options.fields) for r in records])
        out = []
        for i, record in enumerate(records):
            if keep[i]:
                out.append(record)
                continue
            first = meta(records[duplicate_of[i]]).get("id")
            ctx.drop({**record, "_meta": {**meta(record), "cluster": first}},
                     "semantic duplicate", f"cosine > {1 - self.options.eps:.2f} with {first}")
            ctx.stats.notes["semantic duplicates"] += 1
        return out

    def prune(self, texts: list[str]) -> tuple[list[bool], list[int]]:
        """Which texts to keep, and for each dropped one the index of the text it duplicates."""
        import numpy as np
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        from synthaug.embed import get_embedder

        o = self.options
        vectors = get_embedder(o.embedder).encode(texts)
        if o.dims and o.dims < vectors.shape[1] and len(texts) > o.dims:
            vectors = PCA(o.dims, random_state=o.seed).fit_transform(vectors)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        k = min(len(texts), o.clusters or max(1, round(len(texts) ** 0.5)))
        labels = KMeans(k, n_init=3, random_state=o.seed).fit_predict(vectors)
        keep, duplicate_of = [True] * len(texts), list(range(len(texts)))
        for cluster in range(k):
            members = np.flatnonzero(labels == cluster)
            centroid = vectors[members].mean(axis=0)
            to_centroid = vectors[members] @ centroid
            order = members[np.argsort(to_centroid if o.keep == "hard" else -to_centroid)]
            kept: list[int] = []
            for index in order:
                if kept:
                    sims = vectors[kept] @ vectors[index]
                    best = int(np.argmax(sims))
                    if sims[best] > 1 - o.eps:
                        keep[index], duplicate_of[index] = False, kept[best]
                        continue
                kept.append(int(index))
        return keep, duplicate_of
