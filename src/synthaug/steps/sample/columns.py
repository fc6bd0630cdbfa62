"""Column samplers: one pydantic model per distribution, each with `draw(rng, row)`.

Every draw takes its randomness from the `random.Random` it is given (numpy and Faker are
seeded from it), so a column's value depends only on the seed the step derives for it.
Parameters are checked when the options are built: a bad value fails naming the column.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from synthaug.errors import RecordError

Key = str | bool | int | float  # a parent column's value, as a YAML mapping key


class Conditional(BaseModel):
    """`column`: the column (or input field) whose value picks the case (not `on`, which
    YAML reads as true); `cases`: value -> parameters that replace this column's (with
    `type:`, another distribution); a value with no case keeps this column's parameters."""

    model_config = ConfigDict(extra="forbid")

    column: str
    cases: dict[Key, dict[str, Any]] = Field(min_length=1)


class ColumnBase(BaseModel):
    """What every column has: a conditional override of its parameters, a text form."""

    model_config = ConfigDict(extra="forbid")

    # choose this column's parameters (or distribution) by another column's value
    conditional: Conditional | None = None
    text: bool = False  # store the value as a string (prompt templates fill only strings)
    _cases: dict[Any, Any] = PrivateAttr(default_factory=dict)

    def parents(self) -> set[str]:
        """The columns or fields this column's value depends on."""
        return {self.conditional.column} if self.conditional else set()

    def resolve(self, row: dict[str, Any]) -> Any:
        """The column spec to draw with for `row` (a conditional case, or this one)."""
        if self.conditional is None:
            return self
        on = self.conditional.column
        if on not in row:
            raise RecordError(on, f"missing field '{on}' (the conditional of a sampled column)")
        try:
            return self._cases.get(row[on], self)
        except TypeError:  # an unhashable value matches no case
            return self

    @model_validator(mode="after")
    def _build_cases(self) -> ColumnBase:
        if self.conditional is None:
            return self
        base = self.model_dump(exclude={"conditional"})
        for key, case in self.conditional.cases.items():
            merged = case if case.get("type", base["type"]) != base["type"] else {**base, **case}
            try:
                self._cases[key] = column_adapter().validate_python(merged)
            except ValueError as exc:
                raise ValueError(f"conditional case {key!r}: {exc}") from None
        return self


def column_adapter() -> Any:
    """The validator of any column spec (every kind, person included)."""
    from synthaug.steps.sample.step import COLUMN

    return COLUMN


def _rounded(value: float, decimals: int | None) -> float:
    return round(value, decimals) if decimals is not None else value


class CategoryColumn(ColumnBase):
    """One of `values`, with optional `weights` (relative, not necessarily summing to 1)."""

    type: Literal["category"]
    values: list[Any] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> CategoryColumn:
        _check_weights(self.values, self.weights)
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        return rng.choices(self.values, weights=self.weights)[0]


class SubcategoryColumn(ColumnBase):
    """One of `values[row[parent]]` (with optional weights per parent value)."""

    type: Literal["subcategory"]
    parent: str
    values: dict[Key, list[Any]] = Field(min_length=1)
    weights: dict[Key, list[float]] | None = None

    @model_validator(mode="after")
    def _check(self) -> SubcategoryColumn:
        for key, values in self.values.items():
            if not values:
                raise ValueError(f"no subcategories for {key!r}")
            _check_weights(values, (self.weights or {}).get(key))
        extra = set(self.weights or {}) - set(self.values)
        if extra:
            raise ValueError(f"weights for parent values without subcategories: {sorted(extra)}")
        return self

    def parents(self) -> set[str]:
        return super().parents() | {self.parent}

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        if self.parent not in row:
            raise RecordError(self.parent, f"missing field '{self.parent}' (the parent of a "
                                           f"subcategory)")
        parent = row[self.parent]
        try:
            values = self.values[parent]
        except (KeyError, TypeError):
            raise RecordError(self.parent, f"no subcategories for the value {parent!r} of "
                                           f"'{self.parent}'") from None
        return rng.choices(values, weights=(self.weights or {}).get(parent))[0]


class UniformColumn(ColumnBase):
    """Uniform on [low, high]; `integer`: whole numbers, both ends included."""

    type: Literal["uniform"]
    low: float
    high: float
    integer: bool = False
    decimals: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> UniformColumn:
        if self.high < self.low or (self.high == self.low and not self.integer):
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an integer uniform needs whole-number low and high")
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        return _rounded(rng.uniform(self.low, self.high), self.decimals)


class GaussianColumn(ColumnBase):
    """Normal with `mean` and `std` (> 0), optionally rounded to `decimals`."""

    type: Literal["gaussian"]
    mean: float
    std: float = Field(gt=0)
    decimals: int | None = Field(None, ge=0)

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        return _rounded(rng.gauss(self.mean, self.std), self.decimals)


class BernoulliColumn(ColumnBase):
    """True with probability `p`."""

    type: Literal["bernoulli"]
    p: float = Field(ge=0, le=1)

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        return rng.random() < self.p


class PoissonColumn(ColumnBase):
    """Poisson counts with mean `lam` (> 0)."""

    type: Literal["poisson"]
    lam: float = Field(gt=0)

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        return poisson(rng, self.lam)


class ScipyColumn(ColumnBase):
    """Any `scipy.stats` distribution by name, e.g. {dist: beta, params: {a: 2, b: 5}}
    (needs scipy: pip install 'synthaug[samplers]')."""

    type: Literal["scipy"]
    dist: str
    params: dict[str, int | float] = {}
    decimals: int | None = Field(None, ge=0)
    _frozen: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> ScipyColumn:
        try:
            from scipy import stats
        except ImportError:
            raise ValueError("scipy distributions need scipy: pip install "
                             "'synthaug[samplers]'") from None
        family = getattr(stats, self.dist, None)
        if not isinstance(family, stats.rv_continuous | stats.rv_discrete):
            raise ValueError(f"scipy.stats has no distribution named {self.dist!r}")
        try:
            self._frozen = family(**self.params)
            self._frozen.rvs(random_state=0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters for scipy.stats.{self.dist}: {exc}") from None
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        import numpy as np

        value = self._frozen.rvs(random_state=np.random.default_rng(rng.getrandbits(64)))
        value = value.item() if hasattr(value, "item") else value
        return _rounded(value, self.decimals) if isinstance(value, float) else value


class DateColumn(ColumnBase):
    """A day between `start` and `end` (both included), as YYYY-MM-DD."""

    type: Literal["date"]
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _check(self) -> DateColumn:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        days = rng.randint(0, (self.end - self.start).days)
        return (self.start + dt.timedelta(days=days)).isoformat()


class DatetimeColumn(ColumnBase):
    """A moment between `start` and `end` to the second, as ISO 8601."""

    type: Literal["datetime"]
    start: dt.datetime
    end: dt.datetime

    @model_validator(mode="after")
    def _check(self) -> DatetimeColumn:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    def draw(self, rng: random.Random, row: dict[str, Any]) -> Any:
        seconds = rng.randint(0, int((self.end - self.start).total_seconds()))
        return (self.start + dt.timedelta(seconds=seconds)).isoformat()


def _check_weights(values: list[Any], weights: list[float] | None) -> None:
    if weights is None:
        return
    if len(weights) != len(values):
        raise ValueError(f"{len(weights)} weights for {len(values)} values")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: multiplication for small means, PTRS (Hörmann 1993) for large ones."""
    if lam < 10:
        limit, k, product = math.exp(-lam), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u, v = rng.random() - 0.5, rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1)):
            return k
