"""Backends and the client against the real in-process HTTP server: seeds, identity,
streaming and timeouts; the llama.cpp pool with a stub model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from synthaug.backends.base import BackendOptions, Completion, Request
from synthaug.backends.cache import ResponseCache
from synthaug.backends.client import ClientStats, LLMClient, Validator
from synthaug.backends.llamacpp import LlamaCppBackend, LlamaCppOptions
from synthaug.backends.openai import OpenAIBackend, OpenAIOptions
from synthaug.errors import ConfigError, FatalBackendError, RetryableError
from synthaug.testing import FakeOpenAIServer, Reply

T = TypeVar("T")
CHAT = Request(messages=({"role": "user", "content": "hello there"},), seed=11)
PROMPT = Request(prompt="Once upon a time", seed=11)


def openai(url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=url, model="fake", **options))


def complete(backend: OpenAIBackend | LlamaCppBackend, request: Request,
             cache: ResponseCache | None = None,
             validate: Validator | None = None) -> tuple[list[Completion], ClientStats]:
    async def go() -> tuple[list[Completion], ClientStats]:
        client = LLMClient(backend, cache, backoff_base=0.01)
        try:
            return await client.complete(request, validate), client.stats
        finally:
            await client.close()

    return asyncio.run(go())


def generate_once(backend: OpenAIBackend | LlamaCppBackend, request: Request) -> None:
    """One `generate` call straight on the backend (no client), then close it."""
    async def go() -> None:
        try:
            await backend.generate(request)
        finally:
            await backend.close()

    asyncio.run(go())


def timed(call: Awaitable[T]) -> tuple[T, float]:
    async def go() -> T:
        return await call

    start = time.monotonic()
    result = asyncio.run(go())
    return result, time.monotonic() - start


def settle(server: FakeOpenAIServer) -> int:
    """The server's in-flight count once it has noticed hung-up clients (at most 3 s)."""
    deadline = time.monotonic() + 3
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.in_flight


# --- 1. the seed that produced a completion -------------------------------------------


def no_bad(text: str) -> None:
    if text == "bad":
        raise ValueError("a bad reply")


def test_completion_keeps_the_seed_of_the_attempt_that_produced_it(
        server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=500), "bad")  # a failed call, then an invalid reply
    [reply], stats = complete(openai(server.url), CHAT, validate=no_bad)
    assert (reply.text, stats.calls) == ("echo: hello there", 3)
    assert [c["seed"] for c in server.calls] == [11, 11 + 7919, 11 + 2 * 7919]
    assert reply.seed == 11 + 2 * 7919


def test_a_cached_replay_reports_the_same_seed(server: FakeOpenAIServer,
                                               tmp_path: Path) -> None:
    server.enqueue(Reply(status=503))
    request = Request(messages=CHAT.messages, seed=5, n=2)
    first, _ = complete(openai(server.url), request, ResponseCache(tmp_path / "c.sqlite"))
    again, stats = complete(openai(server.url), request, ResponseCache(tmp_path / "c.sqlite"))
    assert [c.seed for c in first] == [5 + 7919, 5 + 7919]
    assert [(c.text, c.seed, c.cached) for c in again] == [
        (c.text, c.seed, True) for c in first]
    assert (stats.calls, stats.cache_hits, len(server.calls)) == (0, 2, 2)


# --- 2. identity ----------------------------------------------------------------------


def test_openai_identity_names_endpoint_and_template_never_the_key() -> None:
    secret = "sk-SECRET-1234"
    plain = openai("http://a.example/v1", api_key=secret).identity()
    templated = openai("http://a.example/v1", api_key=secret,
                       chat_template="{{ messages }}").identity()
    other = openai("http://a.example/v1", chat_template="{{ other }}").identity()
    assert plain == {"backend": "openai", "model": "fake", "base_url": "http://a.example/v1"}
    assert len(templated["chat_template"]) == 16
    assert templated["chat_template"] != other["chat_template"]
    assert openai("http://b.example/v1").identity() != plain
    assert secret not in json.dumps([plain, templated])


