"""`synthaug serve`: a real uvicorn server on a free port, a real httpx client over the socket,
the recipe's model calls answered by the fake OpenAI server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from synthaug.cli import app as cli_app
from synthaug.serve import Service, make_app
from synthaug.testing import FakeOpenAIServer
from synthaug.testing.server import Reply
from tests.conftest import text_generation

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(service: Service) -> Iterator[str]:
    """The service on a free loopback port in a thread; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(service.open()), host="127.0.0.1",
                                           port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def service(fake: FakeOpenAIServer, tmp_path: Path, **kw: Any) -> Service:
    concurrency = kw.pop("concurrency", 4)
    return Service(text_generation(fake.url, concurrency=concurrency, max_retries=0),
                   state_dir=tmp_path / "state", token=TOKEN, **kw)


def ndjson(*rows: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def post(url: str, body: str, **headers: str) -> list[dict[str, Any]]:
    """POST records and read the NDJSON events to the end."""
    with httpx.stream("POST", f"{url}/v1/records", content=body, timeout=30,
                      headers={**AUTH, **headers}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def slow_when_marked(delay: float, marked: str = "slow") -> Any:
    """A responder that holds replies to prompts containing `marked` for `delay` seconds."""
    def respond(body: dict[str, Any]) -> Reply:
        prompt = str(body["messages"][-1]["content"])
        return Reply(text=f"answer to {prompt}", delay=delay if marked in prompt else 0.0)
    return respond


def test_records_stream_in_completion_order_with_provenance(tmp_path: Path) -> None:
    with FakeOpenAIServer(slow_when_marked(0.8)) as fake, \
            serving(service(fake, tmp_path)) as url:
        body = ndjson({"instruction": "slow one"}, {"instruction": "fast a"},
                      {"instruction": "fast b"})
        started, arrived, events = time.monotonic(), [], []
        with httpx.stream("POST", f"{url}/v1/records", content=body, headers=AUTH,
                          timeout=30) as response:
            for line in response.iter_lines():
                arrived.append(time.monotonic() - started)
                events.append(json.loads(line))
    assert arrived[0] < 0.6 < arrived[2]  # fast records reach the client before the slow one
    kinds = [e["event"] for e in events]
    assert kinds == ["record", "record", "record", "done"]
    texts = [e["record"]["generation"] for e in events[:3]]
    assert texts[2] == "answer to slow one"  # posted first, finished last: streamed last
    assert set(texts[:2]) == {"answer to fast a", "answer to fast b"}
    for event in events[:3]:
        meta = event["record"]["_meta"]
        assert meta["recipe"] == "text-generation" and meta["step"] == "generate"
        assert meta["model"] == "fake" and meta["prompt_sha"] and len(meta["parents"]) == 1
    done = events[-1]
    assert done["records"] == 3 and done["steps"]["generate"]["llm_samples"] == 3


def test_server_sent_events(tmp_path: Path) -> None:
    headers = {**AUTH, "Accept": "text/event-stream", "Content-Type": "application/json"}
    with FakeOpenAIServer() as fake, serving(service(fake, tmp_path)) as url, \
            httpx.stream("POST", f"{url}/v1/records", timeout=30, headers=headers,
                         content=json.dumps([{"instruction": "hi"}])) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = response.read().decode().split("\n\n")
    frames = [f for f in frames if f]
    names = [f.splitlines()[0] for f in frames]
    assert names == ["event: record", "event: done"]
    record = json.loads(frames[0].splitlines()[1].removeprefix("data: "))
    assert record["record"]["generation"] == "echo: hi"
    assert len(record["record"]["_meta"]["parents"]) == 1


def test_token_is_required_and_compared(tmp_path: Path) -> None:
    with FakeOpenAIServer() as fake, serving(service(fake, tmp_path)) as url:
        body = ndjson({"instruction": "hi"})
        missing = httpx.post(f"{url}/v1/records", content=body)
        wrong = httpx.post(f"{url}/v1/records", content=body,
                           headers={"Authorization": "Bearer s3cret-tokem"})
        recipe_wrong = httpx.get(f"{url}/v1/recipe", headers={"Authorization": TOKEN})
        recipe = httpx.get(f"{url}/v1/recipe", headers=AUTH)
        health = httpx.get(f"{url}/healthz")
        assert len(fake.calls) == 0  # refused requests call no model
    assert missing.status_code == wrong.status_code == recipe_wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert recipe.status_code == 200 and recipe.json()["name"] == "text-generation"
    assert [s["name"] for s in recipe.json()["steps"]] == ["generate"]
    assert recipe.json()["input"] == ["instruction"]
    assert health.json()["status"] == "ok"


def test_full_queue_answers_429_at_once(tmp_path: Path) -> None:
    with FakeOpenAIServer(slow_when_marked(1.0)) as fake, \
            serving(service(fake, tmp_path, max_pending=2)) as url:
        first: list[list[dict[str, Any]]] = []
        holder = threading.Thread(target=lambda: first.append(post(
            url, ndjson({"instruction": "slow 1"}, {"instruction": "slow 2"}))))
        holder.start()
        while fake.in_flight < 2:  # both held at the model: the service is full
            time.sleep(0.01)
        started = time.monotonic()
        busy = httpx.post(f"{url}/v1/records", content=ndjson({"instruction": "x"}),
                          headers=AUTH, timeout=30)
        waited = time.monotonic() - started
        too_big = httpx.post(f"{url}/v1/records", headers=AUTH, timeout=30, content=ndjson(
            {"instruction": "a"}, {"instruction": "b"}, {"instruction": "c"}))
        holder.join()
        after = post(url, ndjson({"instruction": "x"}))  # room given back when it ended
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert waited < 0.5  # refused immediately, not queued behind the held requests
    assert too_big.status_code == 413
    assert [e["event"] for e in first[0]] == ["record", "record", "done"]
    assert after[-1]["records"] == 1


def test_oversized_bodies_and_bad_lines_are_refused_unread(tmp_path: Path) -> None:
    with FakeOpenAIServer() as fake, \
            serving(service(fake, tmp_path, max_pending=2, max_body_bytes=1000)) as url:
        huge = httpx.post(f"{url}/v1/records", headers=AUTH, timeout=30,
                          content=ndjson(*[{"instruction": "x" * 50}] * 40))
        bad_lines = httpx.post(f"{url}/v1/records", headers=AUTH, timeout=30,
                               content=ndjson("not json", "nor this", "{\"instruction\": 1}"))
        healthy = post(url, ndjson({"instruction": "fine"}))
    assert huge.status_code == 413 and "max-body-bytes" in huge.json()["error"]
    assert bad_lines.status_code == 413  # rejects count against --max-pending too
    assert fake.calls and healthy[-1]["records"] == 1


def test_client_gone_mid_stream_cancels_its_calls_and_cache_serves_the_rerun(
        tmp_path: Path) -> None:
    holding = threading.Event()
    holding.set()

    def respond(body: dict[str, Any]) -> Reply:
        prompt = str(body["messages"][-1]["content"])
        return Reply(text=f"answer to {prompt}",
                     delay=1.5 if holding.is_set() and "slow" in prompt else 0.0)

    body = ndjson({"instruction": "fast"}, {"instruction": "slow 2"}, {"instruction": "slow 3"})
    with FakeOpenAIServer(respond) as fake, \
            serving(service(fake, tmp_path, concurrency=1)) as url:
        with httpx.stream("POST", f"{url}/v1/records", content=body, headers=AUTH,
                          timeout=30) as response:
            first = json.loads(next(response.iter_lines()))
        assert first["record"]["generation"] == "answer to fast"  # then the client hung up
        time.sleep(2.2)  # longer than a held reply: an uncancelled request would go on
        assert len(fake.calls) == 2  # 'slow 2' was in flight; 'slow 3' never started
        assert fake.in_flight == 0
        health = httpx.get(f"{url}/healthz").json()
        assert health == {"status": "ok", "recipe": "text-generation", "pending": 0}
        holding.clear()
        again = post(url, body)
        assert len(fake.calls) == 4  # 'fast' came from the cache
    assert [e["event"] for e in again] == ["record"] * 3 + ["done"]
    assert again[-1]["steps"]["generate"]["cache_hits"] == 1


def test_bad_lines_are_rejects_naming_line_and_field(tmp_path: Path) -> None:
    with FakeOpenAIServer() as fake, serving(service(fake, tmp_path)) as url:
        events = post(url, ndjson({"instruction": "ok"}, {"prompt": "no instruction"},
                                  "not json", {"instruction": 5}, {"instruction": "ok"}))
        listed = httpx.post(f"{url}/v1/records", headers={**AUTH, "Content-Type":
                            "application/json"}, content=json.dumps({"records": [{"x": 1}]}))
        broken = httpx.post(f"{url}/v1/records", headers={**AUTH, "Content-Type":
                            "application/json"}, content="{oops")
    rejects = [e for e in events if e["event"] == "reject"]
    assert [(r["line"], r["field"]) for r in rejects] == [
        (2, "instruction"), (3, None), (4, "instruction"), (5, None)]
    assert rejects[0]["reason"] == "missing required field"
    assert rejects[1]["reason"].startswith("malformed JSON")
    assert rejects[3]["reason"] == "duplicate of line 1"
    assert [e["record"]["generation"] for e in events if e["event"] == "record"] == ["echo: ok"]
    assert events[-1]["rejects"] == 4
    listed_events = [json.loads(line) for line in listed.text.splitlines()]
    assert listed_events[0]["event"] == "reject" and listed_events[0]["line"] == 1
    assert broken.status_code == 400


def test_failed_call_is_a_failure_event(tmp_path: Path) -> None:
    with FakeOpenAIServer() as fake, serving(service(fake, tmp_path)) as url:
        fake.enqueue(Reply(text="bad request", status=400))
        events = post(url, ndjson({"instruction": "a"}))
    assert [e["event"] for e in events] == ["failure", "done"]
    assert events[0]["step"] == "generate" and "400" in events[0]["reason"]
    assert events[0]["record"]["instruction"] == "a"
    assert events[-1]["failures"] == 1 and events[-1]["records"] == 0


@pytest.mark.parametrize("args", [
    ["no-such-recipe", "--token", "t"],
    ["text-generation"],  # no token
    ["text-generation", "--no-auth", "--host", "0.0.0.0"],
    ["text-generation", "--token", "t", "--set", "generate.nope=1"],
])
def test_bad_start_exits_2_before_binding(args: list[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHAUG_SERVE_TOKEN", raising=False)
    with socket.socket() as taken:  # had it got as far as binding, it would exit 1 at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", *args, "--port", str(port),
                                              "--state", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "s").exists()


def test_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    with FakeOpenAIServer() as fake:
        proc = subprocess.Popen(
            [sys.executable, "-m", "synthaug.cli", "serve", "text-generation", "--port",
             str(port), "--base-url", fake.url, "--model", "fake", "--state",
             str(tmp_path / "state")], env={**os.environ, "SYNTHAUG_SERVE_TOKEN": TOKEN},
            stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            events = post(url, ndjson({"instruction": "hi"}))
            proc.send_signal(signal.SIGTERM)
            stderr = proc.communicate(timeout=15)[1].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    # uvicorn shuts down gracefully (lifespan end: clients and cache closed), then ends by
    # the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "stopped: text-generation" in stderr and "Traceback" not in stderr
    assert events[0]["record"]["generation"] == "echo: hi"
    assert (tmp_path / "state" / "cache.sqlite").exists()
