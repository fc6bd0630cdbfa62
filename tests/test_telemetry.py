"""OpenTelemetry metrics of LLM calls, read with the SDK's in-memory reader; off by default."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from synthaug import telemetry
from synthaug.backends.base import Request
from synthaug.backends.client import LLMClient
from synthaug.backends.openai import OpenAIBackend, OpenAIOptions
from synthaug.testing import FakeOpenAIServer, Reply

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Every metric's data points, by metric name."""
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: list(m.data.data_points) for rm in data.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics}


async def three_calls(client: LLMClient) -> None:
    try:
        for i in range(3):
            await client.complete(Request(messages=({"role": "user", "content": f"q {i}"},)))
    finally:
        await client.close()


def test_calls_are_measured_with_the_gen_ai_conventions() -> None:
    reader = InMemoryMetricReader()
    telemetry.enable(MeterProvider(metric_readers=[reader]))
    try:
        with FakeOpenAIServer() as srv:
            srv.enqueue(Reply(status=429, headers={"Retry-After": "0"}, text="slow down"))
            client = LLMClient(OpenAIBackend(OpenAIOptions(base_url=srv.url, model="fake")))
            asyncio.run(three_calls(client))
    finally:
        telemetry.disable()
    found = points(reader)
    duration = found["gen_ai.client.operation.duration"]
    assert sum(p.count for p in duration) == 4  # 3 answers and the 429 before the first
    failed = [p for p in duration if "error.type" in p.attributes]
    assert [(p.count, p.attributes["error.type"]) for p in failed] == [(1, "429")]
    attrs = dict(duration[0].attributes)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "fake"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", srv.port)
    tokens = {p.attributes["gen_ai.token.type"]: p.sum
              for p in found["gen_ai.client.token.usage"]}
    assert tokens == {"input": client.stats.prompt_tokens,
                      "output": client.stats.completion_tokens}
    assert sum(p.value for p in found["synthaug.client.requests"]) == 4
    assert [p.value for p in found["synthaug.client.errors"]] == [1]
    assert [p.value for p in found["synthaug.client.concurrency_limit"]] == [client.stats.limit]
    assert [p.value for p in found["synthaug.client.in_flight"]] == [0]


def test_telemetry_is_off_and_imports_nothing_by_default() -> None:
    script = textwrap.dedent("""
        import sys
        from synthaug.backends.client import LLMClient
        from synthaug.testing.fake import FakeBackend, FakeOptions, Script
        client = LLMClient(FakeBackend(FakeOptions(script=Script().name)))
        assert client.observer is None
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAUG_OTEL")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "[]"


def test_the_environment_turns_on_a_prometheus_endpoint() -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = textwrap.dedent(f"""
        import asyncio, urllib.request
        from synthaug.backends.base import Request
        from synthaug.backends.client import LLMClient
        from synthaug.testing.fake import FakeBackend, FakeOptions, Script
        client = LLMClient(FakeBackend(FakeOptions(script=Script().name)))
        asyncio.run(client.complete(Request(prompt="hello")))
        print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics").read().decode())
    """)
    env = {**os.environ, "SYNTHAUG_OTEL": "1", "SYNTHAUG_OTEL_PROMETHEUS": str(port)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True, timeout=60).stdout
    assert "gen_ai_client_operation_duration" in out
    assert "synthaug_client_concurrency_limit" in out
