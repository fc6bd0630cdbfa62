"""The vllm backend: the request/reply translations, the batching worker with a recording
engine, the import guard, and (only on a GPU machine with vllm) the real engine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from synthaug.backends.base import Completion, Request
from synthaug.backends.vllm import (
    Engine,
    VLLMBackend,
    VLLMOptions,
    completions_of,
    engine_kwargs,
    load_engine,
    sampling_kwargs,
    structured_api,
)
from synthaug.cli import app
from synthaug.errors import FatalBackendError, MissingDependency, RetryableError
from synthaug.testing import FakeOpenAIServer
from tests.conftest import write_jsonl

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


# --- a recording stand-in for vllm.LLM -----------------------------------------------------

@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    finish_reason: str | None = "stop"
    index: int = 0
    logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class Output:
    outputs: list[Sample]
    prompt_token_ids: list[int] = field(default_factory=list)


class RecordingLLM:
    """Shaped like `vllm.LLM`: `generate(prompts, params)` and `chat(conversations, params)`
    with one params object per prompt; echoes each prompt and records each batch's size."""

    def __init__(self, delay: float = 0.05, fail: type[Exception] | None = None,
                 poison: str | None = None) -> None:
        self.delay, self.fail, self.poison = delay, fail, poison
        self.calls: list[tuple[str, int]] = []
        self.threads: set[int] = set()
        self.conversations: list[list[dict[str, str]]] = []

    def generate(self, prompts: list[str], params: list[dict[str, Any]],
                 use_tqdm: bool = True) -> list[Output]:
        return self._answer("generate", prompts, params)

    def chat(self, conversations: list[list[dict[str, str]]], params: list[dict[str, Any]],
             use_tqdm: bool = True, chat_template: str | None = None) -> list[Output]:
        self.conversations.extend(conversations)
        return self._answer("chat", [c[-1]["content"] for c in conversations], params)

    def _answer(self, kind: str, texts: list[str], params: list[dict[str, Any]]) -> list[Output]:
        assert len(texts) == len(params)
        self.calls.append((kind, len(texts)))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail("engine step failed")
        if self.poison is not None and any(self.poison in t for t in texts):
            raise ValueError("prompt too long for the context window")
        return [Output([Sample(f"{kind}:{t}#{i}", [1, 2, 3], index=i)
                        for i in reversed(range(p["n"]))],  # out of order: sorted by index
                       prompt_token_ids=list(range(12)))
                for t, p in zip(texts, params, strict=True)]


def backend(llm: RecordingLLM, **options: Any) -> VLLMBackend:
    return VLLMBackend(VLLMOptions(model="m", **options), engine=Engine(llm))


def request(i: int, chat: bool) -> Request:
    text = f"q{i}"
    if chat:
        return Request(messages=({"role": "user", "content": text},), n=i % 3 + 1, seed=i)
    return Request(prompt=text, n=i % 3 + 1, seed=i)


async def answer_all(b: VLLMBackend, requests: list[Request]) -> list[Any]:
    try:
        return await asyncio.wait_for(asyncio.gather(
            *(b.generate(r) for r in requests), return_exceptions=True), timeout=10)
    finally:
        await b.close()


# --- pure translations ---------------------------------------------------------------------

def test_sampling_kwargs_carry_n_seed_stop_and_logprobs() -> None:
    chat = Request(messages=({"role": "user", "content": "hi"},), n=3, seed=7, stop=("\n",),
                   temperature=0.2, top_p=0.9, max_tokens=40, top_logprobs=2)
    assert sampling_kwargs(chat, "structured_outputs") == {
        "n": 3, "temperature": 0.2, "top_p": 0.9, "max_tokens": 40, "stop": ["\n"],
        "seed": 7, "logprobs": 2}
    raw = Request(prompt="Once", logprobs=True)
    assert sampling_kwargs(raw, "guided_decoding") == {
        "n": 1, "temperature": 0.7, "top_p": 1.0, "max_tokens": 256, "logprobs": 0}


@pytest.mark.parametrize("api", ["structured_outputs", "guided_decoding"])
def test_a_json_schema_goes_under_the_name_of_the_installed_api(api: Any) -> None:
    kwargs = sampling_kwargs(Request(prompt="x", json_schema=SCHEMA), api)
    other = {"structured_outputs", "guided_decoding"} - {api}
    assert kwargs[api] == {"json": SCHEMA} and not other & set(kwargs)


def test_the_api_is_detected_from_the_sampling_params_module() -> None:
    new = types.SimpleNamespace(StructuredOutputsParams=object, GuidedDecodingParams=object)
    assert structured_api(new) == "structured_outputs"
    assert structured_api(types.SimpleNamespace(GuidedDecodingParams=object)) == "guided_decoding"


