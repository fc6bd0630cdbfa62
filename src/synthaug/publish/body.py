"""The card's Markdown body, section by section, from scrubbed manifests and record counts."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from synthaug import registry
from synthaug.pipeline import load_recipe
from synthaug.publish.facts import (
    DEMO_WARNING,
    RecordFacts,
    Run,
    decontamination,
    embedded_names,
    filters,
)

if TYPE_CHECKING:
    from synthaug.publish.card import CardOptions
    from synthaug.publish.files import DataFile

ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")
VERBS = {"dedup", "decontaminate", "filter"}


def render(runs: list[Run], facts: RecordFacts, options: CardOptions,
           files: list[DataFile], measures: dict[str, Any] | None) -> str:
    """Every section, in reading order."""
    last = runs[-1].manifest
    lines = [f"# {options.pretty_name or last.get('recipe')}", ""]
    if facts.embedded:
        lines += [f"> **Warning:** {facts.embedded} of {facts.count} records were "
                  f"{DEMO_WARNING}.", ""]
    lines += _summary(runs, facts, options)
    for index, run in enumerate(runs, start=1):
        lines += _run(index, run, len(runs))
    lines += _filters(runs) + _decontamination(runs, facts) + _measures(measures)
    lines += _files(files, options)
    return "\n".join(lines).rstrip() + "\n"


def _summary(runs: list[Run], facts: RecordFacts, options: CardOptions) -> list[str]:
    last = runs[-1].manifest
    versions = last.get("versions") or {}
    license_line = (f"License: `{options.license}`, as given by the publisher." if
                    options.license else "License: **unknown**: none was given (pass "
                    "`--license`); check the licenses of the models and inputs used.")
    models = ", ".join(f"`{m}` ({n})" for m, n in facts.models.most_common()) or "none"
    return [
        f"{facts.count} synthetic records made with synthaug {versions.get('synthaug', '')} "
        f"by the recipe{'s' if len(runs) > 1 else ''} "
        + ", ".join(f"`{r.manifest.get('recipe')}`" for r in runs)
        + f"; last run {last.get('status')}, started {last.get('started')}.", "",
        license_line, "", f"Records per model: {models}.", ""]


def _description(name: str) -> str:
    if name in VERBS and name not in registry.recipe_files():
        return f"The curation verb `synthaug {name}`, run over the records above."
    path = registry.recipe_files().get(name)
    if path is None:
        return "A recipe file of the user's own."
    return " ".join(load_recipe(path).description.split())


def _run(index: int, run: Run, total: int) -> list[str]:
    m = run.manifest
    name = str(m.get("recipe"))
    lines = [f"## {'Step ' + str(index) + ': ' if total > 1 else ''}Recipe `{name}`", "",
             _description(name), "", f"Status `{m.get('status')}`, seed "
             f"{(m.get('config') or {}).get('seed')}, {m.get('total_records')} records, "
             f"{m.get('seconds')} s, input `{m.get('input') or 'none'}`.", ""]
    cites = m.get("cites") or []
    lines += ["### Methods and citations", ""]
    lines += [f"- {_linked(c)}" for c in cites] or ["- No paper: a building block of synthaug."]
    lines += ["", "### Models and backends", "", *_models(run)]
    lines += ["", "### Steps", "", "| step | method | in | out | dropped | failures | rejects "
              "| LLM samples | cache hits |", "|---|---|---|---|---|---|---|---|---|"]
    configs = run.step_configs()
    for label, s in run.steps.items():
        lines.append(f"| {label} | {(configs.get(label) or {}).get('use', '?')} | {s.get('in')} "
                     f"| {s.get('out')} | {sum((s.get('dropped') or {}).values())} | "
                     f"{s.get('failures')} | {s.get('rejects')} | {s.get('llm_samples')} | "
                     f"{s.get('cache_hits')} |")
    lines += ["", *_drops(run), *_side(run), ""]
    return lines


def _models(run: Run) -> list[str]:
    used = run.models()
    if not used:
        return ["No model: this step calls none."]
    stats = run.manifest.get("backends") or {}
    lines = ["| role | backend | model | calls | cache hits | failures | prompt tokens "
             "| completion tokens |", "|---|---|---|---|---|---|---|---|"]
    for m in used:
        s = stats.get(m["role"]) or {}
        lines.append(f"| {m['role']} | {m['backend']} | {m['model']} | {s.get('calls', '-')} | "
                     f"{s.get('cache_hits', '-')} | {s.get('failures', '-')} | "
                     f"{s.get('prompt_tokens', '-')} | {s.get('completion_tokens', '-')} |")
    demo = sorted({str(m["role"]) for m in used if m["model"] in embedded_names([run])})
    if demo:
        lines += ["", f"Role{'s' if len(demo) > 1 else ''} {', '.join(demo)}: the embedded "
                  f"model; what it wrote was {DEMO_WARNING}."]
    return lines


def _drops(run: Run) -> list[str]:
    lines = []
    for label, s in run.steps.items():
        for reason, n in sorted((s.get("dropped") or {}).items(), key=lambda kv: -kv[1]):
            lines.append(f"- `{label}` dropped {n}: {reason}")
    return (["Drops by reason:", "", *lines, ""] if lines
            else ["Nothing was dropped.", ""])


def _side(run: Run) -> list[str]:
    side = run.manifest.get("side_files") or {}
    return [f"Failures (calls that failed after retries; a rerun retries them): "
            f"{side.get('failures', 0)}. Rejects (input lines not used): "
            f"{side.get('rejects', 0)}. Dropped rows: {side.get('dropped', 0)}. These "
            "side files are not published."]


def _filters(runs: list[Run]) -> list[str]:
    found = filters(runs)
    if not found:
        return ["## Filters", "", "No step filtered records.", ""]
    lines = ["## Filters", "", "| step | kind | in | out | drops by reason | options |",
             "|---|---|---|---|---|---|"]
    for f in found:
        lines.append(f"| {f['step']} | {f['use']} | {f['in']} | {f['out']} | "
                     f"{_cell(f['dropped'])} | {_cell(f['options'])} |")
    return [*lines, ""]


def _decontamination(runs: list[Run], facts: RecordFacts) -> list[str]:
    found = decontamination(runs)
    lines = ["## Decontamination", ""]
    if not found:
        return [*lines, "No decontamination step ran: these records were **not** checked "
                "against benchmarks (`synthaug decontaminate`).", ""]
    for d in found:
        o = d["options"]
        hits = ", ".join(f"{k}: {n}" for k, n in sorted(d["hits"].items())) or "none"
        lines += [f"- `{d['step']}` of `{d['recipe']}` checked {d['checked']} records against "
                  f"{', '.join(o.get('benchmarks') or [])} (word {o.get('ngram')}-grams, "
                  f"embedding {o.get('embedder')}, top {o.get('top_k')}, judge "
                  f"{o.get('judge') or 'none'}, action {o.get('action')}). Hits by benchmark "
                  f"and method: {hits}; {d['dropped']} dropped; {d['judged']} pairs judged; "
                  f"{d['unjudged']} records kept with unjudged near neighbours."]
    if facts.flagged:
        lines.append("- Records published with a contamination flag: " + ", ".join(
            f"{k}: {n}" for k, n in sorted(facts.flagged.items())) + ".")
    return [*lines, ""]


def _measures(measures: dict[str, Any] | None) -> list[str]:
    if measures is None:
        return []
    names = ("records", "distinct_1", "distinct_2", "distinct_3", "self_bleu",
             "compression_ratio", "vendi")
    rows: list[tuple[str, Any]] = [(k, measures[k]) for k in names if k in measures]
    rows += [(f"coverage.{k}", v) for k, v in (measures.get("coverage") or {}).items()]
    lengths = measures.get("lengths") or {}
    rows += [(f"length.{k}", lengths[k]) for k in ("mean", "p50", "p90", "max") if k in lengths]
    lines = ["## Measures", "", f"As `synthaug report` computes them, over the fields "
             f"{', '.join(measures.get('fields') or [])}.", "", "| measure | value |",
             "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in rows]
    return [*lines, ""]


def _files(files: list[DataFile], options: CardOptions) -> list[str]:
    repo = options.repo or "USER/NAME"
    lines = ["## Files", "", "| file | format | config |", "|---|---|---|"]
    lines += [f"| `{f.repo_path}` | {f.fmt} | {f.config or '-'} |" for f in files]
    lines += ["| `manifest.json` | the run's manifest (secrets and local paths removed) | - |",
              "", "```python", "from datasets import load_dataset", ""]
    lines += [f'records = load_dataset("{repo}")' if f.config == "default" else
              f'{f.config} = load_dataset("{repo}", "{f.config}")' for f in files if f.config]
    return [*lines, "```", ""]


def _linked(cite: str) -> str:
    return ARXIV.sub(r"[arXiv:\1](https://arxiv.org/abs/\1)", cite)


def _cell(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + "…"
