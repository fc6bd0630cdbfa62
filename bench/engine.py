"""Engine throughput: synthaug `text-generation` vs a bare AsyncOpenAI loop, same server, same run.

A local OpenAI-compatible server (synthaug.testing.server, separate process) answers
every request after a fixed delay (100 ms), streamed word by word when asked to stream.
2,000 records at concurrency 50, like for like in each mode:
  - baseline: AsyncOpenAI + asyncio.Semaphore(50), one chat completion per record,
    streamed (chunks consumed) or not;
  - synthaug: the text-generation recipe end to end (read JSONL, cache, write JSONL,
    manifest), with the openai backend's default `stream: true`, then `stream: false`;
  - synthaug rerun from cache: records/s and calls made (must be 0).
Usage: python bench/engine.py [--records 2000] [--concurrency 50] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from synthaug.executors.local import LocalExecutor, RunConfig
from synthaug.pipeline import BackendSpec, Pipeline, resolve_recipe


def start_server(delay: float, *options: str) -> tuple[subprocess.Popen[str], str]:
    """The test server in its own process (more `options` on its command line, e.g. a
    capacity); returns it and its base URL once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "synthaug.testing", "--delay",
                             str(delay), *options], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/models", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


async def bare(url: str, prompts: list[str], concurrency: int, stream: bool) -> float:
    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    limit = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        sent: list[Any] = [{"role": "user", "content": prompt}]
        async with limit:
            if not stream:
                reply = await client.chat.completions.create(
                    model="fake", messages=sent, max_tokens=64)
                return reply.choices[0].message.content or ""
            chunks = await client.chat.completions.create(
                model="fake", messages=sent, max_tokens=64, stream=True,
                stream_options={"include_usage": True})
            parts = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
            return "".join(parts)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - start
    await client.close()
    assert len(results) == len(prompts) and all(results)
    return elapsed


def synthaug_run(url: str, data: Path, out: Path, concurrency: int,
                 stream: bool = True) -> tuple[float, int, int]:
    """(seconds, records in the output, HTTP calls made incl. retries)."""
    recipe, source = resolve_recipe("text-generation")
    recipe.backends["default"] = BackendSpec(use="openai", **{"with": {
        "base_url": url, "model": "fake", "concurrency": concurrency, "stream": stream}})
    recipe.steps[0].with_["sampling"] = {"max_tokens": 64}
    pipeline = Pipeline.from_recipe(recipe, source)
    start = time.perf_counter()
    state = LocalExecutor(RunConfig(out_dir=out, input_path=data)).run(pipeline)
    elapsed = time.perf_counter() - start
    total = state.written + state.resumed
    stats = state.clients["default"].stats
    if stats.retries or stats.failures:
        print(f"  note: {stats.retries} retries, {stats.failures} failures in this run")
    return elapsed, total, stats.calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    proc, url = start_server(args.delay)
    n = args.records
    best: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "in.jsonl"
            prompts = [f"Write a fact about the number {i}." for i in range(n)]
            data.write_text("".join(json.dumps({"instruction": p}) + "\n" for p in prompts))
            asyncio.run(bare(url, prompts[:100], args.concurrency, True))  # warm up
            for r in range(args.repeat):
                for stream in (True, False):
                    mode = "stream" if stream else "plain"
                    took = asyncio.run(bare(url, prompts, args.concurrency, stream))
                    best[f"bare {mode}"] = min(best.get(f"bare {mode}", took), took)
                    out = Path(tmp) / f"out-{mode}{r}"
                    took, total, calls = synthaug_run(url, data, out, args.concurrency, stream)
                    assert total == n, (total, calls)
                    best[f"ours {mode}"] = min(best.get(f"ours {mode}", took), took)
            rerun, total, calls = synthaug_run(url, data, out, args.concurrency)
    finally:
        proc.terminate()
        proc.wait()
    report(best, n, args, (rerun, total, calls))


def report(best: dict[str, float], n: int, args: argparse.Namespace,
           rerun: tuple[float, int, int]) -> None:
    ideal = n / args.concurrency * args.delay
    print(f"records={n} concurrency={args.concurrency} server delay={args.delay * 1000:.0f} ms "
          f"(ideal wall {ideal:.2f}s = {n / ideal:.0f} rec/s); best of {args.repeat}")
    for mode, label in (("stream", "streamed (default)"), ("plain", "stream: false")):
        bare_s, ours_s = best[f"bare {mode}"], best[f"ours {mode}"]
        print(f"{label}:")
        print(f"  bare AsyncOpenAI + semaphore : {bare_s:6.2f}s  {n / bare_s:7.1f} rec/s")
        print(f"  synthaug text-generation     : {ours_s:6.2f}s  {n / ours_s:7.1f} rec/s")
        print(f"  ratio synthaug / bare        : {bare_s / ours_s:.2f}x")
    took, total, calls = rerun
    print(f"rerun from cache               : {took:6.2f}s  {n / took:7.1f} rec/s, "
          f"{calls} calls, {total} records")

if __name__ == "__main__":
    main()