def test_llamacpp_identity_names_the_file_and_its_size_without_loading(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(self: LlamaCppBackend) -> None:
        raise AssertionError("identity() must not load the model")

    monkeypatch.setattr(LlamaCppBackend, "_load", no_loading)
    backend = LlamaCppBackend(LlamaCppOptions())
    ident = backend.identity()
    assert ident["backend"] == "llamacpp" and ident["model"] == backend.model
    assert (ident["file"], ident["file_bytes"]) == (backend.path.name,
                                                     backend.path.stat().st_size)
    assert "chat_template" not in ident
    with_template = LlamaCppBackend(LlamaCppOptions(chat_template="{{ x }}")).identity()
    assert with_template["chat_template"] and with_template != ident


# --- 3. streaming and timeouts --------------------------------------------------------


def test_timeouts_default_to_a_long_total_and_short_connect_and_idle_limits() -> None:
    options = BackendOptions()
    assert (options.timeout, options.connect_timeout, options.idle_timeout) == (
        600.0, 10.0, 30.0)
    assert OpenAIOptions().stream is True


def test_a_stream_that_stalls_is_retried_after_the_idle_timeout(
        server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(text="first words then silence", stall=5.0))
    backend = openai(server.url, idle_timeout=0.5, timeout=60)
    (replies, stats), elapsed = timed(asyncio.to_thread(complete, backend, CHAT))
    assert [r.text for r in replies] == ["echo: hello there"]
    assert stats.retries == 1 and elapsed < 3.0
    assert server.calls[0]["stream"] is True
    assert settle(server) == 0  # the stalled stream stopped counting once the client left


def test_a_reply_whose_headers_never_come_is_retried_after_the_idle_timeout(
        server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(delay=5.0))
    backend = openai(server.url, idle_timeout=0.5, timeout=60)
    (replies, stats), elapsed = timed(asyncio.to_thread(complete, backend, CHAT))
    assert [r.text for r in replies] == ["echo: hello there"]
    assert stats.retries == 1 and elapsed < 3.0
    assert settle(server) == 0


def test_the_idle_timeout_does_not_cut_a_reply_that_is_not_streamed(
        server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(text="slow but fine", delay=1.0))
    backend = openai(server.url, idle_timeout=0.3, timeout=60, stream=False)
    [reply], stats = complete(backend, CHAT)
    assert (reply.text, stats.retries) == ("slow but fine", 0)
    assert "stream" not in server.calls[0]


def test_the_idle_timeout_error_names_itself(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(stall=5.0))
    backend = openai(server.url, idle_timeout=0.3)
    with pytest.raises(RetryableError, match=r"no data for 0\.3s \(idle timeout\)"):
        generate_once(backend, CHAT)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("request_", [CHAT, PROMPT], ids=["chat", "completions"])
def test_streamed_and_plain_replies_are_the_same(server: FakeOpenAIServer, n: int,
                                                 request_: Request) -> None:
    import dataclasses

    request = dataclasses.replace(request_, n=n)
    streamed, _ = complete(openai(server.url), request)
    plain, _ = complete(openai(server.url, stream=False), request)
    assert [c.get("stream") for c in server.calls] == [True, None]
    assert streamed == plain
    assert len({c.text for c in streamed}) == n and streamed[0].text.startswith("echo: ")
    words = len(streamed[0].text.removesuffix(" [0]").split())
    assert (streamed[0].prompt_tokens, streamed[0].completion_tokens) == (10, words)


@pytest.mark.parametrize("request_", [CHAT, PROMPT], ids=["chat", "completions"])
def test_logprobs_are_read_from_a_stream(server: FakeOpenAIServer, request_: Request) -> None:
    import dataclasses

    request = dataclasses.replace(request_, logprobs=True)
    server.enqueue(Reply(text="one two three", logprobs=[-1.0, -2.0, -3.0]),
                   Reply(text="one two three", logprobs=[-1.0, -2.0, -3.0]))
    [streamed], _ = complete(openai(server.url), request)
    [plain], _ = complete(openai(server.url, stream=False), request)
    assert streamed.logprobs == plain.logprobs == [-1.0, -2.0, -3.0]


def test_a_server_that_ignores_stream_is_read_as_a_plain_reply(
        server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(text="a whole body", ignore_stream=True))
    [reply], stats = complete(openai(server.url), CHAT)
    assert (reply.text, reply.finish_reason, stats.retries) == ("a whole body", "stop", 0)
    assert server.calls[0]["stream"] is True


CHUNK = 'data: {"choices": [{"index": 0, "delta": {"content": "hal"}}]}\n\n'


@pytest.mark.parametrize("body", [
    "data: {not json\n\n",
    CHUNK,
    CHUNK + 'data: {"error": {"message": "overloaded"}}\n\n',
    'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\ndata: [DONE]\n\n',
], ids=["malformed-chunk", "ends-before-done", "error-event", "text-not-a-string"])
def test_a_broken_stream_is_retried(server: FakeOpenAIServer, body: str) -> None:
    server.enqueue(Reply(body=body))
    [reply], stats = complete(openai(server.url), CHAT)
    assert (reply.text, stats.retries) == ("echo: hello there", 1)


def test_statuses_while_streaming_are_mapped_as_before(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=429, headers={"Retry-After": "0.2"}), Reply(status=400))

    async def go() -> list[BaseException | list[Completion]]:
        backend = openai(server.url)
        try:
            return await asyncio.gather(backend.generate(CHAT), backend.generate(CHAT),
                                        return_exceptions=True)
        finally:
            await backend.close()

    results = asyncio.run(go())
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["FatalBackendError", "RetryableError"]
    [retryable] = [r for r in results if isinstance(r, RetryableError)]
    assert retryable.retry_after == pytest.approx(0.2)


