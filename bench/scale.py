"""The Ray executor vs the local executor on this machine (baseline: the local executor).

1. CPU curation: bench/scale_curate.yaml (Gopher repetition limits, a non-printable filter,
   MinHash-LSH near-dedup) over `--docs` generated documents (20% near copies of earlier
   ones, 3% degenerate repeats), local vs Ray with `--workers` workers. Goal: >= 1.6x on
   2 cores. The outputs must be byte-identical (checked).
2. LLM pipeline: the text-generation recipe over `--records` records against one test server
   (its own process, `--delay` s per answer), local at concurrency C vs Ray with the same C
   shared by the workers. Goal: Ray no slower than local.

Each run is its own process; its peak memory is read from the OS (the driver, and every Ray
worker as reported in the manifest). Ray's start-up (`ray.init`, a few seconds) is timed
apart: a cluster is normally up before a run.
Usage: python bench/scale.py [--docs 200000] [--workers 2] [--records 2000] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import start_server
from synthaug.executors.ray_worker import peak_rss_mb

HERE = Path(__file__).parent


def corpus(path: Path, docs: int, seed: int = 7) -> None:
    """Documents of ~100 words; 20% near copies (2 words changed), 3% degenerate repeats."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze")
             for b in range(2000)]
    originals: list[list[str]] = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(docs):
            roll = rng.random()
            if originals and roll < 0.2:
                words = list(rng.choice(originals[-5000:]))
                for pos in rng.sample(range(len(words)), 2):
                    words[pos] = rng.choice(vocab)
            else:
                words = rng.choices(vocab, k=rng.randint(90, 110))
                originals.append(words)
            if roll > 0.97:
                words = words[:10] * 10
            out.write(json.dumps({"id": i, "text": " ".join(words)}) + "\n")


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints its figures as JSON."""
    from synthaug.executors.base import RunConfig
    from synthaug.overrides import build_executor, build_pipeline

    choices: dict[str, Any] = {}
    if args.url:
        choices = {"backend": "openai", "base_url": args.url, "model": "fake",
                   "concurrency": args.concurrency}
    pipeline = build_pipeline(args.recipe, backends_file=None, choices=choices,
                              backend_options=["stream=false"] if args.url else None,
                              sets=None)
    options = [f"workers={args.workers}", f"shard_size={args.shard_size}"]
    figures: dict[str, Any] = {}
    if args.executor == "ray":
        import ray

        clock = time.monotonic()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        figures["ray_init_s"] = round(time.monotonic() - clock, 2)
    executor = build_executor(pipeline, name=args.executor,
                              options=options if args.executor == "ray" else None,
                              config=RunConfig(out_dir=Path(args.out),
                                               input_path=Path(args.input), overwrite=True))
    clock = time.monotonic()
    state = executor.run(pipeline)
    figures.update(seconds=round(time.monotonic() - clock, 2), written=state.written,
                   status=state.status, calls=state.calls(),
                   driver_peak_mb=peak_rss_mb(),
                   workers_peak_mb=state.executor.get("worker_max_rss_mb", {}),
                   segments=state.executor.get("segments", []))
    print(json.dumps(figures))


def measured(executor: str, recipe: str, data: Path, out: Path, args: argparse.Namespace,
             url: str | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", executor, "--recipe", recipe, "--input",
               str(data), "--out", str(out), "--workers", str(args.workers), "--shard-size",
               str(args.shard_size), "--concurrency", str(args.concurrency)]
    if url:
        command += ["--url", url]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def show(label: str, local: dict[str, Any], ray: dict[str, Any], unit: float) -> None:
    print(f"\n## {label}")
    print("| executor | seconds | records/s | driver peak MB | worker peak MB |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("local (baseline)", local), ("ray", ray)):
        workers = ", ".join(f"{v:.0f}" for v in run["workers_peak_mb"].values()) or "-"
        print(f"| {name} | {run['seconds']:.1f} | {unit / run['seconds']:.0f} | "
              f"{run['driver_peak_mb']:.0f} | {workers} |")
    print(f"speed-up: {local['seconds'] / ray['seconds']:.2f}x "
          f"(ray.init took {ray['ray_init_s']:.1f} s more, not counted)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--only", choices=("curation", "llm"), help="run one part only")
    parser.add_argument("--child")
    parser.add_argument("--recipe")
    parser.add_argument("--input")
    parser.add_argument("--out")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        args.executor = args.child
        child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="synthaug-scale-"))
    if args.only != "llm":
        curation(work, args)
    if args.only != "curation":
        llm(work, args)


def curation(work: Path, args: argparse.Namespace) -> None:
    """Part 1: CPU curation, local vs Ray."""
    data = work / "docs.jsonl"
    corpus(data, args.docs)
    recipe = str(HERE / "scale_curate.yaml")
    local = measured("local", recipe, data, work / "local", args)
    ray = measured("ray", recipe, data, work / "ray", args)
    same = (work / "local/records.jsonl").read_bytes() == (work / "ray/records.jsonl").read_bytes()
    show(f"CPU curation: {args.docs} documents, {args.workers} workers, shards of "
         f"{args.shard_size}", local, ray, args.docs)
    met = local["seconds"] / ray["seconds"] >= 1.6
    print(f"kept {local['written']} (local) and {ray['written']} (ray); outputs identical: "
          f"{same}; goal >= 1.6x: {'met' if met else 'NOT met'}")


def llm(work: Path, args: argparse.Namespace) -> None:
    """Part 2: an LLM pipeline against one test server, local vs Ray."""
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Write about item {i}."}) + "\n"
                               for i in range(args.records)), encoding="utf-8")
    server, url = start_server(args.delay)
    try:
        args.shard_size = max(1, args.records // (4 * args.workers))
        local = measured("local", "text-generation", prompts, work / "llm-local", args, url)
        ray = measured("ray", "text-generation", prompts, work / "llm-ray", args, url)
    finally:
        server.terminate()
    show(f"LLM pipeline: {args.records} records, one test server ({args.delay} s per answer), "
         f"total concurrency {args.concurrency}", local, ray, args.records)
    first = min(segment.get("first_part_s", 0.0) for segment in ray["segments"])
    print(f"calls: {local['calls']} (local), {ray['calls']} (ray); Ray's first shard started "
          f"{first:.1f} s into its run (actor pool start-up); goal ray no slower than local: "
          f"{'met' if ray['seconds'] <= local['seconds'] else 'NOT met'}")


if __name__ == "__main__":
    main()
