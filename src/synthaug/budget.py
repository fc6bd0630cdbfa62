"""Tokens, money and budgets: what a run's calls cost, per step and model, and when to stop.

Each call's tokens come from the backend's usage report (prompt, completion and, where the
backend reports them, reasoning tokens, which are part of the completion tokens and shown
apart). Money comes only from a price table the user supplies (`--prices FILE`):

    # model name: price per million tokens, in the table's own currency
    gpt-4o-mini: {input: 0.15, output: 0.60}
    my-local-model: {input: 0, output: 0}

A model missing from the table has an unknown cost (reported as such, never as 0), and so
has a model whose server answered a call without reporting its usage (`unmetered_calls`):
under `--max-tokens`/`--max-cost` such a call stops the run, which cannot see what it spends. Cache
hits are free and counted apart. A `Meter` sums one run; the executor runs every step under
a `Charge` (the meter and the step's label, carried by a context variable into the step's
tasks), which the client asks before each call (`admit`: raises `BudgetExhausted` once the
budget is spent) and tells after it (`paid`, `cached`). Spending of earlier runs into the
same output folder counts against the budget too (from the manifest's `usage.all_runs`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthaug import manifest
from synthaug.backends.base import AnyBackend, Completion, Request
from synthaug.errors import ConfigError, SynthaugError


class BudgetExhausted(SynthaugError):
    """The run's token or money budget is spent: no new call starts. `partial`: replies a
    call's earlier attempts got (valid, paid) before the refusal, for the client to cache."""

    partial: tuple[Completion, ...] = ()


class Price(BaseModel):
    """What a model costs per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, from the user's file (`source`)."""

    prices: dict[str, Price]
    source: str | None = None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The cost of these tokens on `model`, or None when the table has no price for it."""
        price = self.prices.get(model)
        if price is None:
            return None
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


def load_prices(path: Path) -> PriceTable:
    """Read and validate a price table; errors name the file and the model.field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the price table: {exc}", file=str(path)) from None
    if not isinstance(data, dict) or not data:
        raise ConfigError("a price table maps model names to {input: X, output: Y}, prices "
                          "per million tokens", file=str(path))
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        try:
            prices[str(model)] = Price.model_validate(entry)
        except ValidationError as exc:
            errors = exc.errors()  # a misspelt key first: it explains a missing one
            first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            where = ".".join(str(p) for p in (model, *first["loc"]))
            raise ConfigError(f"{first['msg']} (a price is {{input: X, output: Y}}, per "
                              "million tokens)", file=str(path), field=where) from None
    return PriceTable(prices, str(path))


@dataclass
class Tally:
    """Calls and tokens of one model for one step. Cached answers cost nothing: their
    count and tokens are kept apart (for estimates), never added to what was paid."""

    calls: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens, where the backend reports them
    cache_hits: int = 0
    cached_calls: int = 0  # calls the cache answered (in part or whole)
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    unmetered_calls: int = 0  # paid calls whose server reported no token usage

    @property
    def tokens(self) -> int:
        """Paid tokens: prompt + completion."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Tally) -> None:
        """Add `other`'s counts to this tally."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class Budget:
    """What a run may spend (None: no limit) and the prices that turn tokens into money."""

    prices: PriceTable | None = None
    max_cost: float | None = None
    max_tokens: int | None = None


