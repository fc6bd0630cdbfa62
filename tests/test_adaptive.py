"""Adaptive concurrency and the circuit breaker, against the real test server's capacity
(429 above K in flight), a server whose latency rises with load, and outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from synthaug.backends.base import Request
from synthaug.backends.client import LLMClient
from synthaug.backends.openai import OpenAIBackend, OpenAIOptions
from synthaug.progress import limit_text
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import run, text_generation, write_jsonl


def rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"task {i}"} for i in range(n)]


def client_for(url: str, **options: object) -> LLMClient:
    return LLMClient(OpenAIBackend(OpenAIOptions(base_url=url, model="fake", stream=False,
                                                 **options)))


def overhear(client: LLMClient, sink: Callable[[str], None]) -> None:
    """Pass the reason of every limit change and breaker event to `sink` too."""
    hear = client.limiter.listener
    assert hear is not None

    def both(limit: int, why: str) -> None:
        sink(why)
        hear(limit, why)

    client.limiter.listener = both


async def drive(client: LLMClient, n: int, window: int, tolerate: bool = False) -> None:
    """`n` calls with `window` in progress at once, as a step does (`tolerate`: calls that
    give up are not an error of the test)."""
    gate = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with gate:
            await client.complete(Request(prompt=f"record {i}", max_tokens=8))

    try:
        await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=tolerate)
    finally:
        await client.close()


def test_run_converges_near_the_server_capacity_with_no_failures(tmp_path: Path) -> None:
    capacity, ceiling = 8, 32
    with FakeOpenAIServer(delay=0.03, capacity=capacity) as srv:
        data = write_jsonl(tmp_path / "in.jsonl", rows(400))
        state = run(text_generation(srv.url, concurrency=ceiling), tmp_path / "out", data)
    stats = state.clients["default"].stats
    assert state.status == "complete" and state.written == 400 and stats.failures == 0
    assert capacity - 2 <= stats.limit <= capacity + 1  # converged near K, far below 32
    assert srv.refused <= 40  # it found the capacity and stayed there: few 429s in 400 calls
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    backend = manifest["backends"]["default"]
    assert backend["limit"] == stats.limit and backend["limit_reason"] == stats.limit_reason
    assert limit_text(state.clients["default"]).startswith(f"limit {stats.limit}/{ceiling} (")


def test_a_static_limit_stays_at_the_configured_concurrency() -> None:
    """`adaptive: false` keeps exactly `concurrency` in flight, even through 429s."""
    with FakeOpenAIServer(delay=0.03, capacity=8, retry_after=0.02) as srv:
        client = client_for(srv.url, concurrency=12, adaptive=False, max_retries=20)
        # a fixed limit above capacity keeps 4 calls bouncing: one may lose 21 times running
        asyncio.run(drive(client, 120, 24, tolerate=True))
    assert (client.stats.limit, client.stats.limit_changes) == (12, 0)
    assert client.stats.max_in_flight == 12 and srv.refused > 0


def test_rising_latency_holds_the_limit_below_the_ceiling() -> None:
    """No 429s here: the server only slows down above 8 in flight (a queue builds up)."""
    knee = 8
    srv = FakeOpenAIServer()
    srv.responder = lambda body: Reply(delay=0.04 * max(1.0, srv.in_flight / knee) ** 2)
    reasons: list[str] = []
    with srv:
        client = client_for(srv.url, concurrency=64)
        overhear(client, reasons.append)
        asyncio.run(drive(client, 500, 128))
    assert client.stats.failures == 0 and srv.refused == 0
    assert "latency" in reasons or "ramp end" in reasons
    assert client.stats.limit <= 3 * knee  # far from the ceiling of 64
    assert srv.max_in_flight < 64  # even the ramp's overshoot stayed under the ceiling


def test_a_ten_second_outage_is_ridden_out(tmp_path: Path) -> None:
    """The server stops listening for 10 s mid-run; the run waits at the breaker, probes,
    resumes by itself and completes with no failure (the default 4 retries alone would
    give up after about 4-8 s)."""
    with FakeOpenAIServer(delay=0.05) as srv:
        data = write_jsonl(tmp_path / "in.jsonl", rows(80))
        threading.Timer(0.5, lambda: srv.outage(10.0, refuse=True)).start()
        started = time.monotonic()
        state = run(text_generation(srv.url, concurrency=4), tmp_path / "out", data)
        seconds = time.monotonic() - started
    stats = state.clients["default"].stats
    assert state.status == "complete" and state.written == 80 and stats.failures == 0
    assert seconds >= 10  # it did wait the outage out
    assert stats.limit_changes > 0 and stats.retries > 0


def test_a_lone_call_rides_out_the_outage_without_using_its_retries() -> None:
    """One call in flight when the server answers 503 for 10 s: its own five attempts
    would end by about 7.5 s; the failures once the breaker is open use no retry, so it
    waits, probes, and gets its answer."""
    with FakeOpenAIServer() as srv:
        srv.outage(10.0)
        client = client_for(srv.url, concurrency=1)
        started = time.monotonic()
        asyncio.run(drive(client, 1, 1))
        seconds = time.monotonic() - started
    assert client.stats.failures == 0 and seconds >= 10
    assert srv.refused >= 6  # more failed attempts than the call's own five


def test_an_open_breaker_probes_instead_of_spinning() -> None:
    """During 4 s of 503s, once the breaker opens only its probes reach the server (one at a
    time, at growing intervals) until one succeeds; every call ends answered."""
    with FakeOpenAIServer(delay=0.02) as srv:
        client = client_for(srv.url, concurrency=8)
        events: list[tuple[str, int]] = []
        overhear(client, lambda why: events.append((why, srv.refused)))
        threading.Timer(0.3, lambda: srv.outage(4.0)).start()
        asyncio.run(drive(client, 200, 16))
    reasons = [why for why, _ in events]
    assert client.stats.failures == 0
    assert "circuit open" in reasons and "circuit closed" in reasons
    opened = reasons.index("circuit open")
    closed = reasons.index("circuit closed")
    probes = reasons[opened:closed].count("probe")
    assert 1 <= probes <= 8  # 4 s at pauses of 0.5, 1, 2, 4 s
    # while open: the probes, plus the calls already in flight when it opened
    assert events[closed][1] - events[opened][1] <= probes + 8


def test_calls_give_up_once_the_endpoint_stays_down_past_max_outage() -> None:
    """Never silently, never forever: past `max_outage` every waiting call fails, counted."""

    async def calls(client: LLMClient) -> list[BaseException | object]:
        try:
            return await asyncio.gather(*(client.complete(Request(prompt=f"r{i}"))
                                          for i in range(6)), return_exceptions=True)
        finally:
            await client.close()

    with FakeOpenAIServer() as srv:
        srv.outage(60.0)
        client = client_for(srv.url, concurrency=2, max_outage=2.0)
        started = time.monotonic()
        results = asyncio.run(calls(client))
        seconds = time.monotonic() - started
    errors = [str(r) for r in results if isinstance(r, BaseException)]
    assert len(errors) == 6 and client.stats.failures == 6
    assert all("endpoint unavailable" in e and "max_outage" in e for e in errors)
    assert seconds < 10


def test_the_progress_view_shows_each_role_s_limit_and_reason() -> None:
    from io import StringIO

    from rich.console import Console

    from synthaug.executors.local import RunState
    from synthaug.progress import ProgressView
    from synthaug.steps.context import StepStats

    client = client_for("http://127.0.0.1:9/v1", concurrency=32)
    client.stats.limit, client.stats.limit_reason = 7, "429"
    out = StringIO()
    view = ProgressView(Console(file=out, width=160, force_terminal=False), ["generate"])
    with view:
        view.update(RunState(steps=[StepStats("generate")], clients={"default": client}))
        view.progress.refresh()
    assert "calls default" in out.getvalue() and "limit 7/32 (429)" in out.getvalue()


# -- review fixes: wakeups, draining, a cancelled probe ----------------------------------
def test_draining_is_not_starved_by_queued_callers() -> None:
    """switch() waits for the calls in flight while callers queue for the one slot."""
    from synthaug.backends.limits import ConcurrencyLimit

    async def scenario() -> str:
        limit = ConcurrencyLimit(1, adaptive=False)
        release = asyncio.Event()

        async def call() -> None:
            async with limit.slot():
                await release.wait()

        holder = asyncio.create_task(call())
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(call()) for _ in range(3)]
        await asyncio.sleep(0.01)

        async def drain() -> str:
            async with limit.drained():
                return "drained"

        drainer = asyncio.create_task(drain())
        await asyncio.sleep(0.01)
        release.set()
        done = await asyncio.wait_for(drainer, 2)
        await asyncio.gather(holder, *queued)
        return done

    assert asyncio.run(scenario()) == "drained"


def test_a_cancelled_waiter_passes_its_wakeup_on() -> None:
    from synthaug.backends.limits import ConcurrencyLimit

    async def scenario() -> str:
        limit = ConcurrencyLimit(1, adaptive=False)
        release = asyncio.Event()
        tasks: dict[str, asyncio.Task[str]] = {}

        async def holder() -> None:
            async with limit.slot():
                await release.wait()
            tasks["b"].cancel()  # woken, then cancelled before it runs

        async def call(tag: str) -> str:
            async with limit.slot():
                return tag

        held = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        tasks["b"] = asyncio.create_task(call("b"))
        later = asyncio.create_task(call("c"))
        await asyncio.sleep(0.01)
        release.set()
        await held
        return await asyncio.wait_for(later, 2)

    assert asyncio.run(scenario()) == "c"


def test_a_cancelled_probe_lets_the_next_call_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthaug.backends import limits
    from synthaug.errors import RetryableError

    monkeypatch.setattr(limits, "TRIP_SECONDS", 0.0)
    monkeypatch.setattr(limits, "COOLDOWN", (0.05, 0.1))

    async def scenario() -> float:
        limit = limits.ConcurrencyLimit(4, adaptive=False, max_outage=1.0)
        for _ in range(5):  # trip the breaker
            with contextlib.suppress(RetryableError):
                async with limit.slot():
                    raise RetryableError("HTTP 503 down")
        assert limit.breaker.state == "open"
        await asyncio.sleep(0.1)

        async def probe() -> None:
            async with limit.slot() as ticket:
                assert ticket.probe
                await asyncio.sleep(10)

        probing = asyncio.create_task(probe())
        await asyncio.sleep(0.05)
        probing.cancel()
        await asyncio.gather(probing, return_exceptions=True)
        start = time.monotonic()
        async with limit.slot():  # the endpoint is back: this call goes as the next probe
            pass
        assert limit.breaker.state == "closed"
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 0.5