def fake_vllm(monkeypatch: pytest.MonkeyPatch, new_api: bool) -> types.ModuleType:
    """A stand-in `vllm` package: LLM and SamplingParams record their keyword arguments."""
    class Recorded:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    vllm, sampling = types.ModuleType("vllm"), types.ModuleType("vllm.sampling_params")
    vllm.LLM = type("LLM", (Recorded,), {})  # type: ignore[attr-defined]
    vllm.SamplingParams = type("SamplingParams", (Recorded,), {})  # type: ignore[attr-defined]
    name = "StructuredOutputsParams" if new_api else "GuidedDecodingParams"
    setattr(sampling, name, type(name, (Recorded,), {}))
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return sampling


@pytest.mark.parametrize("new_api", [True, False])
def test_load_engine_builds_the_llm_and_wraps_the_schema_in_the_right_class(
        monkeypatch: pytest.MonkeyPatch, new_api: bool) -> None:
    sampling = fake_vllm(monkeypatch, new_api)
    engine = load_engine(VLLMOptions(model="org/m", max_model_len=4096, dtype="bfloat16",
                                     engine_args={"max_num_seqs": 64}))
    assert engine.llm.kwargs["model"] == "org/m" and engine.llm.kwargs["max_model_len"] == 4096
    assert engine.llm.kwargs["max_num_seqs"] == 64 and engine.llm.kwargs["dtype"] == "bfloat16"
    params = engine.make_params(sampling_kwargs(Request(prompt="x", json_schema=SCHEMA, seed=3),
                                                engine.api))
    key = "structured_outputs" if new_api else "guided_decoding"
    cls = sampling.StructuredOutputsParams if new_api else sampling.GuidedDecodingParams
    assert engine.api == key and params.kwargs["seed"] == 3
    assert isinstance(params.kwargs[key], cls) and params.kwargs[key].kwargs == {"json": SCHEMA}


def test_engine_kwargs_leave_out_unset_options() -> None:
    kwargs = engine_kwargs(VLLMOptions(model="m"))
    assert kwargs["model"] == "m" and kwargs["gpu_memory_utilization"] == 0.9
    assert not {"max_model_len", "revision", "quantization"} & set(kwargs)


def test_completions_of_reads_samples_in_order_with_tokens_and_logprobs() -> None:
    steps = [{5: Logprob(-0.1, 1, "a"), 7: Logprob(-2.5, 2, "b")},
             {8: Logprob(-0.3, 1, "c"), 9: Logprob(-1.5, 2, "d"), 6: Logprob(-4.0, 5, "e")}]
    out = Output([Sample("second", [1], "length", index=1),
                  Sample("first", [5, 6], "stop", index=0, logprobs=steps)],
                 prompt_token_ids=list(range(10)))
    got = completions_of(out, Request(prompt="p", n=2, seed=4, top_logprobs=2))
    assert [c.text for c in got] == ["first", "second"]
    first = got[0]
    assert (first.finish_reason, first.completion_tokens, first.prompt_tokens) == ("stop", 2, 5)
    assert first.logprobs == [-0.1, -4.0]  # the sampled tokens' own, whatever their rank
    assert first.top_logprobs == [{"a": -0.1, "b": -2.5}, {"c": -0.3, "d": -1.5}]
    assert got[1].logprobs is None and got[1].seed == 4


# --- the batching worker ---------------------------------------------------------------------

