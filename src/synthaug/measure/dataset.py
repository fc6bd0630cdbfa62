"""All measures of one dataset (optionally against a reference), as a JSON-able dict."""

from __future__ import annotations

from typing import Any

from synthaug.measure import metrics
from synthaug.records import Record
from synthaug.steps.curate.textkey import record_text

SCORE_HINTS = ("score", "rating", "reward")


def text_fields(records: list[Record]) -> list[str]:
    """The string fields of the records, most common first (a default for `fields`)."""
    seen: dict[str, int] = {}
    for record in records[:200]:
        for key, value in record.items():
            if key != "_meta" and isinstance(value, str):
                seen[key] = seen.get(key, 0) + 1
    return sorted(seen, key=lambda k: -seen[k])


def measure(records: list[Record], *, fields: list[str] | None = None,
            reference: list[Record] | None = None, group_by: str | None = None,
            embedder: str | None = "static", sample: int = 100) -> dict[str, Any]:
    """Diversity, redundancy, coverage, lengths, scores, groups and (with a reference) the gap."""
    fields = fields or text_fields(records)[:2]
    texts = [record_text(r, fields) for r in records]
    result: dict[str, Any] = {
        "records": len(records), "fields": fields,
        "distinct_1": metrics.distinct_n(texts, 1), "distinct_2": metrics.distinct_n(texts, 2),
        "distinct_3": metrics.distinct_n(texts, 3),
        "self_bleu": metrics.self_bleu(texts, sample=sample),
        "compression_ratio": metrics.compression_ratio(texts),
        "lengths": metrics.length_stats(texts),
        "scores": {k: metrics.score_distribution([r.get(k) for r in records])
                   for k in _score_fields(records)},
    }
    if group_by:
        result["groups"] = metrics.group_counts([r.get(group_by, "?") for r in records])
    if embedder and texts:
        from synthaug.embed import get_embedder

        model = get_embedder(embedder)
        vectors = model.encode(texts)
        result["vendi"] = metrics.vendi_score(vectors)
        ref_vectors = None
        if reference:
            ref_vectors = model.encode([record_text(r, fields) for r in reference])
            result["gap"] = metrics.distribution_gap(vectors, ref_vectors)
        result["coverage"] = metrics.cluster_coverage(vectors, ref_vectors)
    return result


def _score_fields(records: list[Record]) -> list[str]:
    keys = {k for r in records[:200] for k, v in r.items() if isinstance(v, int | float)}
    return sorted(k for k in keys if any(h in k.lower() for h in SCORE_HINTS))