@dataclass
class Meter:
    """Tokens and money of one run, by step and model, and the budget's gate."""

    budget: Budget = field(default_factory=Budget)
    earlier: dict[str, Tally] = field(default_factory=dict)  # by model, earlier runs
    steps: dict[str, dict[str, Tally]] = field(default_factory=dict)
    exhausted: str | None = None  # why calls were refused, once one was
    refused: int = 0
    trace: list[tuple[str, Request, list[Completion]]] | None = None  # (preview) the calls

    def tally(self, step: str, model: str) -> Tally:
        """The tally of `model` within `step` (created on first use)."""
        return self.steps.setdefault(step, {}).setdefault(model, Tally())

    def models(self) -> dict[str, Tally]:
        """This run's tallies by model (all steps summed)."""
        return _by_model(self.steps.values())

    def spent(self) -> dict[str, Tally]:
        """Tallies by model over this run and the earlier runs into the same folder."""
        return _by_model([self.earlier, self.models()])

    def cost(self, tallies: Mapping[str, Tally]) -> float | None:
        """The money of `tallies`; None when a model has no price (or there is no table)."""
        prices = self.budget.prices
        if prices is None:
            return None
        total = 0.0
        for model, t in tallies.items():
            if t.unmetered_calls:
                return None
            found = prices.cost(model, t.prompt_tokens, t.completion_tokens)
            if found is None and t.tokens:
                return None
            total += found or 0.0
        return total

    def over(self) -> str | None:
        """Why no new call may start, or None while the budget lasts."""
        b = self.budget
        blind = self.unmetered(self.spent())
        if blind and (b.max_tokens is not None or b.max_cost is not None):
            return (f"budget cannot be checked: {', '.join(blind)} answered without reporting "
                    "token usage")
        if b.max_tokens is not None:
            used = sum(t.tokens for t in self.spent().values())
            if used >= b.max_tokens:
                return f"token budget of {b.max_tokens} reached ({used} tokens spent)"
        if b.max_cost is not None:
            spent = self.spent()
            cost = self.cost(spent)
            if cost is None:  # a model without a price answered (e.g. switched to mid-run)
                return (f"cost budget of {b.max_cost:g} cannot be checked: no price for "
                        f"{', '.join(self.unpriced(spent))}")
            if cost >= b.max_cost:
                return f"cost budget of {b.max_cost:g} reached ({cost:.6g} spent)"
        return None

    def admit(self) -> None:
        """Raise BudgetExhausted if the budget is spent (called before every call)."""
        reason = self.over()
        if reason is not None:
            self.exhausted = reason
            self.refused += 1
            raise BudgetExhausted(reason)

    def summary(self) -> dict[str, Any]:
        """The manifest's `usage`: this run by step and model, all runs, the budget."""
        models, spent = self.models(), self.spent()
        b = self.budget
        return {
            "steps": {s: {m: asdict(t) for m, t in by.items()} for s, by in self.steps.items()},
            "models": {m: {**asdict(t), "cost": self.cost_of(m, t)} for m, t in models.items()},
            "tokens": sum(t.tokens for t in models.values()),
            "cost": self.cost(models),
            "cost_unknown": self.unpriced(models),
            "usage_unknown": self.unmetered(models),
            "prices": b.prices.source if b.prices else None,
            "all_runs": {"models": {m: asdict(t) for m, t in spent.items()},
                         "tokens": sum(t.tokens for t in spent.values()),
                         "cost": self.cost(spent)},
            "budget": {"max_tokens": b.max_tokens, "max_cost": b.max_cost,
                       "exhausted": self.exhausted, "refused_calls": self.refused},
        }

    def unpriced(self, tallies: Mapping[str, Tally]) -> list[str]:
        """Models in `tallies` with paid tokens and no price."""
        prices = self.budget.prices
        return sorted(m for m, t in tallies.items()
                      if t.tokens and (prices is None or m not in prices.prices))

    def unmetered(self, tallies: Mapping[str, Tally]) -> list[str]:
        """Models in `tallies` that answered a paid call without reporting token usage."""
        return sorted(m for m, t in tallies.items() if t.unmetered_calls)

    def cost_of(self, model: str, t: Tally) -> float | None:
        """The money of one model's tally; None without a price or with unreported usage."""
        prices = self.budget.prices
        if prices is None or t.unmetered_calls:
            return None
        return prices.cost(model, t.prompt_tokens, t.completion_tokens)


def _by_model(groups: Iterable[Mapping[str, Tally]]) -> dict[str, Tally]:
    total: dict[str, Tally] = {}
    for group in groups:
        for model, t in group.items():
            total.setdefault(model, Tally()).add(t)
    return total


@dataclass(frozen=True)
class Charge:
    """The meter a step's calls are charged to, and the step's label."""

    meter: Meter
    step: str

    def admit(self) -> None:
        """Raise BudgetExhausted if the run's budget is spent."""
        self.meter.admit()

    def paid(self, model: str, replies: list[Completion]) -> None:
        """Count one call to `model` and the tokens of its replies."""
        t = self.meter.tally(self.step, model)
        t.calls += 1
        t.samples += len(replies)
        t.unmetered_calls += any(not reply.usage_known for reply in replies)
        for reply in replies:
            t.prompt_tokens += reply.prompt_tokens
            t.completion_tokens += reply.completion_tokens
            t.reasoning_tokens += reply.reasoning_tokens

    def cached(self, model: str, replies: list[Completion]) -> None:
        """Count answers the cache gave (free), with the tokens they had cost."""
        t = self.meter.tally(self.step, model)
        t.cache_hits += len(replies)
        t.cached_calls += 1
        for reply in replies:
            t.cached_prompt_tokens += reply.prompt_tokens
            t.cached_completion_tokens += reply.completion_tokens

    def answered(self, request: Request, completions: list[Completion]) -> None:
        """Keep a step's request and its answers when the meter traces (preview)."""
        if self.meter.trace is not None:
            self.meter.trace.append((self.step, request, list(completions)))


