"""The step contract and its families; each family owns the loop and leaves one hook.

    Step       run(stream, ctx) -> stream          (the contract every step meets)
    ├── Map        apply(record) -> records        (CPU work: formatting, classic augmentation)
    ├── Filter     keep(record) -> bool | (False, reason)
    ├── LLMStep    prompt(record) -> messages|str; parse(record, replies) -> records
    ├── Generator  generate(pool, ctx) -> stream   (from nothing or a small pool)
    ├── Global     observe(record) -> records; finish() -> records   (stateful)
    └── Rounds     round(i, ctx) -> records        (repeats with state; hook between rounds)
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from synthaug.backends.base import Message, Request
from synthaug.backends.cache import prompt_sha
from synthaug.errors import BackendError, ParseError
from synthaug.records import Record, derive
from synthaug.steps.context import StepContext
from synthaug.streams import concurrent_map
from synthaug.template import MissingField

Prompt = str | Sequence[Message]


class StepOptions(BaseModel):
    """Options of a step; unknown keys fail with their name."""

    model_config = ConfigDict(extra="forbid")


OptionsT = TypeVar("OptionsT", bound=StepOptions)


class Step(ABC, Generic[OptionsT]):
    """Transforms an async stream of records; `options` is an instance of `Options`."""

    Options: ClassVar[type[StepOptions]] = StepOptions
    uses_llm: ClassVar[bool] = False
    options: OptionsT

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        chosen = options if options is not None else self.Options(**kwargs)
        self.options = cast(OptionsT, chosen)

    def requires(self) -> set[str]:
        """Fields every input record must have."""
        return set()

    def provides(self) -> set[str] | None:
        """Fields output records have beyond their inputs' (None: only these fields)."""
        return set()

    def backend_roles(self) -> list[str]:
        """The backend roles this step calls (the first is its main one); [] if none."""
        return [str(getattr(self.options, "backend", "default"))] if self.uses_llm else []

    @abstractmethod
    def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        """Consume `stream`, yield output records."""


AnyStep = Step[Any]


class Map(Step[OptionsT]):
    """One record in, zero or more out, no I/O."""

    @abstractmethod
    def apply(self, record: Record) -> Iterable[Record]:
        """The output records for `record` (their ids are assigned by the base)."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async for record in stream:
            try:
                outputs = list(self.apply(record))
            except MissingField as exc:
                ctx.reject(record, f"missing field '{exc.field}'", exc.field)
                continue
            for i, out in enumerate(outputs):
                yield derive([record], out, step=ctx.label, index=i)


class Filter(Step[OptionsT]):
    """Keeps or drops records; drops are counted by reason and written to dropped.jsonl."""

    @abstractmethod
    def keep(self, record: Record) -> bool | tuple[bool, str]:
        """True to keep; False or (False, reason) to drop."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async for record in stream:
            verdict = self.keep(record)
            ok, reason = verdict if isinstance(verdict, tuple) else (verdict, "filtered")
            if ok:
                yield record
            else:
                ctx.drop(record, reason)


class LLMOptions(StepOptions):
    """Sampling options shared by every LLM step."""

    backend: str = "default"
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = []
    window: int | None = None


LLMOptionsT = TypeVar("LLMOptionsT", bound=LLMOptions)
RoundsOptionsT = TypeVar("RoundsOptionsT", bound="RoundsOptions")


