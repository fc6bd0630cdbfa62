"""Preview: a few input records through every step, shown as a trace, and the full run's cost.

`run_preview` runs the pipeline as `synthaug run --limit N` would, into a scratch folder that
is deleted afterwards, with the response cache of the real run: the calls it pays are the
first calls the full run would make (same records, seeds and prompts), so the full run
replays them from the cache. `trace_lines` shows, step by step, each record made with the
prompts and replies behind it, the records each filter dropped and why, failures and
rejects; `estimate_lines` extrapolates the full run's calls, tokens and cost.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.backends.base import Completion, Request
from synthaug.budget import Budget, Meter, Tally
from synthaug.errors import ConfigError
from synthaug.executors.local import LocalExecutor, RunConfig, RunState
from synthaug.io import SIDE_KINDS
from synthaug.pipeline import Pipeline
from synthaug.records import Record, content, meta
from synthaug.steps.base import Generator

CUT = 600  # characters of a prompt, reply or record shown


@dataclass
class Preview:
    """What a preview saw: the run's state, each step's records and calls, the side rows."""

    state: RunState
    records: dict[str, list[Record]] = field(default_factory=dict)
    side: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    full_count: int | None = None  # input records the full run would read (None: unknown)
    cache: Path | None = None

    @property
    def meter(self) -> Meter:
        """The preview's tokens and calls."""
        return self.state.usage

    def tap(self, label: str, record: Record) -> None:
        """Keep a record a step made (the executor's tap)."""
        self.records.setdefault(label, []).append(record)


def run_preview(pipeline: Pipeline, *, input_path: Path | None, n: int, cache: Path,
                budget: Budget, id_field: str = "id", limit: int | None = None) -> Preview:
    """Run `n` input records through `pipeline` with `cache`; nothing else is written."""
    for label, step in pipeline.steps:
        if getattr(step.options, "between_rounds", None):
            raise ConfigError("a preview does not run between-rounds commands; preview with "
                              f"--set {label}.between_rounds=null", step=label,
                              field="between_rounds")
    with tempfile.TemporaryDirectory(prefix="synthaug-preview-") as scratch:
        folder = Path(scratch)
        config = RunConfig(out_dir=folder, input_path=input_path, limit=n, cache_path=cache,
                           id_field=id_field, budget=Budget(prices=budget.prices))
        found = Preview(state=RunState(steps=[]), cache=cache)
        found.state = LocalExecutor(config, tap=found.tap).run(pipeline)
        for kind in SIDE_KINDS:
            found.side[kind] = _rows(folder / f"{kind}.jsonl")
        full = RunConfig(out_dir=folder, input_path=input_path, limit=limit)
        found.full_count = _input_count(pipeline, full)
    return found


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _input_count(pipeline: Pipeline, config: RunConfig) -> int | None:
    """Lines (or Parquet rows) of the input the full run reads (capped by its --limit)."""
    from synthaug.executors.plan import resolve_input
    from synthaug.inputs import count_units

    return count_units(resolve_input(pipeline, config.input_path), config.limit)


# -- the trace --------------------------------------------------------------------------------
def trace_lines(found: Preview) -> list[str]:
    """Step by step: records made with their prompts and replies, drops, failures, rejects."""
    calls = _calls_by_step(found.meter)
    lines: list[str] = []
    for number, stats in enumerate(found.state.steps, start=1):
        label = stats.label
        lines.append(f"== step {number} {label}: {stats.inputs} in, {stats.outputs} out, "
                     f"{sum(stats.dropped.values())} dropped, {stats.failures} failed, "
                     f"{stats.rejects} rejected")
        mine = calls.get(label, {})
        shown: set[str] = set()
        for record in found.records.get(label, []):
            lines.append(f"  record {meta(record).get('id', '?')}")
            for sha in _shas(record):
                if sha in mine:
                    shown.add(sha)
                    lines += _call_lines(*mine[sha])
            lines.append(f"    -> {_cut(json.dumps(content(record), ensure_ascii=False))}")
        for sha, call in mine.items():
            if sha not in shown:
                lines.append("  a call whose record was not kept")
                lines += _call_lines(*call)
        lines += _side_lines(found.side, label)
    return lines


