"""Labeling quality of the llm-labeling recipe against gold labels, with its baselines.

Runs the recipe's `llm-label` step on the shipped gold set (`llm_labeling_sentiment.jsonl`:
42 sentiment sentences, `gold` in positive/negative/neutral, written for synthaug) with the
embedded model, or an OpenAI-compatible server (--base-url, --model), then prints:

- accuracy against gold (a record the step could not label counts as wrong) and macro-F1,
  for self-consistency over k samples (default 5), a single sample (k = 1: the same first
  sample, replayed from the shared cache) and the majority class of the gold labels;
- calibration of each confidence the run gives (vote share, verbalized, and logprob with
  --logprobs on a server that returns them): accuracy and mean confidence per bucket of
  width 0.2, and the expected calibration error (the bucket-size-weighted mean gap).

Prints a table and one JSON line of the figures. With the embedded SmolLM2-135M the figures
show the measurement works end to end, not what a capable labeler achieves.
Usage: python bench/labeling.py [--limit 21] [--k 5] [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from synthaug.executors.local import LocalExecutor, RunConfig
from synthaug.pipeline import BackendSpec, Pipeline, resolve_recipe

BUCKETS = 5


def pipeline(k: int, args: argparse.Namespace) -> Pipeline:
    """The llm-labeling recipe with k samples, on the embedded model or the given server."""
    recipe, source = resolve_recipe("llm-labeling")
    if args.base_url:
        recipe.backends["default"] = BackendSpec(use="openai", with_={
            "base_url": args.base_url, "model": args.model, "concurrency": args.concurrency})
    step = recipe.steps[0].with_
    step.update(k=k, logprobs=args.logprobs)
    return Pipeline.from_recipe(recipe, source)


def run_labels(k: int, args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]],
                                                                    float]:
    """The labeled records of one run (sharing one response cache) and its seconds."""
    started = time.monotonic()
    config = RunConfig(out_dir=work / f"k{k}", limit=args.limit, cache_path=work / "cache.db")
    LocalExecutor(config).run(pipeline(k, args))
    lines = (work / f"k{k}" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line], time.monotonic() - started


def gold_rows(limit: int) -> list[dict[str, Any]]:
    """The gold set's first `limit` rows (the order the run reads them)."""
    from synthaug.io import data_file

    text = data_file("llm_labeling_sentiment.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()][:limit]


def scores(predicted: list[str | None], gold: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (labels: those in gold; a missing prediction is wrong)."""
    f1s = []
    for label in sorted(set(gold)):
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, gold, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, gold, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    right = sum(p == g for p, g in zip(predicted, gold, strict=True))
    return {"accuracy": round(right / len(gold), 4), "macro_f1": round(sum(f1s) / len(f1s), 4)}


def calibration(pairs: list[tuple[float, bool]]) -> dict[str, Any]:
    """Per bucket of confidence: count, accuracy, mean confidence; and the ECE."""
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(BUCKETS):
        low, high = b / BUCKETS, (b + 1) / BUCKETS
        inside = [(c, ok) for c, ok in pairs if low <= c < high or (b == BUCKETS - 1 and c == 1)]
        if not inside:
            continue
        accuracy = sum(ok for _, ok in inside) / len(inside)
        confidence = sum(c for c, _ in inside) / len(inside)
        ece += len(inside) / len(pairs) * abs(accuracy - confidence)
        table.append({"bucket": f"{low:.1f}-{high:.1f}", "n": len(inside),
                      "accuracy": round(accuracy, 3), "confidence": round(confidence, 3)})
    return {"ece": round(ece, 4), "buckets": table}


def evaluate(records: list[dict[str, Any]], gold: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores and calibration of one run's records against the gold rows."""
    by_text = {r["text"]: r for r in records}
    labeled = [by_text.get(row["text"]) for row in gold]
    predicted = [r["label"] if r else None for r in labeled]
    found: dict[str, Any] = {**scores(predicted, [row["gold"] for row in gold]),
                             "labeled": sum(r is not None for r in labeled)}
    for kind in ("vote_share", "verbalized", "logprob"):
        pairs = [(float(r["confidence"][kind]), r["label"] == row["gold"])
                 for r, row in zip(labeled, gold, strict=True)
                 if r and r["confidence"].get(kind) is not None]
        if pairs:
            found[kind] = calibration(pairs)
    return found


def show(name: str, result: dict[str, Any]) -> None:
    print(f"{name:<22} accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}"
          f"  labeled {result.get('labeled', '-')}")
    for kind in ("vote_share", "verbalized", "logprob"):
        if kind in result:
            cells = "  ".join(f"[{b['bucket']}] n={b['n']} acc={b['accuracy']:.2f} "
                              f"conf={b['confidence']:.2f}" for b in result[kind]["buckets"])
            print(f"  {kind:<11} ECE {result[kind]['ece']:.3f}   {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=21, help="gold rows labeled (max 42)")
    parser.add_argument("--k", type=int, default=5, help="samples per record")
    parser.add_argument("--base-url", help="an OpenAI-compatible server instead of the "
                        "embedded model")
    parser.add_argument("--model", default="default", help="the server's model name")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--logprobs", action="store_true",
                        help="also the first-token logprob confidence (server must give them)")
    args = parser.parse_args()
    gold = gold_rows(args.limit)
    with tempfile.TemporaryDirectory(prefix="synthaug-bench-labeling-") as tmp:
        many, seconds_many = run_labels(args.k, args, Path(tmp))
        one, seconds_one = run_labels(1, args, Path(tmp))
    majority = Counter(row["gold"] for row in gold).most_common(1)[0][0]
    figures = {
        "model": args.model if args.base_url else "embedded SmolLM2-135M", "rows": len(gold),
        "k": args.k, f"self_consistency_k{args.k}": evaluate(many, gold),
        "single_sample_k1": evaluate(one, gold),
        "majority_class": {**scores([majority] * len(gold), [row["gold"] for row in gold]),
                           "label": majority},
        "seconds": {f"k{args.k}": round(seconds_many, 1), "k1": round(seconds_one, 1)},
    }
    print(f"labeling {len(gold)} gold rows with {figures['model']}")
    show(f"self-consistency k={args.k}", figures[f"self_consistency_k{args.k}"])
    show("single sample k=1", figures["single_sample_k1"])
    show(f"majority class ({majority})", figures["majority_class"])
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
