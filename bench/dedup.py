"""Near-duplicate removal: synthaug's minhash-dedup step vs datasketch and rensa used directly.

A generated corpus (default 100,000 documents of ~300 words, written once to a JSONL file that
every method streams, so none holds it in memory) with planted exact copies (re-cased,
re-spaced) and near copies (3 words replaced). Every method uses the same word 5-gram
shingles (synthaug's `shingles`),
128 permutations and the same banding (16 bands x 8 rows), keeps the first document of a
cluster and drops later ones. Each runs in its own process: docs/s, peak RSS, and precision /
recall of the dropped set against the planted ground truth. synthaug runs twice: in one
process (like the libraries) and with `workers=2` (signatures in 2 worker processes).
Usage: python bench/dedup.py [--docs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from synthaug.steps.curate.textkey import shingles

NUM_PERM, BANDS, ROWS, SHINGLE = 128, 16, 8, 5


def corpus(n: int, seed: int = 7) -> Iterator[tuple[int, str, bool]]:
    """(index, text, planted duplicate?) — 10% exact copies, 10% near copies of earlier docs."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze")
             for b in range(2000)]
    originals: list[int] = []
    seeds: dict[int, int] = {}

    def original(i: int) -> list[str]:
        local = random.Random(seeds[i])
        return local.choices(vocab, k=local.randint(280, 320))

    for i in range(n):
        roll = rng.random()
        if originals and roll < 0.2:
            words = original(rng.choice(originals[-5000:]))
            if roll < 0.1:
                text = "  ".join(words).upper() if rng.random() < 0.5 else " ".join(words)
            else:
                for pos in rng.sample(range(len(words)), 3):
                    words[pos] = rng.choice(vocab)
                text = " ".join(words)
            yield i, text, True
        else:
            seeds[i] = rng.getrandbits(32)
            originals.append(i)
            yield i, " ".join(original(i)), False


def read(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield row["i"], row["text"]


def run_synthaug(path: str, workers: int = 1) -> set[int]:
    from synthaug.steps.context import StepContext, StepStats
    from synthaug.steps.curate.dedup import MinHashDedup

    class Discard:
        def write(self, kind: str, row: dict[str, Any]) -> None:
            return None

    step = MinHashDedup(fields=["text"], num_perm=NUM_PERM, bands=BANDS, rows=ROWS,
                        shingle_size=SHINGLE, workers=workers)
    ctx = StepContext(label="dedup", recipe="bench", seed=0, stats=StepStats("dedup"),
                      side=Discard())

    seen: list[int] = []

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i, text in read(path):
            seen.append(i)
            yield {"text": text, "_meta": {"id": str(i)}}

    async def go() -> set[int]:
        kept = {int(r["_meta"]["id"]) async for r in step.run(source(), ctx)}
        return set(seen) - kept

    return asyncio.run(go())


def run_rensa(path: str) -> set[int]:
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=0.8, num_perm=NUM_PERM, num_bands=BANDS)
    dropped = set()
    for i, text in read(path):
        m = RMinHash(num_perm=NUM_PERM, seed=1)
        m.update(shingles(text, SHINGLE))
        if lsh.query(m):
            dropped.add(i)
        else:
            lsh.insert(i, m)
    return dropped


def run_datasketch(path: str) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS))
    dropped = set()
    for i, text in read(path):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode() for s in shingles(text, SHINGLE)])
        if lsh.query(m):
            dropped.add(i)
        else:
            lsh.insert(str(i), m)
    return dropped


def run_synthaug_2_workers(path: str) -> set[int]:
    return run_synthaug(path, workers=2)


METHODS = {"synthaug": run_synthaug, "synthaug-2w": run_synthaug_2_workers,
           "rensa": run_rensa, "datasketch": run_datasketch}


def child(method: str, path: str, n: int) -> None:
    start = time.perf_counter()
    dropped = METHODS[method](path)
    elapsed = time.perf_counter() - start
    with open(path + ".truth", encoding="utf-8") as handle:
        truth = set(json.load(handle))
    hit = len(dropped & truth)
    print(json.dumps({
        "method": method, "seconds": elapsed, "docs_per_s": n / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "precision": hit / len(dropped) if dropped else 1.0,
        "recall": hit / len(truth) if truth else 1.0, "dropped": len(dropped)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--child", choices=list(METHODS))
    parser.add_argument("--corpus", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus, args.docs)
        return
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "corpus.jsonl")
    truth = []
    with open(path, "w", encoding="utf-8") as handle:
        for i, text, dup in corpus(args.docs):
            handle.write(json.dumps({"i": i, "text": text}) + "\n")
            if dup:
                truth.append(i)
    with open(path + ".truth", "w", encoding="utf-8") as handle:
        json.dump(truth, handle)
    print(f"{args.docs} docs, shingles={SHINGLE} words, num_perm={NUM_PERM}, "
          f"bands x rows = {BANDS} x {ROWS}; each method in its own process")
    results = {}
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--docs", str(args.docs), "--child",
                              method, "--corpus", path], check=True, capture_output=True,
                             text=True).stdout
        results[method] = r = json.loads(out.strip().splitlines()[-1])
        workers = f" + each worker {r['worker_rss_mb']:.0f} MB" if r["worker_rss_mb"] else ""
        print(f"{method:<11} {r['docs_per_s']:8.0f} docs/s  {r['seconds']:6.1f}s  "
              f"peak RSS {r['peak_rss_mb']:4.0f} MB{workers}  precision {r['precision']:.4f}  "
              f"recall {r['recall']:.4f}  dropped {r['dropped']}")
    fastest = max(("rensa", "datasketch"), key=lambda m: results[m]["docs_per_s"])
    for ours in ("synthaug", "synthaug-2w"):
        ratio = results[ours]["docs_per_s"] / results[fastest]["docs_per_s"]
        print(f"{ours} / fastest direct library ({fastest}): {ratio:.2f}x docs/s")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
