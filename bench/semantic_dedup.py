"""Semantic dedup in bounded memory: peak RSS and time of `synthaug dedup --method semantic`
(records and vectors spooled to disk, mini-batch k-means above 100,000 records) vs the
in-memory algorithm it replaced (every text and vector held, exact k-means), same machine.

A generated corpus (sentences of 16 words drawn from 40 topic vocabularies built from the
words of synthaug's shipped data) with planted near copies (one word replaced: cosine about
0.95 with the static embedder). Each run is its own process; its peak RSS comes from the
kernel (wait4). Recall: the share of planted pairs whose two sides were not both kept.
The in-memory baseline runs on `--baseline-docs` documents (default 50,000) because exact
k-means on a million vectors does not finish in reasonable time; the streamed step runs on
that size too (the same-size comparison) and on `--docs`.
Usage: python bench/semantic_dedup.py [--docs 1000000] [--baseline-docs 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "src" / "synthaug" / "data"
EPS = 0.1

BASELINE = """
import json, sys
import numpy as np
from sklearn.cluster import KMeans
from synthaug.embed import get_embedder
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
vectors = get_embedder("static").encode(texts)
k = max(1, round(len(texts) ** 0.5))
labels = KMeans(k, n_init=3, random_state=0).fit_predict(vectors)
keep = [True] * len(texts)
for cluster in range(k):
    members = np.flatnonzero(labels == cluster)
    centroid = vectors[members].mean(axis=0)
    order = members[np.argsort(vectors[members] @ centroid)]
    kept = []
    for index in order:
        if kept:
            sims = vectors[kept] @ vectors[index]
            if sims.max() > 1 - float(sys.argv[3]):
                keep[index] = False
                continue
        kept.append(int(index))
with open(sys.argv[2], "w") as out:
    out.write(json.dumps([i for i, k in enumerate(keep) if not k]))
"""


def corpus(path: Path, docs: int, seed: int = 0) -> set[int]:
    """Write `docs` documents; return the indices of planted near copies (copy of i - 1)."""
    words = sorted({w.lower() for f in DATA.glob("*.jsonl")
                    for w in re.findall(r"[A-Za-z]{4,}", f.read_text())})
    rng = random.Random(seed)
    rng.shuffle(words)
    size = max(50, len(words) // 40)
    topics = [words[i * size:(i + 1) * size] for i in range(40)]
    planted: set[int] = set()
    with path.open("w") as out:
        index = 0
        while index < docs:
            topic = topics[index % len(topics)]
            base = [rng.choice(topic) for _ in range(16)]
            out.write(json.dumps({"text": " ".join(base), "doc": index}) + "\n")
            index += 1
            if index < docs and rng.random() < 0.1:
                base[rng.randrange(16)] = rng.choice(topic)
                out.write(json.dumps({"text": " ".join(base), "doc": index}) + "\n")
                planted.add(index)
                index += 1
    return planted


def measured(command: list[str]) -> tuple[float, float]:
    """Run `command`; (seconds, peak RSS in MB) of that process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()[-2000:]}"
                         if process.stderr else "failed")
    return seconds, usage.ru_maxrss / 1024


def streamed(data: Path, folder: Path) -> tuple[float, float, set[int]]:
    """The synthaug step through the CLI: (s, MB, dropped doc indices)."""
    out = folder / "out"
    cli = str(Path(sys.executable).parent / "synthaug")
    seconds, rss = measured([cli, "dedup", str(data),
                             "--out", str(out), "--method", "semantic", "--eps", str(EPS)])
    with (out / "dropped.jsonl").open() as rows:
        dropped = {json.loads(line)["record"]["doc"] for line in rows}
    return seconds, rss, dropped


def in_memory(data: Path, folder: Path) -> tuple[float, float, set[int]]:
    """The replaced in-memory algorithm: (s, MB, dropped doc indices)."""
    result = folder / "dropped.json"
    seconds, rss = measured([sys.executable, "-c", BASELINE, str(data), str(result),
                             str(EPS)])
    return seconds, rss, set(json.loads(result.read_text()))


def recall(planted: set[int], dropped: set[int]) -> float:
    return sum((i in dropped) != (i - 1 in dropped) for i in planted) / max(1, len(planted))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--baseline-docs", type=int, default=50_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for docs, methods in ((args.baseline_docs, ("in-memory (replaced)", "synthaug")),
                              (args.docs, ("synthaug",))):
            data = Path(tmp) / f"corpus-{docs}.jsonl"
            planted = corpus(data, docs)
            for method in methods:
                folder = Path(tempfile.mkdtemp(dir=tmp))
                run = in_memory if method.startswith("in-memory") else streamed
                seconds, rss, dropped = run(data, folder)
                rows.append({"method": method, "docs": docs, "seconds": round(seconds, 1),
                             "docs_per_s": round(docs / seconds), "peak_rss_mb": round(rss),
                             "dropped": len(dropped), "planted": len(planted),
                             "planted_recall": round(recall(planted, dropped), 3)})
                print(f"{method:22} {docs:>9,} docs {seconds:8.1f} s {rss:8.0f} MB peak "
                      f"{len(dropped):>8,} dropped, planted recall "
                      f"{rows[-1]['planted_recall']:.3f}", flush=True)
    print(json.dumps({"bench": "semantic_dedup", "eps": EPS, "rows": rows}))


if __name__ == "__main__":
    main()
