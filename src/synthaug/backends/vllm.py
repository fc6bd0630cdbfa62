"""vLLM's offline engine (`vllm.LLM`) in this process, for GPU machines (extra `vllm`).

Why requests are batched: vLLM is fast because it runs many sequences at once, scheduling
them together on the GPU with a paged KV cache; one prompt at a time leaves most of the GPU
idle. Its offline `LLM` is synchronous and must not be called from several threads at once.
So `generate` puts each caller's request on a queue, and ONE worker thread takes whatever is
queued (up to `max_batch` requests), makes one `LLM.chat` call for the chat requests and one
`LLM.generate` call for the raw prompts, each request with its own `SamplingParams`, and
hands every caller its own outputs on the caller's event loop. `concurrency` (callers in
flight) is what fills the batches, so its default is high.

vLLM is imported only when the worker thread starts (the first `generate`); building the
backend only checks that the package is installed, and nothing else in synthaug imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from synthaug.backends.base import (
    Backend,
    BackendOptions,
    Completion,
    Request,
    sampling_fields,
)
from synthaug.errors import (
    BackendError,
    FatalBackendError,
    MissingDependency,
    RetryableError,
)

# how SamplingParams takes a JSON schema: vLLM >= 0.11 `structured_outputs=
# StructuredOutputsParams(json=...)`; older releases `guided_decoding=GuidedDecodingParams(...)`
StructuredAPI = Literal["structured_outputs", "guided_decoding"]


class VLLMOptions(BackendOptions):
    """Options of the vllm backend; `engine_args` passes any other `vllm.LLM` argument."""

    model: str  # Hugging Face id or local directory
    concurrency: int = Field(256, ge=1)  # requests in flight: they make up the batches
    adaptive: bool = False  # an in-process engine has no server to protect
    max_retries: int = Field(1, ge=0)
    max_batch: int = Field(256, ge=1)  # requests per engine call
    revision: str | None = None
    dtype: str = "auto"
    quantization: str | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = False  # skip CUDA graph capture: faster start, slower decoding
    trust_remote_code: bool = False
    engine_args: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Engine:
    """What the worker thread drives: an `LLM` (or anything with its `generate` and `chat`),
    how sampling keyword arguments become its parameters, and its JSON-schema API."""

    llm: Any
    make_params: Callable[[dict[str, Any]], Any] = dict
    api: StructuredAPI = "structured_outputs"


# --- pure translations ---------------------------------------------------------------------

def engine_kwargs(options: VLLMOptions) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM(...)` for `options`."""
    kwargs: dict[str, Any] = {
        "model": options.model,
        "dtype": options.dtype,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "tensor_parallel_size": options.tensor_parallel_size,
        "enforce_eager": options.enforce_eager,
        "trust_remote_code": options.trust_remote_code,
    }
    for name in ("revision", "quantization", "max_model_len"):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    return {**kwargs, **options.engine_args}


def structured_api(sampling_module: Any) -> StructuredAPI:
    """Which JSON-schema API the installed `vllm.sampling_params` module has."""
    if hasattr(sampling_module, "StructuredOutputsParams"):
        return "structured_outputs"
    return "guided_decoding"


def sampling_kwargs(request: Request, api: StructuredAPI) -> dict[str, Any]:
    """`SamplingParams` keyword arguments for `request`; a JSON schema goes under `api` as
    `{"json": schema}` (turned into the params class by `Engine.make_params`)."""
    kwargs = sampling_fields(request)
    if request.logprobs or request.top_logprobs:
        kwargs["logprobs"] = request.top_logprobs  # vLLM adds the sampled token's own
    if request.json_schema is not None:
        kwargs[api] = {"json": request.json_schema}
    return kwargs


