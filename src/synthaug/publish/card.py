"""The dataset card: README.md with the Hub's YAML front matter, and a body that says how
the data was made (recipe, methods and citations, models, counts, drops, filters,
decontamination, measures) and warns when the embedded demo model made any of it.

The front matter is built with huggingface_hub's `DatasetCardData`, parsed back with its
`DatasetCard` and checked against the Hub's license ids and size categories: a card that
would not load on the Hub fails here, before anything is uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.errors import ConfigError, MissingDependency
from synthaug.publish import body
from synthaug.publish.facts import (
    RecordFacts,
    Run,
    declared_languages,
    embedded_names,
    lineage,
    record_facts,
)
from synthaug.publish.files import DataFile, data_files
from synthaug.publish.secrets import scrub

# https://huggingface.co/docs/hub/repositories-licenses (hub-docs, "region licenses")
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
    "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0",
    "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by",
    "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
    "lgpl-lr", "deepfloyd-if-license", "llama2", "gemma", "unknown", "other"
})
# DatasetCardData's size_categories options, by the record count each starts at
SIZES = (("n<1K", 0), ("1K<n<10K", 1_000), ("10K<n<100K", 10_000), ("100K<n<1M", 100_000),
         ("1M<n<10M", 10**6), ("10M<n<100M", 10**7), ("100M<n<1B", 10**8),
         ("1B<n<10B", 10**9), ("10B<n<100B", 10**10), ("100B<n<1T", 10**11), ("n>1T", 10**12))
SLUG = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")


@dataclass
class CardOptions:
    """What the user tells the card (nothing here is guessed)."""

    license: str | None = None
    language: list[str] = field(default_factory=list)
    task_categories: list[str] = field(default_factory=list)
    pretty_name: str | None = None
    tags: list[str] = field(default_factory=list)
    repo: str | None = None  # the Hub repository, for the loading example
    measures: bool = False  # compute `synthaug report`'s measures (the curate extra)


@dataclass
class Card:
    """A rendered card, its front matter and the data files it names."""

    text: str
    metadata: dict[str, Any]
    files: list[DataFile]
    facts: RecordFacts


def write_card(out: Path, options: CardOptions, formats: Sequence[str] | None = None,
               target: Path | None = None) -> tuple[Path, Card]:
    """Build the card for the run folder `out` and write it (default OUT/README.md)."""
    card = build_card(out, options, data_files(out, formats))
    path = target or out / "README.md"
    path.write_text(card.text, encoding="utf-8")
    return path, card


def build_card(out: Path, options: CardOptions, files: list[DataFile]) -> Card:
    """The card of `out` naming `files`, validated."""
    runs = [Run(r.folder, scrub(r.manifest)) for r in lineage(out)]
    facts = record_facts(out / "records.jsonl", embedded_names(runs))
    metadata = front_matter(runs, facts, options, files)
    measures = _measures(out) if options.measures else None
    text = _render(metadata, body.render(runs, facts, options, files, measures))
    validate(text, files)
    return Card(text, metadata, files, facts)


def front_matter(runs: list[Run], facts: RecordFacts, options: CardOptions,
                 files: list[DataFile]) -> dict[str, Any]:
    """The YAML metadata: license, language, task categories, size, name, tags, configs."""
    last = runs[-1].manifest
    data: dict[str, Any] = dict(license_fields(options.license))
    languages = options.language or declared_languages(runs)
    if languages:
        data["language"] = languages
    data["task_categories"] = options.task_categories or task_categories(runs)
    data["size_categories"] = [size_category(facts.count)]
    data["pretty_name"] = options.pretty_name or f"{last.get('recipe')} (synthaug)"
    data["tags"] = _tags(runs, options.tags)
    configs: list[dict[str, Any]] = [
        {"config_name": f.config, "data_files": [{"split": "train", "path": f.repo_path}]}
        for f in sorted(files, key=lambda f: f.config != "default") if f.config]
    if configs and configs[0]["config_name"] != "default":
        configs[0]["default"] = True  # the Hub's viewer and load_dataset(REPO) open this one
    if configs:
        data["configs"] = configs
    return data


def license_fields(given: str | None) -> dict[str, str]:
    """`license` as the Hub spells it: unknown when not given, `other` with `license_name`
    for a license the Hub does not list."""
    if not given:
        return {"license": "unknown"}
    name = given.strip().lower()
    if name in HUB_LICENSES:
        return {"license": name}
    slug = re.sub(r"[^a-z0-9.+-]+", "-", name).strip("-")
    if not slug:
        raise ConfigError(f"not a license name: {given!r}", field="--license")
    return {"license": "other", "license_name": slug}


def size_category(count: int) -> str:
    """The Hub's size bucket for `count` records."""
    return [name for name, start in SIZES if count >= start][-1]


