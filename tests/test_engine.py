"""The engine against a real OpenAI-compatible HTTP server with scripted replies and faults."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synthaug.pipeline import BackendSpec
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, text_generation, write_jsonl


def rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"task {i}"} for i in range(n)]


def test_in_flight_reaches_the_configured_concurrency(tmp_path: Path) -> None:
    with FakeOpenAIServer(delay=0.05) as srv:
        data = write_jsonl(tmp_path / "in.jsonl", rows(120))
        state = run(text_generation(srv.url, concurrency=16), tmp_path / "out", data)
    assert srv.max_in_flight == 16
    assert state.clients["default"].stats.max_in_flight == 16
    assert state.written == 120


def test_rerun_makes_zero_calls_and_writes_nothing_twice(server: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(30))
    first = run(text_generation(server.url), tmp_path / "out", data)
    calls = len(server.calls)
    second = run(text_generation(server.url), tmp_path / "out", data)
    assert (first.written, calls) == (30, 30)
    assert len(server.calls) == calls
    assert (second.written, second.resumed,
            second.clients["default"].stats.calls) == (0, 30, 0)
    assert len(read_jsonl(tmp_path / "out" / "records.jsonl")) == 30


def test_only_parse_changed_replays_the_cache(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(5))
    run(text_generation(server.url), tmp_path / "a", data, cache_path=tmp_path / "c.sqlite")
    pipeline = text_generation(server.url)
    pipeline.steps[0][1].options.output_field = "answer"  # type: ignore[attr-defined]
    state = run(pipeline, tmp_path / "b", data, cache_path=tmp_path / "c.sqlite")
    assert len(server.calls) == 5 and state.clients["default"].stats.calls == 0
    replayed = read_jsonl(tmp_path / "b" / "records.jsonl")
    assert len(replayed) == 5
    assert sorted(r["answer"] for r in replayed) == [f"echo: task {i}" for i in range(5)]


def test_server_errors_are_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.enqueue(Reply(status=500), Reply(status=503), Reply(status=502))
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    state = run(text_generation(server.url, max_retries=4), tmp_path / "out", data)
    assert len(server.calls) == 4
    assert state.clients["default"].stats.retries == 3
    assert read_jsonl(tmp_path / "out" / "records.jsonl")[0]["generation"] == "echo: task 0"


def test_429_retry_after_is_honoured(server: FakeOpenAIServer, tmp_path: Path) -> None:
    stamps: list[float] = []

    def responder(body: dict[str, object]) -> Reply:
        stamps.append(time.monotonic())
        return Reply(text="late")

    server.responder = responder
    server.enqueue(Reply(status=429, headers={"Retry-After": "1.5"}))
    first = time.monotonic()
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    run(text_generation(server.url), tmp_path / "out", data)
    # the default backoff (0.25-0.5 s on a first retry) cannot explain a 1.5 s wait
    assert stamps and stamps[0] - first >= 1.4


@pytest.mark.parametrize("fault", [
    Reply(delay=3.0),  # longer than the 0.5 s request timeout
    Reply(body="{not json"),
    Reply(body='{"choices": [{"index": 0, "message": {"content": "hal'),  # truncated body
    Reply(body='{"object": "error"}'),  # no choices
])
def test_faults_are_retried_then_answered(server: FakeOpenAIServer, tmp_path: Path,
                                          fault: Reply) -> None:
    server.enqueue(fault)
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    state = run(text_generation(server.url, timeout=0.5), tmp_path / "out", data)
    assert state.clients["default"].stats.retries == 1
    assert read_jsonl(tmp_path / "out" / "records.jsonl")[0]["generation"] == "echo: task 0"


def test_persistent_failure_becomes_a_failure_row(server: FakeOpenAIServer,
                                                  tmp_path: Path) -> None:
    def responder(body: dict[str, object]) -> Reply:
        content = str(body["messages"][-1]["content"])  # type: ignore[index]
        return Reply(status=500, text="boom") if content == "task 3" else Reply(text=content)

    server.responder = responder
    data = write_jsonl(tmp_path / "in.jsonl", rows(10))
    state = run(text_generation(server.url, max_retries=2), tmp_path / "out", data)
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert state.written == 9
    assert len(failures) == 1 and failures[0]["record"]["instruction"] == "task 3"
    assert "HTTP 500" in failures[0]["reason"] and failures[0]["step"] == "generate"
    assert sum(1 for c in server.calls if c["messages"][-1]["content"] == "task 3") == 3
    # the rerun tries the failed record again and pays for nothing else
    server.responder = lambda body: Reply(text="fixed")
    again = run(text_generation(server.url), tmp_path / "out", data)
    assert (again.written, again.clients["default"].stats.calls) == (1, 1)


def test_client_errors_are_not_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.enqueue(Reply(status=400, text="bad request"))
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    run(text_generation(server.url), tmp_path / "out", data)
    assert len(server.calls) == 1
    assert "HTTP 400" in read_jsonl(tmp_path / "out" / "failures.jsonl")[0]["reason"]


def test_api_key_is_never_stored(server: FakeOpenAIServer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    run(text_generation(server.url, api_key=secret), tmp_path / "out", data)
    for path in (tmp_path / "out").iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_a_pool_members_api_key_is_never_stored(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    secret = "sk-test-NESTED-4343"
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    pipeline = text_generation(server.url)
    member = {"use": "openai", "name": "a", "with": {
        "base_url": server.url, "model": "fake", "api_key": secret}}
    pipeline.backends["default"] = BackendSpec(use="pool", **{"with": {
        "choose": "round-robin", "members": [member]}})
    run(pipeline, tmp_path / "out", data)
    assert len(server.calls) == 2
    for path in (tmp_path / "out").iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_records_carry_provenance_and_the_manifest_counts(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(4))
    run(text_generation(server.url), tmp_path / "a", data)
    run(text_generation(server.url), tmp_path / "b", data)
    a = read_jsonl(tmp_path / "a" / "records.jsonl")
    b = read_jsonl(tmp_path / "b" / "records.jsonl")
    assert {r["_meta"]["id"] for r in a} == {r["_meta"]["id"] for r in b}  # deterministic
    meta = a[0]["_meta"]
    assert set(meta) >= {"id", "parents", "recipe", "step", "backend", "model", "prompt_sha",
                         "seed"}
    assert (meta["recipe"], meta["step"], meta["backend"], meta["model"]) == (
        "text-generation", "generate", "openai", "fake")
    import json

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["steps"]["generate"]["in"] == 4 and manifest["steps"]["generate"]["out"] == 4
    assert "python" in manifest["versions"] and manifest["config"]["steps"][0]["name"]


def test_rate_limit_spaces_requests() -> None:
    import asyncio

    from synthaug.backends.limits import TokenBucket

    async def go() -> float:
        bucket = TokenBucket(per_minute=600)  # 10 a second after the first minute's burst
        await bucket.acquire(600)
        start = time.monotonic()
        for _ in range(5):
            await bucket.acquire(1)
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.4


def test_structured_output_is_validated_and_retried(server: FakeOpenAIServer,
                                                    tmp_path: Path) -> None:
    import json
    from collections.abc import Iterable

    from pydantic import BaseModel

    import synthaug
    from synthaug import LLMStep, Pipeline, Record, StepContext
    from synthaug.pipeline import BackendSpec
    from synthaug.records import content
    from synthaug.steps.llm import Prompt

    class Person(BaseModel):
        name: str
        age: int

    class Extract(LLMStep):
        schema = Person

        def requires(self) -> set[str]:
            return {"text"}

        def prompt(self, record: Record, ctx: StepContext) -> Prompt:
            return [{"role": "user", "content": str(record["text"])}]

        def parse(self, record: Record, reply: synthaug.Reply,
                  ctx: StepContext) -> Iterable[Record]:
            yield {**content(record), **json.loads(reply.text)}

    server.enqueue(Reply(text='{"name": "Ann", "ag', finish_reason="length"),
                   Reply(text='{"name": "Ann", "age": "old"}'),
                   Reply(text='{"name": "Ann", "age": 30}'))
    backend = BackendSpec(use="openai", with_={"base_url": server.url, "model": "m"})
    pipeline = Pipeline.from_steps(Extract(), backends={"default": backend})
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "Ann is thirty."}])
    state = run(pipeline, tmp_path / "out", data)
    [record] = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert (record["name"], record["age"]) == ("Ann", 30)
    assert len(server.calls) == 3 and state.clients["default"].stats.invalid_replies == 2
    sent = server.calls[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == [
        "name", "age"]