def _calls_by_step(meter: Meter) -> dict[str, dict[str, tuple[Request, list[Completion]]]]:
    from synthaug.backends.cache import prompt_sha

    found: dict[str, dict[str, tuple[Request, list[Completion]]]] = {}
    for step, request, completions in meter.trace or []:
        found.setdefault(step, {})[prompt_sha(request)] = (request, completions)
    return found


def _shas(record: Record) -> list[str]:
    m = meta(record)
    shas = [str(c["prompt_sha"]) for c in m.get("calls") or [] if isinstance(c, dict)
            and c.get("prompt_sha")]
    return shas or ([str(m["prompt_sha"])] if m.get("prompt_sha") else [])


def _call_lines(request: Request, completions: list[Completion]) -> list[str]:
    cached = all(c.cached for c in completions)
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in completions)
    lines = [f"    call: {len(completions)} answer(s), {tokens} tokens"
             + (" (from the cache, free)" if cached else "")]
    if request.messages is not None:
        lines += [f"      {m.get('role', '?')}: {_cut(m.get('content', ''))}"
                  for m in request.messages]
    else:
        lines.append(f"      prompt: {_cut(request.prompt or '')}")
    lines += [f"      reply: {_cut(c.text)}" for c in completions]
    return lines


def _side_lines(side: dict[str, list[dict[str, Any]]], label: str) -> list[str]:
    lines: list[str] = []
    words = {"dropped": "dropped", "failures": "failed", "rejects": "rejected"}
    for kind, rows in side.items():
        for row in rows:
            if row.get("step") != label:
                continue
            detail = f" ({_cut(str(row['detail']))})" if row.get("detail") else ""
            record = row.get("record")
            shown = content(record) if isinstance(record, dict) else record
            lines.append(f"  {words.get(kind, kind)}: {row.get('reason')}{detail}")
            lines.append(f"    record: {_cut(json.dumps(shown, ensure_ascii=False))}")
    return lines


def _cut(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= CUT else flat[:CUT] + " ..."


# -- the estimate -----------------------------------------------------------------------------
def estimate_lines(found: Preview, pipeline: Pipeline) -> list[str]:
    """The full run's calls, tokens and cost, extrapolated from the preview per input record."""
    meter = found.meter
    read = found.state.steps[0].inputs if found.state.steps else 0
    models = meter.models()
    seen = Tally()
    for t in models.values():
        seen.add(t)
    calls = seen.calls + seen.cached_calls
    tokens = seen.tokens + seen.cached_prompt_tokens + seen.cached_completion_tokens
    lines = [f"preview: {read} input records, {calls} calls ({seen.calls} paid, "
             f"{seen.cached_calls} from the cache), {tokens} tokens ({seen.tokens} paid)"]
    if found.full_count is None:
        lines.append("full run: no estimate: the recipe reads no input, so its work does not "
                     "scale with an input count")
        return lines
    if read == 0:
        lines.append("full run: no estimate: the preview read no input record")
        return lines
    scale = found.full_count / read
    lines.append(f"full run (estimate: the preview's figures per input record x "
                 f"{found.full_count} input records): ~{round(calls * scale)} calls, "
                 f"~{round(tokens * scale)} tokens, " + _cost_estimate(meter, models, scale))
    makers = [label for label, step in pipeline.steps if isinstance(step, Generator)]
    if makers:
        lines.append(f"note: {', '.join(makers)} make records from a pool, not one input "
                     "record at a time: their calls do not scale with the input; the "
                     "estimate is rough")
    lines.append(f"the previewed calls are in {found.cache}: the full run with this cache "
                 "replays them for free")
    return lines


def _cost_estimate(meter: Meter, models: dict[str, Tally], scale: float) -> str:
    prices = meter.budget.prices
    if prices is None:
        return "cost unknown (no --prices)"
    total = 0.0
    unknown = []
    for model, t in models.items():
        cost = prices.cost(model, t.prompt_tokens + t.cached_prompt_tokens,
                           t.completion_tokens + t.cached_completion_tokens)
        if cost is None:
            unknown.append(model)
        else:
            total += cost
    if unknown:
        return f"cost unknown (no price for {', '.join(sorted(unknown))})"
    return f"~{total * scale:.6g} cost"
