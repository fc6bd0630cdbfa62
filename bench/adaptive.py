"""Adaptive concurrency vs the best static limit, against servers of known capacity.

For each capacity K (8, 32, 128) a local OpenAI-compatible server (synthaug.testing.server,
separate process) answers after a fixed delay and with 429 + Retry-After: 1 above K
requests in flight. One `LLMClient` (the openai backend, not streamed, default retries)
makes one call per record, with 2x its ceiling records in progress as a step does:
  - static: `adaptive: false` at limits K/2, K and 2K (the sweep; K is the best possible);
  - adaptive: `adaptive: true` under a ceiling of 256 (a guess well above every K).
Reported: records/s, failures, 429s, the final limit; goal: adaptive >= 0.9x the best
static at each capacity, with 0 failures. The delay grows with K (0.05, 0.1, 0.25 s) so
that the largest capacity stays within what a 2-core machine can push through.
Usage: python bench/adaptive.py [--seconds 15] [--capacities 8,32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from typing import Any

from engine import start_server as spawn
from synthaug.backends.base import Request
from synthaug.backends.client import LLMClient
from synthaug.backends.openai import OpenAIBackend, OpenAIOptions

DELAYS = {8: 0.05, 32: 0.1, 128: 0.25}
CEILING = 256


def start_server(capacity: int, delay: float) -> tuple[subprocess.Popen[str], str]:
    """A test server of `capacity` in its own process; returns it and its base URL."""
    return spawn(delay, "--capacity", str(capacity), "--retry-after", "1")


async def drive(url: str, records: int, limit: int, adaptive: bool) -> dict[str, Any]:
    """One call per record through one client; records/s and the client's counters."""
    options = OpenAIOptions(base_url=url, model="fake", concurrency=limit, adaptive=adaptive,
                            stream=False)
    client = LLMClient(OpenAIBackend(options))
    window = asyncio.Semaphore(2 * limit)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with window:
            try:
                await client.complete(Request(prompt=f"record {i}", max_tokens=8))
            except Exception:
                failures += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(records)))
    seconds = time.monotonic() - started
    await client.close()
    stats = client.stats
    return {"limit": limit, "adaptive": adaptive, "records": records,
            "seconds": round(seconds, 2), "records_per_s": round(records / seconds, 1),
            "failures": failures, "retries": stats.retries, "final_limit": stats.limit,
            "limit_changes": stats.limit_changes}


def capacity_run(capacity: int, seconds: float) -> dict[str, Any]:
    """The static sweep and the adaptive run against one server of `capacity`."""
    delay = DELAYS.get(capacity, 0.1)
    records = int(seconds * capacity / delay)
    proc, url = start_server(capacity, delay)
    try:
        static = [asyncio.run(drive(url, records, lim, False))
                  for lim in (max(1, capacity // 2), capacity, 2 * capacity)]
        adaptive = asyncio.run(drive(url, records, CEILING, True))
    finally:
        proc.terminate()
        proc.wait()
    best = max((r for r in static if not r["failures"]), key=lambda r: r["records_per_s"])
    ratio = adaptive["records_per_s"] / best["records_per_s"]
    return {"capacity": capacity, "delay": delay, "static": static, "adaptive": adaptive,
            "best_static_limit": best["limit"], "ratio": round(ratio, 3),
            "goal_met": ratio >= 0.9 and adaptive["failures"] == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="about how long each run lasts at the ideal rate")
    parser.add_argument("--capacities", default="8,32,128")
    args = parser.parse_args()
    results = [capacity_run(int(k), args.seconds) for k in args.capacities.split(",")]
    print(f"{'capacity':>8} {'static limit':>12} {'rec/s':>8} {'fail':>5} {'429s':>6}"
          f" | {'adaptive rec/s':>14} {'fail':>5} {'429s':>6} {'limit':>5} | ratio")
    for res in results:
        for run in res["static"]:
            print(f"{res['capacity']:>8} {run['limit']:>12} {run['records_per_s']:>8}"
                  f" {run['failures']:>5} {run['retries']:>6} |")
        ada = res["adaptive"]
        print(f"{res['capacity']:>8} {'best ' + str(res['best_static_limit']):>12}"
              f" {'':>8} {'':>5} {'':>6} | {ada['records_per_s']:>14} {ada['failures']:>5}"
              f" {ada['retries']:>6} {ada['final_limit']:>5} | {res['ratio']:.3f}"
              f" {'ok' if res['goal_met'] else 'BELOW GOAL'}")
    print(json.dumps({"bench": "adaptive", "results": results}))


if __name__ == "__main__":
    main()
