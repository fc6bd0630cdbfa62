"""`when:` on a recipe step: the step sees only the records that match a condition.

    - use: text-generation
      name: summarize
      when: "len(text) > 200 and lang == 'en'"

A record the condition rejects passes through the step unchanged (same fields, same id), with
the step's label added to its `_meta.skipped`; the step never sees it, so no call is paid for
it and nothing is dropped. The condition is a safe expression (`synthaug.expressions`) checked
when the recipe is loaded. A record for which it cannot be evaluated (a field it names is
missing, or a type error) is rejected with the reason.

Only the fields the condition reads are required of every record. The fields the step itself
needs are checked on matching records only: a matching record that lacks one (or holds another
type) is rejected naming the field, and a skipped record never needs them. What the step adds
is not guaranteed (skipped records lack it), so a later step that needs such a field fails when
the recipe is loaded ("field 'summary' is provided only when ..."), unless an earlier
unconditional step or the input provides it. A step that makes records from nothing (`sample`
with `count`) is refused with `when:`, as there is no record to judge.

What the step sees is the stream of matching records, so a step with state across records (a
Global step such as a dedup or a decontamination index) builds that state from the matching
records only: `when: "lang == 'en'"` on a dedup removes duplicates among English records and
lets the others through. A Generator or Rounds step makes records from its whole upstream
pool rather than per record, so `when:` on one is refused.

Skipped records may come out ahead of records the step still holds; ids do not change, so a
rerun resumes exactly as without `when:`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from synthaug.errors import ConfigError, RecordError, WrongType
from synthaug.expressions import Expression, ExpressionError
from synthaug.io import type_words
from synthaug.records import META, Record, meta
from synthaug.steps.base import (
    AnyStep,
    Generator,
    Requirements,
    Rounds,
    Scope,
    Step,
    requirements,
)
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Uses

_DONE: Any = object()


class Conditional(Step[Any]):
    """Runs `step` on the records where `condition` holds; the others pass through."""

    def __init__(self, step: AnyStep, condition: str) -> None:
        if isinstance(step, Generator | Rounds):
            kind = "a Generator" if isinstance(step, Generator) else "a Rounds step"
            raise ConfigError(f"`when:` applies a step per record, but {type(step).__name__} "
                              f"is {kind}: it makes records from its whole upstream pool; put "
                              f"the condition on a step before or after it", field="when")
        if getattr(step, "from_nothing", False):
            raise ConfigError(f"`when:` judges incoming records, but {type(step).__name__} with "
                              f"`count` makes records from nothing; remove `count` or `when:`",
                              field="when")
        try:
            self.condition = Expression(condition)
        except ExpressionError as exc:
            raise ConfigError(f"invalid condition: {exc}", field="when") from None
        self.step = step
        self.options = step.options

    def requires(self) -> Requirements:
        """The fields the condition reads (of any type); the step's own are checked on
        matching records only (`fits`)."""
        return {name: object for name in self.condition.names}

    def scope(self) -> Scope:
        return self.step.scope()

    def provides(self) -> set[str] | None:
        """Nothing for sure (skipped records lack what the step adds); None if unknown."""
        return None if self.step.provides() is None else set()

    def fits(self, record: Record, ctx: StepContext) -> bool:
        """Whether a matching record holds the step's fields; if not it is rejected."""
        for name, kinds in requirements(self.step).items():
            if name not in record:
                ctx.reject(record, f"missing required field (the record matches "
                                   f"{self.condition.text!r})", name)
                return False
            value = record[name]
            if not (bool in kinds if isinstance(value, bool) else
                    isinstance(value, kinds) or (isinstance(value, int) and float in kinds)):
                ctx.reject(record, WrongType(name, type_words(kinds), value).reason, name)
                return False
        return True

    def uses(self) -> list[Uses]:
        return self.step.uses()

    def prepare(self) -> None:
        self.step.prepare()

    def matches(self, record: Record, ctx: StepContext) -> bool | None:
        """True/False, or None after rejecting a record the condition cannot be judged on."""
        try:
            return self.condition.holds(record)
        except RecordError as exc:
            ctx.reject(record, f"when {self.condition.text!r}: {exc.reason}", exc.field)
            return None

    def skipped(self, record: Record, ctx: StepContext) -> Record:
        """`record` unchanged but for this step's label in `_meta.skipped`."""
        ctx.stats.notes["skipped (when)"] += 1
        notes = meta(record)
        return {**record, META: {**notes, "skipped": [*notes.get("skipped", []), ctx.label]}}

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        inner: asyncio.Queue[Any] = asyncio.Queue(64)
        out: asyncio.Queue[Any] = asyncio.Queue(64)

        async def route() -> None:
            async for record in stream:
                verdict = self.matches(record, ctx)
                if verdict:
                    if self.fits(record, ctx):
                        await inner.put(record)
                elif verdict is not None:
                    await out.put(self.skipped(record, ctx))
            await inner.put(_DONE)

        async def matched() -> AsyncIterator[Record]:
            while (record := await inner.get()) is not _DONE:
                yield record

        async def work() -> None:
            async for record in self.step.run(matched(), ctx):
                await out.put(record)
            await out.put(_DONE)

        tasks = [asyncio.create_task(_forwarding(route(), out)),
                 asyncio.create_task(_forwarding(work(), out))]
        try:
            while (item := await out.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _forwarding(work: Awaitable[None], out: asyncio.Queue[Any]) -> None:
    """Run `work`; an exception goes to `out` for the consumer to raise."""
    try:
        await work
    except Exception as exc:
        await out.put(_Failure(exc))


def conditional(step: AnyStep, condition: str | None) -> AnyStep:
    """`step`, wrapped when it has a condition."""
    return Conditional(step, condition) if condition else step


def unwrap(step: AnyStep) -> AnyStep:
    """The step itself, without its `when:` wrapper."""
    return step.step if isinstance(step, Conditional) else step


def conditional_fields(step: AnyStep, label: str) -> dict[str, str]:
    """For a conditional step, each field its step adds, with the error a later step that
    needs it gets: the field is there only on the records the condition matches."""
    if not isinstance(step, Conditional):
        return {}
    return {name: f"field '{name}' is provided only when {step.condition.text!r} (step "
                  f"{label}); records the condition skips lack it: drop `when:` there, or "
                  f"give this step the same condition"
            for name in step.step.provides() or set()}


def condition_of(step: AnyStep) -> str | None:
    """The step's `when:` condition (None if it has none)."""
    return step.condition.text if isinstance(step, Conditional) else None
