"""Agreement between the model's labels and people's: Cohen's kappa (model vs each person,
model vs the merged human label, each pair of people on the items both labeled), Fleiss'
kappa (people, on items two or more labeled) and the confusion of model vs human labels.

Reads records merged by `synthaug annotate import`: `model_label` (or `model_labels`) and
`human_labels` {annotator: label}. A multi-label answer counts as one category (its labels
joined with '|'), so two answers agree only when their label sets are equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Any

from synthaug.records import Record


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e), p_e from
    each rater's own label shares; None when undefined (no items, or p_e = 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    left, right = Counter(a), Counter(b)
    expected = sum(left[k] * right[k] for k in left) / (n * n)
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(items: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa of the ratings of each item (items with fewer than two are skipped;
    with a varying number of raters per item, P_i uses each item's own count and p_j the
    share of all ratings). None when undefined."""
    rated = [list(r) for r in items if len(r) >= 2]
    if not rated:
        return None
    per_item = []
    totals: Counter[Hashable] = Counter()
    for ratings in rated:
        counts = Counter(ratings)
        totals.update(counts)
        n = len(ratings)
        per_item.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
    observed = sum(per_item) / len(per_item)
    all_ratings = sum(totals.values())
    expected = sum((c / all_ratings) ** 2 for c in totals.values())
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def _category(value: Any) -> str:
    return "|".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pair(a: list[str], b: list[str]) -> dict[str, Any]:
    agree = sum(x == y for x, y in zip(a, b, strict=True))
    return {"kappa": _round(cohen_kappa(a, b)), "items": len(a),
            "agreement": round(agree / len(a), 4) if a else None}


def confusion(model: list[str], human: list[str]) -> dict[str, Any]:
    """Counts of (model label, human label): rows the model's, columns the people's."""
    labels = sorted(set(model) | set(human))
    counts = Counter(zip(model, human, strict=True))
    return {"labels": labels,
            "matrix": [[counts[(m, h)] for h in labels] for m in labels]}


def label_agreement(records: Sequence[Record]) -> dict[str, Any] | None:
    """Model/human and human/human agreement over records with both kinds of label; None
    when no record has a human label next to a model label."""
    rows = []
    for r in records:
        people = r.get("human_labels")
        key = "model_label" if "model_label" in r else "model_labels"
        if isinstance(people, dict) and people and r.get(key) is not None:
            final = r.get("label" if key == "model_label" else "labels")
            rows.append((_category(r[key]), {k: _category(v) for k, v in people.items()},
                         _category(final)))
    if not rows:
        return None
    model = [m for m, _, _ in rows]
    merged = [f for _, _, f in rows]
    people = sorted({name for _, found, _ in rows for name in found})
    per_person = {}
    for name in people:
        both = [(m, found[name]) for m, found, _ in rows if name in found]
        per_person[name] = _pair([m for m, _ in both], [h for _, h in both])
    pairs = {}
    for x, y in combinations(people, 2):
        both = [(found[x], found[y]) for _, found, _ in rows if x in found and y in found]
        if both:
            pairs[f"{x} | {y}"] = _pair([p for p, _ in both], [q for _, q in both])
    several = [list(found.values()) for _, found, _ in rows if len(found) >= 2]
    return {"items": len(rows), "annotators": people,
            "model_vs_human": _pair(model, merged), "model_vs_annotator": per_person,
            "annotator_pairs": pairs,
            "fleiss": {"kappa": _round(fleiss_kappa(several)), "items": len(several)},
            "confusion": confusion(model, merged)}