# --- 4. the llama.cpp pool ------------------------------------------------------------


class StubLlama:
    """Stands in for llama_cpp.Llama: answers at once, or waits for `gate` when set."""

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None,
                 started: threading.Semaphore | None = None) -> None:
        self.gate, self.error, self.started = gate, error, started
        self.closed = False

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def create_chat_completion(self, messages: list[dict[str, str]],
                               **kwargs: Any) -> dict[str, Any]:
        assert not self.closed, "a closed model was used"
        if self.started is not None:
            self.started.release()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return {"choices": [{"message": {"content": "stub"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def stub_backend(monkeypatch: pytest.MonkeyPatch, concurrency: int,
                 **stub: Any) -> tuple[LlamaCppBackend, list[StubLlama]]:
    loaded: list[StubLlama] = []

    def load(self: LlamaCppBackend) -> StubLlama:
        time.sleep(0.05)  # long enough for every first call to arrive while loading
        loaded.append(StubLlama(**stub))
        return loaded[-1]

    monkeypatch.setattr(LlamaCppBackend, "_load", load)
    return LlamaCppBackend(LlamaCppOptions(concurrency=concurrency)), loaded


def test_concurrent_first_calls_load_the_pool_once(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, loaded = stub_backend(monkeypatch, concurrency=2)

    async def go() -> list[list[Completion]]:
        replies = await asyncio.gather(*(backend.generate(CHAT) for _ in range(6)))
        await backend.close()
        return replies

    replies = asyncio.run(go())
    assert [r[0].text for r in replies] == ["stub"] * 6
    assert len(loaded) == 2
    assert all(m.closed for m in loaded)


def test_close_closes_models_in_use_when_their_call_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate, started = threading.Event(), threading.Semaphore(0)
    backend, loaded = stub_backend(monkeypatch, concurrency=2, gate=gate, started=started)

    async def go() -> tuple[list[bool], list[Any]]:
        calls = [asyncio.ensure_future(backend.generate(CHAT)) for _ in range(3)]
        for _ in range(2):  # two calls hold a model, the third waits for one
            assert await asyncio.to_thread(started.acquire, True, 3)
        await backend.close()
        closed_while_busy = [m.closed for m in loaded]
        gate.set()
        return closed_while_busy, await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), 5)

    closed_while_busy, results = asyncio.run(go())
    assert closed_while_busy == [False, False]
    assert [m.closed for m in loaded] == [True, True]
    assert [r[0].text for r in results[:2]] == ["stub", "stub"]
    assert isinstance(results[2], FatalBackendError)


@pytest.mark.parametrize(("error", "mapped"), [
    (ValueError("Requested tokens exceed context window"), FatalBackendError),
    (RuntimeError("llama_decode returned -1"), RetryableError),
])
def test_llama_cpp_errors_are_mapped(monkeypatch: pytest.MonkeyPatch, error: Exception,
                                     mapped: type[Exception]) -> None:
    backend, loaded = stub_backend(monkeypatch, concurrency=1, error=error)
    with pytest.raises(mapped, match=r"llama\.cpp"):
        generate_once(backend, CHAT)
    assert loaded[0].closed


def test_a_model_that_fails_to_load_is_a_fatal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: LlamaCppBackend) -> None:
        raise ValueError("Failed to load model from file")

    monkeypatch.setattr(LlamaCppBackend, "_load", load)
    backend = LlamaCppBackend(LlamaCppOptions())
    with pytest.raises(FatalBackendError, match="could not load"):
        asyncio.run(backend.generate(CHAT))


@pytest.mark.parametrize(("use", "bad"), [
    ("openai", {"concurrency": 0}), ("llamacpp", {"concurrency": 0}),
    ("openai", {"requests_per_minute": 0}), ("openai", {"tokens_per_minute": -5}),
    ("llamacpp", {"max_retries": -1})])
def test_limits_that_would_hang_are_refused(use: str, bad: dict[str, Any]) -> None:
    from synthaug.pipeline import BackendSpec, build_backend

    with pytest.raises(ConfigError) as info:
        build_backend(BackendSpec(use=use, **{"with": bad}))
    assert info.value.field == next(iter(bad))


@pytest.mark.parametrize("request_", [CHAT, PROMPT], ids=["chat", "completions"])
def test_top_logprobs_are_asked_read_and_cached(server: FakeOpenAIServer, request_: Request,
                                                tmp_path: Path) -> None:
    import dataclasses

    from synthaug.backends.cache import ResponseCache
    from synthaug.backends.client import LLMClient

    request = dataclasses.replace(request_, top_logprobs=2)
    alternatives = [{"1": -0.2, "2": -1.8, "one": -4.0}, {"x": -0.1}]
    server.enqueue(*[Reply(text="1 x", alternatives=alternatives)] * 2)
    [streamed], _ = complete(openai(server.url), request)
    [plain], _ = complete(openai(server.url, stream=False), request)
    assert streamed.top_logprobs == plain.top_logprobs == [{"1": -0.2, "2": -1.8}, {"x": -0.1}]
    key = "top_logprobs" if request_ is CHAT else "logprobs"
    assert server.calls[0][key] == 2
    assert dataclasses.replace(request_, top_logprobs=0).canonical() == request_.canonical()

    async def twice() -> list[list[float] | None]:
        client = LLMClient(openai(server.url), ResponseCache(tmp_path / "c.sqlite"))
        try:
            server.enqueue(Reply(text="1 x", alternatives=alternatives))
            first = await client.complete(request)
            again = await client.complete(request)  # from the cache, alternatives kept
            return [first[0].top_logprobs, again[0].top_logprobs]
        finally:
            await client.close()


    first, again = asyncio.run(twice())
    assert first == again == [{"1": -0.2, "2": -1.8}, {"x": -0.1}]


def test_the_cache_keeps_that_a_reply_had_no_usage(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("a", "sha", Completion(text="x", usage_known=False))
    cache.put("b", "sha", Completion(text="y", completion_tokens=3))
    found_a, found_b = cache.get("a"), cache.get("b")
    assert found_a is not None and found_a.usage_known is False
    assert found_b is not None and found_b.usage_known and found_b.completion_tokens == 3


def test_an_unreadable_retry_after_is_retried_like_any_503(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(text="busy", status=503, headers={"Retry-After": "soon"}))
    [reply], stats = complete(openai(server.url), CHAT)
    assert reply.text == "echo: hello there" and stats.retries == 1 and len(server.calls) == 2
