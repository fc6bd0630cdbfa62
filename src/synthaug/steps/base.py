"""The step contract and its families; each family owns the loop and leaves one hook.

    Step       run(stream, ctx) -> stream          (the contract every step meets)
    ├── Map        apply(record, ctx) -> records   (CPU work: formatting, classic augmentation)
    ├── Filter     keep(record) -> bool | (False, reason)
    ├── Each       process(record, ctx) -> records (async per record, e.g. several model calls)
    │   └── LLMStep    prompt(record, ctx) -> messages|str; parse(record, reply, ctx) -> records
    ├── Generator  generate(pool, ctx) -> stream   (from nothing or a small pool)
    ├── Global     observe(record, ctx) -> records; finish(ctx) -> records   (stateful)
    └── Rounds     round(i, ctx) -> records        (repeats with state; a hook between
                                                    rounds may switch the model)

Any family reaches models through the context (`ctx.generate`), declaring the roles it calls
in `uses()`; failures follow `ctx.attempt`, the same way everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthaug import budget
from synthaug.errors import ParseError, RecordError, StepError
from synthaug.records import Record, dumps, stable_hash
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Prompt, Reply, Sampling, Uses
from synthaug.streams import concurrent_map

Requirements = set[str] | Mapping[str, type | tuple[type, ...]]
# "record": each record's outputs depend on that record alone, so a stream may be cut into
# shards run apart (other processes, other machines); "global": the step needs the whole stream
Scope = Literal["record", "global"]


class StepOptions(BaseModel):
    """Options of a step; unknown keys fail with their name.

    A partial mapping given for a sub-model option (e.g. `sampling: {max_tokens: 64}`) keeps
    the step's own defaults for the keys it leaves out.
    """

    model_config = ConfigDict(extra="forbid")
    # options that change speed, never output: left out of the run identity
    tuning: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _merge_nested_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, info in cls.model_fields.items():
            given, default = merged.get(name), info.default
            if isinstance(given, dict) and isinstance(default, BaseModel):
                merged[name] = {**default.model_dump(), **given}
        return merged


OptionsT = TypeVar("OptionsT", bound=StepOptions)


class Step(ABC, Generic[OptionsT]):
    """Transforms an async stream of records; `options` is an instance of `Options`."""

    Options: ClassVar[type[StepOptions]] = StepOptions
    options: OptionsT

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        chosen = options if options is not None else self.Options(**kwargs)
        self.options = cast(OptionsT, chosen)

    def requires(self) -> Requirements:
        """Fields every input record must have (a set: strings; a mapping: with their types)."""
        return set()

    def provides(self) -> set[str] | None:
        """Fields output records have beyond their inputs' (None: only these fields)."""
        return set()

    def uses(self) -> list[Uses]:
        """The backend roles this step calls (the first is its main one); [] if none."""
        return []

    def prepare(self) -> None:
        """Check what the step needs of this machine (a tool, isolation) before any call."""

    def scope(self) -> Scope:
        """Whether the step may run on shards of the stream ("record") or needs all of it
        ("global": a sharding executor runs it once over every shard's records, in order,
        unless the step offers a way to combine shards, see `steps/sharded.py`)."""
        return "global"

    @abstractmethod
    def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        """Consume `stream`, yield output records."""


AnyStep = Step[Any]


def requirements(step: AnyStep) -> dict[str, tuple[type, ...]]:
    """A step's required fields with the types each may hold (str unless declared)."""
    found = step.requires()
    if isinstance(found, set):
        return {name: (str,) for name in found}
    return {name: kind if isinstance(kind, tuple) else (kind,) for name, kind in found.items()}


def guarded(hook: Callable[[Record, StepContext], Iterable[Record]], record: Record,
            ctx: StepContext) -> list[Record]:
    """The hook's outputs for `record`; a record unfit for the step is rejected ([])."""
    try:
        return list(hook(record, ctx))
    except RecordError as exc:
        ctx.reject(record, exc.reason, exc.field)
        return []


class Map(Step[OptionsT]):
    """One record in, zero or more out, no I/O."""

    def scope(self) -> Scope:
        return "record"

    @abstractmethod
    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        """The output records for `record` (their ids are assigned by the base)."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async for record in stream:
            for i, out in enumerate(guarded(self.apply, record, ctx)):
                yield ctx.derive([record], out, i)


class Filter(Step[OptionsT]):
    """Keeps or drops records; drops are counted by reason and written to dropped.jsonl."""

    def scope(self) -> Scope:
        return "record"

    @abstractmethod
    def keep(self, record: Record) -> bool | tuple[bool, str]:
        """True to keep; False or (False, reason) to drop."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async for record in stream:
            try:
                verdict = self.keep(record)
            except RecordError as exc:
                ctx.reject(record, exc.reason, exc.field)
                continue
            ok, reason = verdict if isinstance(verdict, tuple) else (verdict, "filtered")
            if ok:
                yield record
            else:
                ctx.drop(record, reason)