def completions_of(output: Any, request: Request) -> list[Completion]:
    """The completions in one vLLM `RequestOutput`, in sample order. The prompt's tokens are
    shared out over the samples, as the openai backend does with a reply's usage."""
    choices = sorted(output.outputs, key=lambda c: getattr(c, "index", 0))
    prompt_tokens = len(getattr(output, "prompt_token_ids", None) or ()) // max(len(choices), 1)
    out = []
    for choice in choices:
        tokens = list(choice.token_ids)
        steps = getattr(choice, "logprobs", None)
        out.append(Completion(
            text=choice.text,
            finish_reason=choice.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            logprobs=_sampled_logprobs(steps, tokens) if steps is not None else None,
            top_logprobs=(_alternatives(steps, request.top_logprobs)
                          if steps is not None and request.top_logprobs else None),
            seed=request.seed,
        ))
    return out


def _sampled_logprobs(steps: Sequence[dict[int, Any]], tokens: list[int]) -> list[float]:
    """The logprob of each sampled token (vLLM keys each step's entries by token id)."""
    return [float(step[token].logprob) for step, token in zip(steps, tokens, strict=False)]


def _alternatives(steps: Sequence[dict[int, Any]], top: int) -> list[dict[str, float]]:
    """Per token, the `top` most likely tokens (by rank) and their logprobs."""
    found = []
    for step in steps:
        best = sorted(step.items(), key=lambda item: _rank(item[1]))[:top]
        found.append({str(getattr(lp, "decoded_token", None) or token): float(lp.logprob)
                      for token, lp in best})
    return found


def _rank(logprob: Any) -> float:
    rank = getattr(logprob, "rank", None)
    return float("inf") if rank is None else float(rank)


def load_engine(options: VLLMOptions) -> Engine:
    """Import vLLM and load the model (minutes for a large one); called by the worker."""
    vllm = importlib.import_module("vllm")
    sampling = importlib.import_module("vllm.sampling_params")
    api = structured_api(sampling)
    params_class = getattr(sampling, "StructuredOutputsParams" if api == "structured_outputs"
                           else "GuidedDecodingParams")

    def make_params(kwargs: dict[str, Any]) -> Any:
        kwargs = dict(kwargs)
        if api in kwargs:
            kwargs[api] = params_class(**kwargs[api])
        return vllm.SamplingParams(**kwargs)

    return Engine(vllm.LLM(**engine_kwargs(options)), make_params, api)


# --- the worker thread ---------------------------------------------------------------------

@dataclass
class _Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Completion]]


@dataclass
class BatchStats:
    """Engine calls made and requests they carried."""

    calls: int = 0
    requests: int = 0
    largest: int = 0

    def add(self, size: int) -> None:
        self.calls += 1
        self.requests += size
        self.largest = max(self.largest, size)


_STOP = object()


class _Batcher:
    """One thread that owns the engine: loads it, then serves queued jobs in batches."""

    def __init__(self, load: Callable[[], Engine], max_batch: int, chat_template: str | None,
                 stats: BatchStats) -> None:
        self._load, self._max, self._template, self.stats = load, max_batch, chat_template, stats
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="synthaug-vllm", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        """Finish the batch in progress, then fail whatever is still queued."""
        self._queue.put(_STOP)
        self._thread.join()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                _settle(job, FatalBackendError("the vllm backend was closed"))

    def _run(self) -> None:
        engine: Engine | None = None
        broken: BackendError | None = None
        try:
            engine = self._load()
        except Exception as exc:  # ImportError, CUDA/OOM, unknown model: nothing will work
            broken = FatalBackendError(f"vLLM could not load the model: {exc}")
        while (batch := self._next_batch()) is not None:
            if engine is None:
                for job in batch:
                    _settle(job, broken or FatalBackendError("no engine"))
                continue
            live = [job for job in batch if not job.future.cancelled()]
            for chat in (True, False):
                jobs = [job for job in live if (job.request.messages is not None) == chat]
                if jobs:
                    self._serve(engine, jobs, chat)
        engine = None
        gc.collect()  # vLLM frees the GPU (and stops its engine process) once the LLM is gone

    def _next_batch(self) -> list[_Job] | None:
        """The next job (waiting for one) and whatever else is queued, up to `max_batch`;
        None once stopped."""
        first = self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        while len(batch) < self._max:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # serve this batch, then stop
                break
            batch.append(job)
        return batch

    def _serve(self, engine: Engine, jobs: list[_Job], chat: bool) -> None:
        """One engine call for `jobs`; if it fails, each job alone, so that one bad request
        (say, a prompt longer than the context) fails only its own caller."""
        try:
            params = [engine.make_params(sampling_kwargs(job.request, engine.api))
                      for job in jobs]
            self.stats.add(len(jobs))
            if chat:
                outputs = engine.llm.chat([[dict(m) for m in job.request.messages or ()]
                                           for job in jobs], params, use_tqdm=False,
                                          chat_template=self._template)
            else:
                outputs = engine.llm.generate([job.request.prompt for job in jobs], params,
                                              use_tqdm=False)
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._serve(engine, [job], chat)
                return
            _settle(jobs[0], _translate(exc))
            return
        if len(outputs) != len(jobs):
            for job in jobs:
                _settle(job, RetryableError(f"vLLM answered {len(outputs)} of {len(jobs)} "
                                            "requests"))
            return
        for job, output in zip(jobs, outputs, strict=True):
            try:
                _settle(job, completions_of(output, job.request))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                _settle(job, RetryableError(f"unreadable vLLM output: {exc!r}"))