def task_categories(runs: list[Run]) -> list[str]:
    """Hub task categories from the recipes' taxonomy tags: text-classification for
    labeling or non-LLM augmentation of understanding-only data, text-generation for data
    that trains generation (and whenever nothing else applies)."""
    found: list[str] = []
    for run in runs:
        tags = run.manifest.get("tags") or {}
        approach, stage = set(tags.get("approach") or []), set(tags.get("stage") or [])
        function = set(tags.get("function") or [])
        if function == {"understanding"} and approach & {"augmentation/labeling",
                                                        "augmentation/non-llm-driven"}:
            found.append("text-classification")
            if not stage & {"instruction-tuning", "preference-alignment", "pre-training"}:
                continue
        if tags:
            found.append("text-generation")
    return list(dict.fromkeys(found)) or ["text-generation"]


def _tags(runs: list[Run], extra: list[str]) -> list[str]:
    found = ["synthetic", "synthaug"]
    for run in runs:
        found.append(str(run.manifest.get("recipe")))
        tags = run.manifest.get("tags") or {}
        for name in ("approach", "stage", "function"):
            found += [str(t).rsplit("/", 1)[-1] for t in tags.get(name) or []]
    found += extra
    return [t for t in dict.fromkeys(x.lower() for x in found) if SLUG.match(t)]


def _render(metadata: dict[str, Any], text: str) -> str:
    try:
        from huggingface_hub import DatasetCardData
    except ImportError:
        raise MissingDependency("huggingface_hub", "dataset cards", "hub") from None
    yaml_text = DatasetCardData(**metadata).to_yaml()
    return f"---\n{yaml_text}\n---\n\n{text}"


def validate(text: str, files: list[DataFile] | None = None) -> dict[str, Any]:
    """Parse the card with huggingface_hub's DatasetCard and check what the Hub checks that
    can be checked offline; returns the metadata. `files`: what will be uploaded."""
    from huggingface_hub import DatasetCard

    try:
        data: dict[str, Any] = DatasetCard(text).data.to_dict()  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"invalid card front matter: {exc}", file="README.md") from None
    problems = []
    if data.get("license") not in HUB_LICENSES:
        problems.append(f"license {data.get('license')!r} is not a Hub license id")
    if data.get("license") == "other" and not data.get("license_name"):
        problems.append("license 'other' needs a license_name")
    sizes = {name for name, _ in SIZES}
    problems += [f"size category {s!r}" for s in data.get("size_categories") or []
                 if s not in sizes]
    problems += [f"tag {t!r}" for t in data.get("tags") or [] if not SLUG.match(str(t))]
    if files is not None:
        uploaded = {f.repo_path for f in files}
        for config in data.get("configs") or []:
            problems += [f"config {config.get('config_name')!r} names {d.get('path')!r}, "
                         "which is not uploaded" for d in config.get("data_files") or []
                         if d.get("path") not in uploaded]
    if problems:
        raise ConfigError("invalid card: " + "; ".join(problems), file="README.md")
    return data


def _measures(out: Path) -> dict[str, Any]:
    """The measures `synthaug report` shows, computed the same way."""
    try:
        from synthaug.report.collect import collect

        return collect(out).measures
    except ImportError as exc:
        raise MissingDependency(exc.name or "?", "card measures", "curate") from None