class EachOptions(StepOptions):
    """Options of a per-record async step."""

    window: int | None = Field(None, ge=1)  # records in progress (default 2x the concurrency)

    tuning: ClassVar[frozenset[str]] = frozenset({"window"})


EachOptionsT = TypeVar("EachOptionsT", bound=EachOptions)


class Each(Step[EachOptionsT]):
    """Processes records concurrently, each through `process`; failures become side rows."""

    def scope(self) -> Scope:
        return "record"

    Options: ClassVar[type[StepOptions]] = EachOptions

    @abstractmethod
    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        """The outputs for one record; may raise BackendError, ParseError or RecordError."""

    def window(self, ctx: StepContext) -> int:
        """How many records are in progress at once."""
        return self.options.window or (2 * ctx.capacity() if self.uses() else 64)

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        async def one(record: Record) -> list[Record] | None:
            return await ctx.attempt(self.process(record, ctx), record)

        async for outputs in concurrent_map(stream, one, self.window(ctx)):
            for out in outputs or ():
                yield out


class LLMOptions(EachOptions):
    """Options every single-call LLM step has: the role, samples per record, sampling."""

    backend: str = "default"
    n: int = Field(1, ge=1)
    sampling: Sampling = Sampling()


LLMOptionsT = TypeVar("LLMOptionsT", bound=LLMOptions)


class LLMStep(Each[LLMOptionsT]):
    """Asks a model about each record: `prompt` builds the request, `parse` reads the reply."""

    Options: ClassVar[type[StepOptions]] = LLMOptions
    schema: ClassVar[type[BaseModel] | None] = None
    raw: ClassVar[bool] = False  # prompts are raw completion strings (not chat messages)

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend, raw_completion=self.raw,
                     json_schema=self.schema is not None)]

    @abstractmethod
    def prompt(self, record: Record, ctx: StepContext) -> Prompt:
        """Chat messages (or a raw prompt string) for `record`."""

    @abstractmethod
    def parse(self, record: Record, reply: Reply, ctx: StepContext) -> Iterable[Record]:
        """Output records from the reply; raise ParseError (or ValueError) if unusable."""

    async def ask(self, record: Record, ctx: StepContext) -> Reply:
        """The reply to parse (steps that need several calls override this)."""
        schema = self.schema
        return await ctx.generate(
            self.prompt(record, ctx), self.options.sampling, seed=ctx.seed_for(record),
            n=self.options.n, schema=schema.model_json_schema() if schema else None,
            validate=schema.model_validate_json if schema else None)

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        reply = await self.ask(record, ctx)
        try:
            outputs = list(self.parse(record, reply, ctx))
        except RecordError:
            raise
        except (ParseError, ValueError, KeyError, TypeError) as exc:
            raise ParseError(str(exc), raw=reply.texts) from None
        return [ctx.derive([record], out, i, reply) for i, out in enumerate(outputs)]


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
            for out in guarded(self.observe, record, ctx):
                yield out
        for out in self.finish(ctx):
            yield out


class RoundsOptions(StepOptions):
    """Options of a step that runs in rounds."""

    rounds: int = Field(3, ge=1)
    # shell command run after each round (e.g. training on the round's records); it gets
    # SYNTHAUG_ROUND, SYNTHAUG_STEP, SYNTHAUG_ROUND_DATA (the round's records, JSONL),
    # SYNTHAUG_ROLE and SYNTHAUG_MODEL; a JSON object on its last stdout line, e.g.
    # {"model": "sft-r1", "base_url": "http://..."} or {"role": "policy", "options": {...}},
    # switches that backend role to the new model for the next round
    between_rounds: str | None = None


RoundsOptionsT = TypeVar("RoundsOptionsT", bound=RoundsOptions)


