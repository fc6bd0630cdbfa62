"""Corpus-level measures over texts and their embeddings.

distinct-n (Li et al., 2016), self-BLEU on a sample (Zhu et al., 2018; sacrebleu), gzip
compression ratio, embedding Vendi score (Friedman & Dieng, 2023), k-means cluster coverage,
length and score distributions, counts per group (the long tail), and the gap between a
synthetic and a reference set (Fréchet distance of embeddings, centroid cosine).
"""

from __future__ import annotations

import gzip
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        tokens = text.lower().split()
        grams += zip(*(tokens[i:] for i in range(n)), strict=False)
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], sample: int = 100, seed: int = 0) -> float:
    """Mean BLEU of each sampled text against the other sampled texts (higher: more alike)."""
    import sacrebleu

    pool = [t for t in texts if t.strip()]
    if len(pool) < 2:
        return 0.0
    chosen = random.Random(seed).sample(pool, min(sample, len(pool)))
    scores = [sacrebleu.sentence_bleu(h, chosen[:i] + chosen[i + 1:]).score
              for i, h in enumerate(chosen)]
    return float(np.mean(scores))


def compression_ratio(texts: Sequence[str]) -> float:
    """Raw bytes / gzip bytes of the concatenated texts (higher: more redundant)."""
    raw = "\n".join(texts).encode()
    return len(raw) / max(1, len(gzip.compress(raw)))


def vendi_score(vectors: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K the cosine kernel: the effective number of
    distinct items. Computed from the d x d covariance, which shares K's eigenvalues."""
    n = len(vectors)
    if n == 0:
        return 0.0
    eig = np.linalg.eigvalsh((vectors.T @ vectors) / n)
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()
    return float(math.exp(-float(np.sum(eig * np.log(eig)))))


def cluster_coverage(vectors: np.ndarray, reference: np.ndarray | None = None,
                     k: int = 20, seed: int = 0) -> dict[str, float]:
    """Cluster the reference (or the data) into k; how many clusters the data reaches, and the
    normalized entropy of its spread over them (1.0: even)."""
    from sklearn.cluster import KMeans

    base = reference if reference is not None else vectors
    k = max(1, min(k, len(base)))
    model = KMeans(k, n_init=3, random_state=seed).fit(base)
    counts = np.bincount(model.predict(vectors), minlength=k)
    share = counts / max(1, counts.sum())
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(k)) if k > 1 else 1.0
    return {"clusters": k, "covered": float((counts > 0).mean()), "entropy": entropy}


def length_stats(texts: Sequence[str]) -> dict[str, Any]:
    """Word-count summary and a 10-bin histogram."""
    lengths = np.array([len(t.split()) for t in texts] or [0])
    hist, edges = np.histogram(lengths, bins=10)
    return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max()),
            "histogram": {"counts": hist.tolist(), "edges": [round(e, 1) for e in edges]}}


def group_counts(values: Sequence[Any]) -> dict[str, Any]:
    """Counts per group (topic, taxonomy leaf) and long-tail figures."""
    counts = Counter(str(v) for v in values)
    if not counts:
        return {"groups": 0, "counts": {}}
    ordered = counts.most_common()
    total = sum(counts.values())
    top = max(1, len(ordered) // 10)
    return {"groups": len(counts), "counts": dict(ordered),
            "top_10pct_share": sum(c for _, c in ordered[:top]) / total,
            "singletons": sum(1 for _, c in ordered if c == 1)}


def score_distribution(values: Sequence[Any]) -> dict[str, int]:
    """Counts per score value (numbers only)."""
    return dict(sorted(Counter(str(v) for v in values if isinstance(v, int | float)).items()))


def distribution_gap(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Fréchet distance between Gaussian fits of two embedding sets, and centroid cosine."""
    from scipy import linalg

    mu1, mu2 = vectors.mean(axis=0), reference.mean(axis=0)
    c1, c2 = np.cov(vectors, rowvar=False), np.cov(reference, rowvar=False)
    covmean = np.real(linalg.sqrtm(c1 @ c2))
    frechet = float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))
    cosine = float(mu1 @ mu2 / max(1e-12, np.linalg.norm(mu1) * np.linalg.norm(mu2)))
    return {"frechet": max(0.0, frechet), "centroid_cosine": cosine}