def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_outputs() -> None:
    llm = RecordingLLM()
    requests = [request(i, chat=i % 2 == 0) for i in range(32)]
    results = asyncio.run(answer_all(backend(llm), requests))
    assert sum(size for _, size in llm.calls) == 32
    assert len(llm.calls) <= 6, llm.calls  # 32 one-request calls without batching
    assert len(llm.threads) == 1  # one thread ever touches the engine
    for i, (req, got) in enumerate(zip(requests, results, strict=True)):
        kind = "chat" if req.messages is not None else "generate"
        assert [c.text for c in got] == [f"{kind}:q{i}#{k}" for k in range(req.n)]
        assert all(c.seed == i and c.prompt_tokens == 12 // req.n for c in got)
    assert {c[-1]["content"] for c in llm.conversations} == {f"q{i}" for i in range(0, 32, 2)}


def test_max_batch_caps_the_requests_of_one_engine_call() -> None:
    llm = RecordingLLM()
    asyncio.run(answer_all(backend(llm, max_batch=5), [request(i, False) for i in range(32)]))
    assert max(size for _, size in llm.calls) <= 5 and sum(s for _, s in llm.calls) == 32


def test_an_engine_failure_fails_every_caller_of_the_batch_instead_of_hanging() -> None:
    llm = RecordingLLM(delay=0.01, fail=RuntimeError)
    results = asyncio.run(answer_all(backend(llm), [request(i, i % 2 == 0) for i in range(32)]))
    assert all(isinstance(r, RetryableError) for r in results), results


def test_one_refused_request_fails_only_its_own_caller() -> None:
    llm = RecordingLLM(delay=0.01, poison="q13")
    results = asyncio.run(answer_all(backend(llm), [request(i, False) for i in range(32)]))
    assert isinstance(results[13], FatalBackendError) and "context window" in str(results[13])
    assert all(isinstance(r, list) and r[0].text == f"generate:q{i}#0"
               for i, r in enumerate(results) if i != 13)


def test_a_model_that_cannot_load_fails_the_callers_and_close_lets_it_load_again() -> None:
    attempts: list[int] = []

    def broken() -> Engine:
        attempts.append(1)
        raise RuntimeError("CUDA out of memory")

    b = VLLMBackend(VLLMOptions(model="m"), engine=Engine(RecordingLLM()))
    b._load = broken  # type: ignore[method-assign]
    results = asyncio.run(answer_all(b, [request(i, False) for i in range(4)]))
    assert all(isinstance(r, FatalBackendError) and "out of memory" in str(r) for r in results)
    asyncio.run(answer_all(b, [request(0, False)]))
    assert len(attempts) == 2


def test_requests_after_close_start_a_fresh_worker() -> None:
    llm = RecordingLLM(delay=0.0)
    b = backend(llm)
    first = asyncio.run(answer_all(b, [request(1, False)]))
    second = asyncio.run(answer_all(b, [request(2, False)]))
    assert isinstance(first[0], list) and isinstance(second[0], list)
    assert b.summary()["requests"] == 2


# --- the import guard ------------------------------------------------------------------------

GUARD = """
import sys
from synthaug import registry
from synthaug.pipeline import BackendSpec, build_backend
build_backend(BackendSpec(use="openai", **{"with": {"base_url": "http://127.0.0.1:9/v1"}}))
for name in registry.backend_names():
    registry.backend_class(name)
build_backend(BackendSpec(use="vllm", **{"with": {"model": "m"}}))
print("IMPORTED" if "vllm" in sys.modules else "CLEAN")
"""


def test_synthaug_and_its_backends_never_import_vllm_until_first_use(tmp_path: Path) -> None:
    # an importable `vllm`, so that any import of it would show in sys.modules
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", GUARD], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "CLEAN"


RECIPE = """
name: vllm-missing
input: required
backends:
  default: {{use: openai, with: {{base_url: "{url}", model: m}}}}
  big: {{use: vllm, with: {{model: org/some-model}}}}
steps:
  - use: text-generation
    name: draft
    with: {{template: "{{q}}"}}
  - use: text-generation
    name: polish
    with: {{template: "{{generation}}", output_field: polished, backend: big}}
"""


def test_a_recipe_using_vllm_without_it_fails_before_any_call(
        server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed, on any machine
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE.format(url=server.url)))
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": f"question {i}"} for i in range(3)])
    result = CliRunner().invoke(app, ["run", str(recipe), "-i", str(data),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "pip install 'synthaug[vllm]'" in " ".join(result.output.split())
    assert server.calls == [] and not (tmp_path / "out" / "records.jsonl").exists()
    with pytest.raises(MissingDependency, match=r"synthaug\[vllm\]"):
        VLLMBackend(VLLMOptions(model="m"))


# --- the real engine (GPU machines with vllm only) -------------------------------------------

def _gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _gpu_with_vllm(), reason="needs the `vllm` package and a CUDA GPU "
                    "(pip install 'synthaug[vllm]' on a GPU machine); neither is on CI")
def test_real_vllm_engine_answers_chat_raw_and_json_schema() -> None:
    model = os.environ.get("SYNTHAUG_VLLM_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    b = VLLMBackend(VLLMOptions(model=model, max_model_len=2048, gpu_memory_utilization=0.5))

    async def go() -> list[list[Completion]]:
        try:
            return list(await asyncio.gather(
                b.generate(Request(messages=({"role": "user", "content": "Say hello."},),
                                   n=2, seed=1, max_tokens=32, logprobs=True)),
                b.generate(Request(prompt="The capital of France is", max_tokens=16,
                                   temperature=0.0, stop=("\n",))),
                b.generate(Request(messages=({"role": "user", "content":
                                              "Invent a person. Reply in JSON."},),
                                   json_schema=SCHEMA, max_tokens=64, seed=2))))
        finally:
            await b.close()

    chat, raw, schema = asyncio.run(go())
    assert len(chat) == 2 and all(c.text and c.completion_tokens > 0 for c in chat)
    assert all(c.logprobs is not None and len(c.logprobs) == c.completion_tokens for c in chat)
    assert raw[0].text.strip() and "\n" not in raw[0].text
    assert isinstance(json.loads(schema[0].text)["name"], str)