_CHARGE: contextvars.ContextVar[Charge | None] = contextvars.ContextVar(
    "synthaug_charge", default=None)


def current() -> Charge | None:
    """The charge of the step running in this task (None outside a run's steps)."""
    return _CHARGE.get()


def charging(meter: Meter, step: str) -> contextvars.Context:
    """A context for a step's task: its calls (and those of tasks it starts) charge `meter`."""
    context = contextvars.copy_context()
    context.run(_CHARGE.set, Charge(meter, step))
    return context


def models_of(backends: Mapping[str, AnyBackend]) -> list[str]:
    """The model names the roles' backends call (a pool's members)."""
    found: list[str] = []
    for backend in backends.values():
        for member in getattr(backend, "members", None) or [backend]:
            found.append(member.model)
    return list(dict.fromkeys(found))


def check_prices(budget: Budget, backends: Mapping[str, AnyBackend]) -> None:
    """Refuse `--max-cost` when a model the run calls has no price (before any call)."""
    if budget.max_cost is None:
        return
    if budget.prices is None:
        raise ConfigError("--max-cost needs a price table: pass --prices FILE "
                          "(model: {input: X, output: Y} per million tokens)",
                          field="--max-cost")
    missing = [m for m in models_of(backends) if m not in budget.prices.prices]
    if missing:
        raise ConfigError(f"--max-cost needs a price for every model the run calls; none for "
                          f"{', '.join(missing)}", file=budget.prices.source, field=missing[0])


def earlier_spent(out_dir: Path) -> dict[str, Tally]:
    """Tokens by model that earlier runs into `out_dir` paid (from its manifest)."""
    try:
        data = manifest.read(out_dir) or {}
    except (OSError, ValueError):
        return {}
    models = ((data.get("usage") or {}).get("all_runs") or {}).get("models") or {}
    known = {f.name for f in fields(Tally)}
    return {str(m): Tally(**{k: int(v) for k, v in t.items() if k in known})
            for m, t in models.items() if isinstance(t, dict)}


def budget_of(prices: Path | None, max_cost: float | None, max_tokens: int | None) -> Budget:
    """The budget of the command-line flags (the price table read and validated)."""
    return Budget(load_prices(prices) if prices is not None else None, max_cost, max_tokens)


def usage_lines(meter: Meter) -> list[str]:
    """Plain lines for a run's summary: tokens, cost by model, the budget's state."""
    models = meter.models()
    paid = Tally()
    for t in models.values():
        paid.add(t)
    lines = [f"tokens: {paid.tokens} (prompt {paid.prompt_tokens}, completion "
             f"{paid.completion_tokens}, of which reasoning {paid.reasoning_tokens}) in "
             f"{paid.calls} calls; {paid.cache_hits} answers from the cache, free"]
    for model, t in models.items():
        cost = meter.cost_of(model, t)
        why = f"{t.unmetered_calls} calls without usage" if t.unmetered_calls else "no price"
        lines.append(f"  {model}: {t.tokens} tokens in {t.calls} calls, cost "
                     + (f"{cost:.6g}" if cost is not None else f"unknown ({why})"))
    total = meter.cost(models)
    unpriced, blind = meter.unpriced(models), meter.unmetered(models)
    if blind:
        lines.append(f"cost: unknown: {', '.join(blind)} answered without reporting token "
                     "usage (tokens counted as 0)")
    elif total is not None:
        lines.append(f"cost: {total:.6g} (prices from {meter.budget.prices.source})"
                     if meter.budget.prices else f"cost: {total:.6g}")
    elif unpriced:
        lines.append(f"cost: unknown: no price for {', '.join(unpriced)} (--prices FILE)")
    if meter.exhausted:
        lines.append(f"budget spent: {meter.exhausted}; calls refused: {meter.refused}. "
                     "Rerun with a larger budget to resume (answered calls come from the "
                     "cache)")
    return lines