class Rounds(Step[RoundsOptionsT]):
    """Repeats `round` with state held on the step; a shell hook may run between rounds and
    switch the model the next round uses.

    Each round's model and record count go to the manifest (`ctx.note_round` adds more). With
    `between_rounds`, the round's records are written to OUT/rounds/STEP/round-N.jsonl, the
    command runs, and its result is kept in round-N.switch.json: a rerun of the same output
    folder that makes the same round data applies the stored result instead of running the
    command again.
    """

    Options: ClassVar[type[StepOptions]] = RoundsOptions

    def provides(self) -> set[str] | None:
        return None

    def planned_rounds(self) -> int:
        """How many rounds to run (default: the `rounds` option)."""
        return self.options.rounds

    @abstractmethod
    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        """Set up the state from the upstream records."""

    @abstractmethod
    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        """Run round `index`; return its records and whether to stop."""

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        await self.start([record async for record in stream], ctx)
        for index in range(self.planned_rounds()):
            ctx.note_round(index, model=ctx.model())
            records, stop = await self.round(index, ctx)
            ctx.note_round(index, records=len(records))
            for record in records:
                yield record
            if stop:
                break
            if _budget_spent():  # the round is partial: no hook on it, no later round
                ctx.note_round(index, stopped="budget spent")
                break
            if self.options.between_rounds:
                await between_rounds(self.options.between_rounds, index, records, ctx)


def _budget_spent() -> bool:
    """Whether the run's budget refused a call (a rerun with a larger one resumes)."""
    charge = budget.current()
    return charge is not None and charge.meter.exhausted is not None


async def between_rounds(command: str, index: int, records: list[Record],
                         ctx: StepContext) -> None:
    """Run `command` after round `index` (or reuse its stored result) and apply its switch."""
    data = ctx.round_file(index, ".jsonl")
    text = "".join(dumps(record) + "\n" for record in records)
    data.write_text(text, encoding="utf-8")
    digest = stable_hash(text)
    done = ctx.round_file(index, ".switch.json")
    stored = _stored_result(done, command, digest)
    if stored is not None:
        ctx.note_round(index, hook="reused")
        await _apply(stored.get("switch"), index, ctx)
        return
    switch = await _run_hook(command, index, data, ctx)
    ctx.note_round(index, hook="ran")
    await _apply(switch, index, ctx)
    result = {"round": index, "command": command, "data": digest, "switch": switch}
    partial = done.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    partial.replace(done)


def _stored_result(path: Path, command: str, digest: str) -> dict[str, Any] | None:
    """The stored result of `command` for a round, if a previous run finished it on the same
    round data (different data, e.g. problems that failed before: the command runs again)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or (found.get("command"), found.get("data")) != \
            (command, digest):
        return None
    return found


async def _apply(switch: Any, index: int, ctx: StepContext) -> None:
    if not switch:
        return
    model = await ctx.switch_backend(switch["role"], switch["options"])
    ctx.note_round(index, switched_to={"role": switch["role"], "model": model})


async def _run_hook(command: str, index: int, data: Path, ctx: StepContext) -> Any:
    """Run the command; its stdout goes to round-N.log; returns the switch it asks for."""
    role = ctx.main_role or ""
    env = {**os.environ, "SYNTHAUG_ROUND": str(index), "SYNTHAUG_STEP": ctx.label,
           "SYNTHAUG_ROUND_DATA": str(data), "SYNTHAUG_ROLE": role,
           "SYNTHAUG_MODEL": ctx.model() or ""}
    proc = await asyncio.create_subprocess_shell(command, env=env,
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    text = out.decode("utf-8", errors="replace")
    ctx.round_file(index, ".log").write_text(text, encoding="utf-8")
    if proc.returncode != 0:
        raise StepError(f"step {ctx.label}: between-rounds command exited {proc.returncode} "
                        f"after round {index}: {command}")
    return _switch_request(text, role, ctx.label)


def _switch_request(stdout: str, role: str, label: str) -> dict[str, Any] | None:
    """{role, options} from a JSON object on the last stdout line; None if it prints none."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("{"):
        return None
    try:
        asked = json.loads(lines[-1])
    except ValueError as exc:
        raise StepError(f"step {label}: the between-rounds command's last line is not valid "
                        f"JSON ({exc}): {lines[-1][:200]}") from None
    options = asked.pop("options", {}) if isinstance(asked, dict) else None
    if not isinstance(asked, dict) or not isinstance(options, dict):
        raise StepError(f"step {label}: the between-rounds command's last line must be a JSON "
                        f"object like {{\"model\": ...}}: {lines[-1][:200]}")
    chosen = asked.pop("role", None) or role
    options = {**options, **asked}
    return {"role": chosen, "options": options} if options else None