class LLMStep(Step[LLMOptionsT]):
    """Asks a model about each record; the base owns concurrency, caching and failures."""

    Options: ClassVar[type[StepOptions]] = LLMOptions
    uses_llm = True
    schema: ClassVar[type[BaseModel] | None] = None

    @abstractmethod
    def prompt(self, record: Record) -> Prompt:
        """Chat messages (or a raw prompt string) for `record`."""

    @abstractmethod
    def parse(self, record: Record, replies: list[str]) -> Iterable[Record]:
        """Output records from the replies; raise ParseError (or ValueError) if unusable."""

    def request(self, prompt: Prompt, seed: int) -> Request:
        """The request for one prompt, with this step's sampling options."""
        o = self.options
        return make_request(prompt, seed=seed, n=o.n, temperature=o.temperature, top_p=o.top_p,
                            max_tokens=o.max_tokens, stop=o.stop, schema=self.schema)

    async def replies(self, record: Record, request: Request, ctx: StepContext) -> list[str]:
        """The replies to parse for one record (steps that need several calls override this)."""
        validate = self.schema.model_validate_json if self.schema else None
        return [c.text for c in await ctx.complete(request, validate)]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        """The outputs for one record; failures and rejects are recorded, never raised."""
        try:
            request = self.request(self.prompt(record), ctx.seed_for(record))
        except MissingField as exc:
            ctx.reject(record, f"missing field '{exc.field}'", exc.field)
            return []
        try:
            replies = await self.replies(record, request, ctx)
        except BackendError as exc:
            ctx.fail(record, str(exc))
            return []
        try:
            outputs = list(self.parse(record, replies))
        except (ParseError, ValueError, KeyError, TypeError) as exc:
            ctx.fail(record, f"parse error: {exc}", raw=replies)
            return []
        assert ctx.llm is not None
        provenance = {"backend": ctx.llm.backend.name, "model": ctx.llm.backend.model,
                      "prompt_sha": prompt_sha(request), "seed": request.seed}
        return [derive([record], out, step=ctx.label, index=i, **provenance)
                for i, out in enumerate(outputs)]

    async def ask(self, prompt: Prompt, seed: int, ctx: StepContext) -> str:
        """One reply for `prompt` with this step's sampling options (for multi-call steps)."""
        o = self.options
        request = make_request(prompt, seed=seed, temperature=o.temperature, top_p=o.top_p,
                               max_tokens=o.max_tokens, stop=o.stop)
        return (await ctx.complete(request))[0].text

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        assert ctx.llm is not None
        window = self.options.window or 2 * ctx.llm.concurrency
        async for outputs in concurrent_map(stream, lambda r: self.process(r, ctx), window):
            for out in outputs:
                yield out


def make_request(
    prompt: Prompt,
    *,
    seed: int | None,
    n: int = 1,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_tokens: int = 256,
    stop: Sequence[str] = (),
    schema: type[BaseModel] | None = None,
) -> Request:
    """A Request from a prompt string (raw) or a message list (chat)."""
    if isinstance(prompt, str):
        messages, raw = None, prompt
    else:
        messages, raw = tuple(dict(m) for m in prompt), None
    return Request(
        messages=messages,
        prompt=raw,
        n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop),
        seed=seed, json_schema=schema.model_json_schema() if schema else None,
    )


class Generator(Step[OptionsT]):
    """Produces records from nothing, or from a small pool (the upstream records)."""

    def provides(self) -> set[str] | None:
        return None

    @abstractmethod
    def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        """Yield new records; `pool` holds every upstream record."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        pool = [record async for record in stream]
        async for record in self.generate(pool, ctx):
            yield record


class Global(Step[OptionsT]):
    """Needs state across the stream: `observe` may emit at once, `finish` at the end."""

    @abstractmethod
    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        """Take one record into the state; yield what can be emitted now."""

    def finish(self, ctx: StepContext) -> Iterable[Record]:
        """Yield what remains once the stream has ended."""
        return ()

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async for record in stream:
            for out in self.observe(record, ctx):
                yield out
        for out in self.finish(ctx):
            yield out


class RoundsOptions(StepOptions):
    """Options of a step that runs in rounds."""

    rounds: int = 3
    between_rounds: str | None = None  # shell command run after each round


class Rounds(Step[RoundsOptionsT]):
    """Repeats `round` with state held on the step; a shell hook may run between rounds."""

    Options: ClassVar[type[StepOptions]] = RoundsOptions

    def provides(self) -> set[str] | None:
        return None

    @abstractmethod
    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        """Set up the state from the upstream records."""

    @abstractmethod
    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        """Run round `index`; return its records and whether to stop."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        await self.start([record async for record in stream], ctx)
        for index in range(self.options.rounds):
            records, stop = await self.round(index, ctx)
            for record in records:
                yield record
            if stop:
                break
            if self.options.between_rounds:
                await _run_hook(self.options.between_rounds, index, ctx.label)


async def _run_hook(command: str, index: int, label: str) -> None:
    env = {**os.environ, "SYNTHAUG_ROUND": str(index), "SYNTHAUG_STEP": label}
    proc = await asyncio.create_subprocess_shell(command, env=env)
    if await proc.wait() != 0:
        raise RuntimeError(f"step {label}: between-rounds command failed: {command}")
