"""How far the AI judges of a dataset can be trusted, measured on their own verdicts.

Judge steps (`judge-pair`, `judge-rate`, `judge-rank`) leave one `judgements` entry per
verdict in each record (kept or dropped). From those:

- position bias, from pairs judged in both orders: the share of swapped pairs whose two
  votes went to the same position (the judge followed the position, not the content), and
  among those, how often it was the first position (a sign test: with no position bias,
  first and second are equally likely; unswapped votes say nothing about position, since
  the order is then the pool's); for rankings, the share ranked top when shown first
  (expected 1/K);
- length bias: the share of decided votes won by the longer response, and the rank
  correlation between a rated response's length and its score;
- self-preference: the share of votes a judge gives its own model's response against
  another model's, and its mean rating of its own responses minus others'.

A share is flagged when it departs from its expected value by at least 0.1 and a two-sided
exact binomial test gives p < 0.01 (at least 10 votes); the rating figures are flagged when
the own-minus-other gap is at least 0.5 points (10+ ratings each) or the length correlation
is at least 0.3 (20+ ratings). A flag says "look at this judge", not "the data is wrong":
longer answers can be better.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from statistics import fmean
from typing import Any

from synthaug.records import Record

MIN_VOTES = 10
ALPHA = 0.01
MIN_SHIFT = 0.1


def binomial_p(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test: the chance of an outcome as unlikely as k of n."""
    if n == 0:
        return 1.0

    def log_pmf(i: int) -> float:
        return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                + (i * math.log(p) if i else 0.0) + ((n - i) * math.log1p(-p) if n - i else 0.0))

    observed = log_pmf(k)
    total = sum(math.exp(lp) for i in range(n + 1) if (lp := log_pmf(i)) <= observed + 1e-9)
    return min(1.0, total)


def share_test(hits: int, votes: int, expected: float = 0.5) -> dict[str, Any]:
    """A share with its test against `expected` and whether it is flagged."""
    if votes == 0:
        return {"votes": 0, "share": None, "expected": expected, "p_value": None,
                "flagged": False}
    share = hits / votes
    p_value = binomial_p(hits, votes, expected)
    flagged = votes >= MIN_VOTES and p_value < ALPHA and abs(share - expected) >= MIN_SHIFT
    return {"votes": votes, "share": round(share, 4), "expected": round(expected, 4),
            "p_value": float(f"{p_value:.3g}"), "flagged": flagged}


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None if undefined."""
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        found = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                found[order[k]] = (i + j) / 2
            i = j + 1
        return found

    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = fmean(rx), fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return None if var == 0 else cov / var


def _entries(records: Iterable[Record]) -> list[list[dict[str, Any]]]:
    """Each record's judgement entries (a dropped row's record counts too), counted once:
    records derived from one parent with the same entries (several pairs made from one set
    of verdicts) give them once."""
    found, seen = [], set()
    for row in records:
        record = row.get("record") if isinstance(row.get("record"), dict) else row
        entries = record.get("judgements") if isinstance(record, dict) else None
        if not isinstance(entries, list):
            continue
        parents = (record.get("_meta") or {}).get("parents") if isinstance(record, dict) else None
        key = json.dumps([parents, entries], sort_keys=True, default=str)
        if parents and key in seen:
            continue
        seen.add(key)
        found.append([e for e in entries if isinstance(e, dict)])
    return found


def _swapped(entries: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """The two winners (positions 0/1/None) of every pair judged in both orders by the same
    judge under the same principle, first order first."""
    votes: dict[tuple[Any, ...], list[Any]] = {}
    for e in (e for e in entries if e.get("kind") == "pair"):
        shown = e.get("shown") or []
        if len(shown) == 2:
            key = (e.get("judge"), e.get("principle"), e.get("step"), *sorted(shown))
            votes.setdefault(key, []).append(e.get("winner"))
    return [(v[0], v[1]) for v in votes.values() if len(v) == 2]


def _pairs(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    first = second = swapped = split = longer = own = 0
    by_length = by_self = 0
    for entries in groups:
        for one, two in _swapped(entries):
            swapped += 1
            if one in (0, 1) and one == two:  # the same position won twice: not the content
                split += 1
                first += one == 0
                second += one == 1
        for e in (e for e in entries if e.get("kind") == "pair"):
            winner = e.get("winner")
            if winner not in (0, 1):
                continue
            lengths, models = e.get("lengths") or [0, 0], e.get("models") or [None, None]
            if lengths[0] != lengths[1]:
                by_length += 1
                longer += lengths[winner] == max(lengths)
            mine = [m == e.get("judge") and m is not None for m in models]
            if sum(mine) == 1:
                by_self += 1
                own += mine[winner]
    return {"position": share_test(first, first + second),
            "swap_disagreement": {"swapped_pairs": swapped,
                                  "share": round(split / swapped, 4) if swapped else None},
            "length": share_test(longer, by_length), "self_preference": share_test(own, by_self)}


def _ratings(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    lengths: list[float] = []
    scores: list[float] = []
    own: list[float] = []
    other: list[float] = []
    for entries in groups:
        for e in (e for e in entries if e.get("kind") == "rate"):
            if not isinstance(e.get("score"), int | float):
                continue
            lengths.append(float(e.get("length") or 0))
            scores.append(float(e["score"]))
            if e.get("model") is not None:
                (own if e.get("model") == e.get("judge") else other).append(float(e["score"]))
    rho = spearman(lengths, scores)
    gap = fmean(own) - fmean(other) if own and other else None
    return {"ratings": len(scores),
            "length_correlation": {"rho": None if rho is None else round(rho, 4),
                                   "flagged": rho is not None and len(scores) >= 20
                                   and rho >= 0.3},
            "self_preference": {"own": len(own), "other": len(other),
                                "gap": None if gap is None else round(gap, 4),
                                "flagged": gap is not None and gap >= 0.5
                                and min(len(own), len(other)) >= MIN_VOTES}}


def _rankings(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    top = count = 0
    expected: list[float] = []
    for entries in groups:
        for e in (e for e in entries if e.get("kind") == "rank"):
            ranking = e.get("ranking") or []
            if ranking:
                count += 1
                top += ranking[0] == 0
                expected.append(1 / len(ranking))
    return {"first_shown_ranked_top": share_test(top, count, fmean(expected) if expected
                                                 else 0.5)}


def judge_biases(rows: Iterable[Record]) -> dict[str, Any]:
    """Position, length and self-preference figures of the judges behind `rows` (records
    and dropped rows); {} when no judge left a verdict."""
    groups = _entries(rows)
    if not any(groups):
        return {}
    judges = sorted({str(e.get("judge")) for entries in groups for e in entries})
    return {"judges": judges, "pairwise": _pairs(groups), "ratings": _ratings(groups),
            "rankings": _rankings(groups)}
