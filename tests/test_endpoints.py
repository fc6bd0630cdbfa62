"""The endpoint pool (`use: endpoints`): one model on several real test servers, balanced by
calls in flight, a failing server taken out, checked and put back, the cache kept when
servers are added."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from synthaug.backends.base import Request
from synthaug.backends.endpoints import EndpointsBackend
from synthaug.errors import ConfigError, RetryableError
from synthaug.executors.local import RunState
from synthaug.pipeline import BackendSpec, Pipeline, build_backend, resolve_recipe
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, run, write_jsonl


def pool_pipeline(urls: list[str], **options: Any) -> Pipeline:
    """The text-generation recipe with its role served by the servers at `urls`."""
    recipe, source = resolve_recipe("text-generation")
    recipe.backends["default"] = BackendSpec(use="endpoints", **{"with": {
        "base_urls": urls, "model": "fake", "cooldown": 0.2, "adaptive": False, **options}})
    recipe.steps[0].with_["template"] = "{instruction}"
    return Pipeline.from_recipe(recipe, source)


def rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"task {i}"} for i in range(n)]


def pool_of(state: RunState) -> EndpointsBackend:
    backend = state.clients["default"].backend
    assert isinstance(backend, EndpointsBackend)
    return backend


def stats(state: RunState) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = pool_of(state).summary()["endpoints"]
    return found


@pytest.mark.parametrize(("options", "field", "words"), [
    ({"base_urls": []}, "base_urls", "at least 1"),
    ({"base_urls": ["http://a/v1", "http://a/v1/"]}, "base_urls", "base_urls[1]"),
    ({"base_urls": ["a:8000"]}, "base_urls", "not an http(s) URL"),
    ({"base_urls": ["http://a/v1"], "base_url": "http://b/v1"}, "base_url", "base_urls"),
    ({"base_urls": ["http://a/v1"], "cooldwn": 1}, "cooldwn", "unknown option"),
    ({"base_urls": ["http://a/v1"], "cooldown": 5, "max_cooldown": 1}, "?", "max_cooldown"),
])
def test_bad_options_fail_naming_the_field(options: dict[str, Any], field: str,
                                           words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_backend(BackendSpec(use="endpoints", **{"with": options}))
    assert caught.value.field == field and words in caught.value.message


def test_identity_is_the_model_not_the_servers() -> None:
    one = build_backend(BackendSpec(use="endpoints", **{"with": {
        "model": "m", "base_urls": ["http://a/v1"]}}))
    two = build_backend(BackendSpec(use="endpoints", **{"with": {
        "model": "m", "base_urls": ["http://b/v1", "http://a/v1"], "concurrency": 64}}))
    assert one.identity() == two.identity() == {"backend": "endpoints", "model": "m"}


def test_calls_go_in_turn_when_no_server_is_busier(tmp_path: Path) -> None:
    """One call at a time: every server has 0 in flight, so the servers take turns."""
    servers = [FakeOpenAIServer().start() for _ in range(3)]
    try:
        data = write_jsonl(tmp_path / "in.jsonl", rows(30))
        state = run(pool_pipeline([s.url for s in servers], concurrency=1),
                    tmp_path / "out", data)
    finally:
        for srv in servers:
            srv.stop()
    assert state.written == 30
    assert [len(s.calls) for s in servers] == [10, 10, 10]


def test_a_slow_server_gets_fewer_calls(tmp_path: Path) -> None:
    """Balanced by calls in flight: the server that answers 30 times slower holds its calls
    longer, so it is picked far less often (turn by turn it would get half)."""
    with FakeOpenAIServer(delay=0.01) as fast, FakeOpenAIServer(delay=0.3) as slow:
        data = write_jsonl(tmp_path / "in.jsonl", rows(120))
        state = run(pool_pipeline([slow.url, fast.url], concurrency=8), tmp_path / "out", data)
    assert state.written == 120
    assert len(slow.calls) + len(fast.calls) == 120
    assert len(slow.calls) < 120 / 4 < len(fast.calls)
    assert stats(state)[slow.url]["max_in_flight"] >= 2


def test_a_stopped_server_is_taken_out_then_rejoins(tmp_path: Path) -> None:
    """One of three servers stops listening for 1 s at the start: its calls go to the other
    two inside the same call (the client sees no failure, makes no retry); after the
    cool-down a health check finds it back and it takes calls again."""
    with FakeOpenAIServer(delay=0.05) as one, FakeOpenAIServer(delay=0.05) as two, \
            FakeOpenAIServer(delay=0.05) as flaky:
        flaky.outage(1.0, refuse=True)
        data = write_jsonl(tmp_path / "in.jsonl", rows(150))
        state = run(pool_pipeline([one.url, flaky.url, two.url], concurrency=3),
                    tmp_path / "out", data)
    client = state.clients["default"].stats
    assert state.status == "complete" and state.written == 150
    assert client.failures == 0 and client.retries == 0
    down = stats(state)[flaky.url]
    assert down["failures"] >= 1 and down["outages"] >= 1 and down["checks"] >= 1
    assert down["state"] == "up"
    assert len(flaky.calls) > 0  # served again once it came back
    assert len(one.calls) + len(two.calls) + len(flaky.calls) == 150


def test_a_429_shifts_calls_without_taking_the_server_out(tmp_path: Path) -> None:
    with FakeOpenAIServer(delay=0.05, capacity=1, retry_after=0.2) as small, \
            FakeOpenAIServer(delay=0.05) as big:
        data = write_jsonl(tmp_path / "in.jsonl", rows(60))
        state = run(pool_pipeline([small.url, big.url], concurrency=6), tmp_path / "out", data)
    client = state.clients["default"].stats
    assert state.written == 60 and client.failures == 0 and client.retries == 0
    held = stats(state)[small.url]
    assert held["throttled"] >= 1 and small.refused >= 1
    assert held["outages"] == 0 and held["failures"] == 0 and held["checks"] == 0
    assert len(small.calls) >= 2  # it kept serving


def test_when_every_server_is_down_records_fail_then_resume(tmp_path: Path) -> None:
    """No server listens: each call fails fast with the pool's error, the client's retries
    and breaker apply, the run ends `partial` with every record in the failures file; the
    health checks stay few (no spinning). With the servers up, a rerun completes them."""
    dead = [FakeOpenAIServer(), FakeOpenAIServer()]  # not started: connections refused
    pipeline = pool_pipeline([s.url for s in dead], concurrency=2, max_retries=1,
                             max_outage=1.0, cooldown=0.1, max_cooldown=0.4)
    data = write_jsonl(tmp_path / "in.jsonl", rows(6))
    started = time.monotonic()
    state = run(pipeline, tmp_path / "out", data)
    seconds = time.monotonic() - started
    assert state.status == "partial" and state.written == 0
    client = state.clients["default"].stats
    assert client.failures == 6 and client.retries >= 6  # retryable: the client's retries ran
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert len(failures) == 6
    assert any("no endpoint of 2 can take the call" in str(row) for row in failures)
    checks = [s["checks"] for s in stats(state).values()]
    assert seconds < 15 and all(c <= seconds / 0.1 + 1 for c in checks)
    for srv in dead:
        srv.start()
    try:
        again = run(pool_pipeline([s.url for s in dead]), tmp_path / "out", data)
    finally:
        for srv in dead:
            srv.stop()
    assert again.status == "complete" and again.written == 6


def test_adding_a_server_keeps_the_cache(tmp_path: Path) -> None:
    """The cache key is the model's, not the servers': a rerun with one more server makes
    no call at all."""
    cache = tmp_path / "cache.sqlite"
    data = write_jsonl(tmp_path / "in.jsonl", rows(12))
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b, FakeOpenAIServer() as c:
        first = run(pool_pipeline([a.url, b.url], concurrency=4), tmp_path / "one", data,
                    cache_path=cache)
        paid = len(a.calls) + len(b.calls)
        second = run(pool_pipeline([a.url, b.url, c.url], concurrency=4), tmp_path / "two",
                     data, cache_path=cache)
        assert len(a.calls) + len(b.calls) + len(c.calls) == paid == 12
    assert first.written == second.written == 12
    assert second.clients["default"].stats.calls == 0
    assert second.clients["default"].stats.cache_hits == 12
    one, two = (sorted(read_jsonl(tmp_path / d / "records.jsonl"), key=lambda r: r["_meta"]["id"])
                for d in ("one", "two"))
    assert len(one) == 12 and one == two  # the same answers, from the cache


def test_the_manifest_shows_each_server(tmp_path: Path) -> None:
    dead = FakeOpenAIServer()
    with FakeOpenAIServer() as live:
        data = write_jsonl(tmp_path / "in.jsonl", rows(10))
        run(pool_pipeline([live.url, dead.url], concurrency=2), tmp_path / "out", data)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    shown = manifest["backends"]["default"]["endpoints"]
    assert shown[live.url]["calls"] >= 10 and shown[dead.url]["outages"] >= 1


def lone_pool(url: str, **options: Any) -> EndpointsBackend:
    backend = build_backend(BackendSpec(use="endpoints", **{"with": {
        "base_urls": [url], "model": "fake", **options}}))
    assert isinstance(backend, EndpointsBackend)
    return backend


def test_the_cooldown_doubles_while_checks_fail_up_to_its_cap() -> None:
    """Each failed call says when the next health check is due; the pauses double from
    `cooldown` and stop at `max_cooldown`."""
    dead = FakeOpenAIServer()  # never started
    backend = lone_pool(dead.url, cooldown=0.05, max_cooldown=0.2)

    async def pauses() -> list[float]:
        found: list[float] = []
        try:
            for _ in range(5):
                with pytest.raises(RetryableError, match="no endpoint of 1") as caught:
                    await backend.generate(Request(prompt="x"))
                assert caught.value.retry_after is not None
                found.append(caught.value.retry_after)
                await asyncio.sleep(caught.value.retry_after + 0.01)
        finally:
            await backend.close()
        return found

    assert asyncio.run(pauses()) == pytest.approx([0.05, 0.1, 0.2, 0.2, 0.2], abs=0.03)
    assert backend.summary()["endpoints"][dead.url]["checks"] == 4


def test_a_server_back_after_its_cooldown_answers_the_next_call() -> None:
    """With every server out, a call arriving after the cool-down waits for the health check
    and is answered by the server it brought back (no failed call, no client retry)."""
    srv = FakeOpenAIServer()
    backend = lone_pool(srv.url, cooldown=0.1)

    async def calls() -> str:
        try:
            with pytest.raises(RetryableError):
                await backend.generate(Request(prompt="x"))
            srv.start()
            await asyncio.sleep(0.15)
            return (await backend.generate(Request(prompt="back"))).pop().text
        finally:
            await backend.close()

    try:
        assert asyncio.run(calls()) == "echo: back"
    finally:
        srv.stop()
    assert backend.summary()["endpoints"][srv.url]["state"] == "up"


def test_the_first_server_back_answers_without_waiting_for_a_hung_check() -> None:
    import socket

    hung = socket.socket()  # accepts connections, never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}/v1"
    try:
        with FakeOpenAIServer() as good:
            backend = build_backend(BackendSpec(use="endpoints", **{"with": {
                "base_urls": [hung_url, good.url], "model": "fake", "cooldown": 0.05,
                "connect_timeout": 4}}))
            assert isinstance(backend, EndpointsBackend)

            async def ask() -> float:
                now = time.monotonic()
                for endpoint in backend.endpoints:  # both out, cool-downs over
                    endpoint.state, endpoint.check_at = "down", now - 1
                start = time.monotonic()
                await backend.generate(Request(prompt="x"))
                took = time.monotonic() - start
                await backend.close()
                return took

            assert asyncio.run(ask()) < 2  # not the hung server's 4 s check
    finally:
        hung.close()