def _translate(exc: Exception) -> BackendError:
    """vLLM's ValueError/TypeError reject the request itself (retrying will not help); other
    errors (a failed step, out of memory) may pass."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):
        return FatalBackendError(f"vLLM refused the request: {exc}")
    return RetryableError(f"vLLM failed: {type(exc).__name__}: {exc}")


def _settle(job: _Job, result: list[Completion] | BackendError) -> None:
    """Resolve a caller's future on its own loop (from the worker thread)."""
    def resolve() -> None:
        if job.future.done():  # the caller gave up
            return
        if isinstance(result, BackendError):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this answer
        job.loop.call_soon_threadsafe(resolve)


# --- the backend ---------------------------------------------------------------------------

class VLLMBackend(Backend[VLLMOptions]):
    """vLLM's offline engine on this machine's GPUs, requests batched by one worker thread.

    The engine is loaded by the worker on first use; `close()` finishes the batch in
    progress, fails queued requests and drops the engine; a later call loads it again.
    `engine` injects a ready engine (tests, or a caller that built its own `LLM`)."""

    name = "vllm"
    Options: ClassVar[type[BackendOptions]] = VLLMOptions
    raw_completion = True
    json_schema = True
    logprobs = True

    def __init__(self, options: BackendOptions, *, engine: Engine | None = None) -> None:
        super().__init__(options)
        if engine is None and importlib.util.find_spec("vllm") is None:
            raise MissingDependency("vllm", "the vllm backend", "vllm")
        self._given = engine
        self._batcher: _Batcher | None = None
        self._start = threading.Lock()
        self.stats = BatchStats()

    def identity(self) -> dict[str, Any]:
        opts = self.options
        extra = {k: v for k, v in (("revision", opts.revision), ("quantization",
                 opts.quantization), ("engine_args", opts.engine_args or None)) if v}
        return {**super().identity(), "dtype": opts.dtype, **extra}

    async def generate(self, request: Request) -> list[Completion]:
        loop = asyncio.get_running_loop()
        job = _Job(request, loop, loop.create_future())
        self._submit(job)
        return await job.future

    def _submit(self, job: _Job) -> None:
        """Queue `job` for the worker (started on first use); under the lock `close` takes,
        so no job reaches a worker after it was told to stop."""
        with self._start:
            if self._batcher is None:
                self._batcher = _Batcher(self._load, self.options.max_batch,
                                         self.options.chat_template, self.stats)
            self._batcher.submit(job)

    def _load(self) -> Engine:
        return self._given if self._given is not None else load_engine(self.options)

    async def close(self) -> None:
        with self._start:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.stop)

    def summary(self) -> dict[str, Any]:
        stats = self.stats
        if not stats.calls:
            return {}
        return {"engine_calls": stats.calls, "requests": stats.requests,
                "largest_batch": stats.largest,
                "mean_batch": round(stats.requests / stats.calls, 2)}
