"""Which data files a card names and a push uploads, and where they go in the repository."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthaug.errors import ConfigError
from synthaug.io import export, records_file

# format -> file written by `synthaug run --format` beside records.jsonl
LOCAL_NAMES = {"jsonl": "records.jsonl", "parquet": "records.parquet",
               "sft": "records.sft.jsonl", "alpaca": "records.alpaca.jsonl",
               "prm": "records.prm.jsonl", "dpo": "records.dpo.jsonl",
               "kto": "records.kto.jsonl", "rm": "records.rm.jsonl"}
RECORDS = ("parquet", "jsonl")  # the records themselves; the first present is the default


@dataclass(frozen=True)
class DataFile:
    """One data file: its format, where it is here, where it goes, and its card config."""

    fmt: str
    local: Path
    repo_path: str
    config: str | None  # None: uploaded, but not a config of its own (JSONL beside Parquet)


def data_files(out: Path, formats: Sequence[str] | None = None) -> list[DataFile]:
    """The chosen formats' files, exported now when missing or older than the records; with
    no formats, the records and every export already in `out` (empty exports skipped)."""
    records = records_file(out)
    if records.parent != out:
        raise ConfigError("not a synthaug output folder", file=str(out))
    chosen = list(dict.fromkeys(formats)) if formats else _present(out)
    for fmt in chosen:
        if fmt == "hf":
            raise ConfigError("'hf' is a folder for datasets.load_from_disk; push 'parquet' "
                              "instead", field="--format")
        if fmt not in LOCAL_NAMES:
            raise ConfigError(f"unknown format '{fmt}'; valid: {', '.join(LOCAL_NAMES)}",
                              field="--format")
    found: list[tuple[str, Path]] = []
    for fmt in chosen:
        path = out / LOCAL_NAMES[fmt]
        if fmt != "jsonl" and (not path.exists()
                               or path.stat().st_mtime < records.stat().st_mtime):
            path = export(records, fmt)
        if path.stat().st_size == 0:
            if formats:
                raise ConfigError(f"the {fmt} export has no rows: no record has that shape",
                                  file=str(path), field="--format")
            continue
        found.append((fmt, path))
    return _placed(found)


def _present(out: Path) -> list[str]:
    return ["jsonl", *(fmt for fmt, name in LOCAL_NAMES.items()
                       if fmt != "jsonl" and (out / name).is_file())]


def _placed(files: list[tuple[str, Path]]) -> list[DataFile]:
    default = next((fmt for fmt in RECORDS if any(f == fmt for f, _ in files)), None)
    placed = []
    for fmt, path in files:
        config = fmt if fmt not in RECORDS else "default" if fmt == default else None
        placed.append(DataFile(fmt, path, f"data/{path.name}", config))
    return placed
