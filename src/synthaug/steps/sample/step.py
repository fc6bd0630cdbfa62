"""The `sample` step: seed attributes drawn from distributions, with no model call.

    - use: sample
      with:
        count: 100                      # records made when the step receives none
        columns:
          domain: {type: category, values: [science, law, cooking], weights: [3, 1, 1]}
          topic: {type: subcategory, parent: domain, values: {science: [...], law: [...], ...}}
          level: {type: uniform, low: 1, high: 5, integer: true}
          words: {type: gaussian, mean: 300, std: 60, decimals: 0,
                  conditional: {on: level, cases: {5: {mean: 600}}}}
          start: {type: date, start: 2020-01-01, end: 2024-12-31}
          end: {type: date, start: 2020-01-01, end: 2024-12-31}
          author: {type: person, locale: de_DE, fields: [name, age, city]}
        constraints: ["end > start"]

With records coming in, each gets `per_record` outputs with the columns added; with none (the
recipe's first step and no input), `count` records are made from nothing. `count` is refused
on any step but the first, and with `when:`, so records a filter or a condition removed are
never replaced by records made from nothing. A column may depend
on another (a subcategory's `parent`, a conditional's `on`); columns are drawn in dependency
order and a cycle is refused when the recipe is loaded. A row breaking a constraint is drawn
again as a whole (rejection sampling, so the accepted rows follow the joint distribution
restricted to the constraints), up to `max_tries` times, then the record becomes a failure
row naming the constraint.

Every value comes from a seed made of the run seed, the step, the record's id (or the output's
index), the try and the column name: the same seed gives the same records, whatever the
concurrency, the number of records or the order of columns in the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from pydantic import Field, TypeAdapter, field_validator

from synthaug.errors import RecordError
from synthaug.expressions import Expression, ExpressionError
from synthaug.records import Record, content
from synthaug.steps.base import Requirements, Scope, Step, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.sample.columns import (
    BernoulliColumn,
    CategoryColumn,
    DateColumn,
    DatetimeColumn,
    GaussianColumn,
    PoissonColumn,
    ScipyColumn,
    SubcategoryColumn,
    UniformColumn,
)
from synthaug.steps.sample.person import PersonColumn

Column = Annotated[CategoryColumn | SubcategoryColumn | UniformColumn | GaussianColumn
                   | BernoulliColumn | PoissonColumn | ScipyColumn | DateColumn
                   | DatetimeColumn | PersonColumn, Field(discriminator="type")]
COLUMN: TypeAdapter[Any] = TypeAdapter(Column)


class SampleOptions(StepOptions):
    """Options of sample."""

    columns: dict[str, Column] = Field(min_length=1)
    constraints: list[str] = []  # expressions every row must satisfy, e.g. "end > start"
    max_tries: int = Field(100, ge=1)  # draws of a row before it becomes a failure
    count: int | None = Field(None, ge=1)  # records made when the step receives none
    per_record: int = Field(1, ge=1)  # outputs per incoming record

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: dict[str, Any]) -> dict[str, Any]:
        draw_order(columns)
        _check_subcategories(columns)
        return columns

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, constraints: list[str]) -> list[str]:
        for text in constraints:
            try:
                Expression(text)
            except ExpressionError as exc:
                raise ValueError(f"constraint {text!r}: {exc}") from None
        return constraints


def draw_order(columns: dict[str, Any]) -> list[str]:
    """Columns in an order where each comes after those it depends on; a cycle fails."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = [*path[path.index(name):], name]
            raise ValueError(f"columns depend on each other in a cycle: {' -> '.join(cycle)}")
        state[name] = "open"
        for parent in sorted(columns[name].parents() & set(columns)):
            visit(parent, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in columns:
        visit(name, [])
    return order


def _check_subcategories(columns: dict[str, Any]) -> None:
    """A subcategory must cover every value its (plain category) parent can take."""
    for name, column in columns.items():
        parent = columns.get(column.parent) if isinstance(column, SubcategoryColumn) else None
        if isinstance(parent, CategoryColumn) and parent.conditional is None:
            missing = [v for v in parent.values if v not in column.values]
            if missing:
                raise ValueError(f"column {name!r} has no subcategories for {missing} of "
                                 f"'{column.parent}'")


class Sample(Step[SampleOptions]):
    """Adds sampled columns to each record, or makes `count` records from nothing."""

    Options: ClassVar[type[StepOptions]] = SampleOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.order = draw_order(self.options.columns)
        self.constraints = [Expression(text) for text in self.options.constraints]

    def requires(self) -> Requirements:
        """Fields of the input that columns or constraints read (of any type)."""
        columns = self.options.columns
        read = {p for column in columns.values() for p in column.parents()}
        read |= {n for expression in self.constraints for n in expression.names}
        return {name: object for name in sorted(read - set(columns))}

    def provides(self) -> set[str]:
        return set(self.options.columns)

    def scope(self) -> Scope:
        return "global" if self.from_nothing else "record"

    @property
    def from_nothing(self) -> bool:
        """Whether the step makes records from nothing (`count`): only a recipe's first step
        may, and never under `when:` (checked when the recipe is loaded)."""
        return self.options.count is not None

    async def run(self, stream: AsyncIterator[Record], ctx: StepContext) -> AsyncIterator[Record]:
        received = False
        async for record in stream:
            received = True
            for index in range(self.options.per_record):
                drawn = self._row(record, index, ctx)
                if drawn is not None:
                    yield ctx.derive([record], {**content(record), **drawn}, index)
        if not received:
            for index in range(self.options.count or 0):
                drawn = self._row(None, index, ctx)
                if drawn is not None:
                    yield ctx.derive([], drawn, index)

    def _row(self, record: Record | None, index: int, ctx: StepContext) -> Record | None:
        """The sampled columns for one output, or None (a reject or a failure row)."""
        try:
            return self.draw(record, index, ctx)
        except RecordError as exc:
            if record is None:
                ctx.fail({"sample": index}, exc.reason)
            else:
                ctx.reject(record, exc.reason, exc.field)
        except ConstraintError as exc:
            ctx.fail(record if record is not None else {"sample": index}, str(exc))
        return None

    def draw(self, record: Record | None, index: int, ctx: StepContext) -> Record:
        """One accepted row of columns; raises ConstraintError after `max_tries` rejections."""
        o = self.options
        base = content(record) if record is not None else {}
        broken: Expression | None = None
        for attempt in range(o.max_tries):
            row = dict(base)
            for name in self.order:
                column = o.columns[name].resolve(row)
                row[name] = column.draw(ctx.rng(record, "sample", index, attempt, name), row)
            broken = next((c for c in self.constraints if not c.holds(row)), None)
            if broken is None:
                ctx.stats.notes["redraws"] += attempt
                return {name: _text(row[name]) if o.columns[name].resolve(row).text
                        else row[name] for name in o.columns}
        assert broken is not None
        raise ConstraintError(f"constraint {broken.text!r} still false after {o.max_tries} "
                              f"draws (raise max_tries or loosen the columns)")


class ConstraintError(Exception):
    """No row met the constraints within `max_tries` draws."""


def _text(value: Any) -> Any:
    """`value` as a string (each value of a mapping, for a person)."""
    if isinstance(value, dict):
        return {key: _text(item) for key, item in value.items()}
    return str(value).lower() if isinstance(value, bool) else str(value)
