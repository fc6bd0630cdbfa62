"""Reading input (malformed lines go to rejects) and writing output (appended, resumable)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from synthaug.errors import InputError, MissingDependency
from synthaug.records import META, Record, dumps, meta, source_record

log = logging.getLogger(__name__)
SIDE_KINDS = ("rejects", "failures", "dropped")


def read_jsonl(
    path: Path, *, required: set[str], recipe: str, side: SideWriter, limit: int | None = None
) -> Iterator[Record]:
    """Records of a JSONL file; a malformed line is logged, written to rejects, and skipped."""
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if limit is not None and count >= limit:
                return
            if not raw.strip():
                continue
            try:
                fields = _decode(raw, str(path), number, required)
            except InputError as exc:
                log.warning("%s", exc)
                side.write("rejects", {"step": "input", "file": str(path), "line": number,
                                       "field": exc.field, "reason": exc.reason,
                                       "raw": raw.decode("utf-8", "replace").rstrip("\n")})
                continue
            count += 1
            yield source_record(fields, source=str(path), index=number - 1, recipe=recipe)


def _decode(raw: bytes, file: str, line: int, required: set[str]) -> Record:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=file, line=line) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})",
                         file=file, line=line) from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}",
                         file=file, line=line)
    for name in sorted(required):
        if name not in value:
            raise InputError("missing required field", file=file, line=line, field=name)
    if not isinstance(value.get(META, {}), dict):
        value.pop(META)
    return value


async def aiter_records(records: Iterator[Record]) -> AsyncIterator[Record]:
    """An async stream over a sync iterator of records."""
    for record in records:
        yield record


class SideWriter:
    """Appends rows to rejects.jsonl, failures.jsonl and dropped.jsonl (emptied at run start)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = dict.fromkeys(SIDE_KINDS, 0)
        self._handles: dict[str, Any] = {}
        for kind in SIDE_KINDS:
            (folder / f"{kind}.jsonl").unlink(missing_ok=True)

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row to the `kind` file."""
        if kind not in self._handles:
            self._handles[kind] = (self.folder / f"{kind}.jsonl").open("a", encoding="utf-8")
        self._handles[kind].write(dumps(row) + "\n")
        self._handles[kind].flush()
        self.counts[kind] += 1

    def close(self) -> None:
        """Close every file."""
        for handle in self._handles.values():
            handle.close()


class RecordWriter:
    """Appends records to a JSONL file, each id at most once, surviving a kill at any point.

    Ids are unique within a run by construction, so only the ids of an earlier, interrupted
    run are held in memory: a fresh run's memory does not grow with its output.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: set[str] = set()
        self.resumed = 0
        if path.exists():
            self._recover()
            self.resumed = len(self.seen)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _recover(self) -> None:
        """Read the ids already written; cut a partial last line left by a kill."""
        good = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    rid = meta(json.loads(raw)).get("id")
                except json.JSONDecodeError:
                    break
                if rid:
                    self.seen.add(str(rid))
                good += len(raw)
        with self.path.open("rb+") as handle:
            handle.truncate(good)

    def write(self, record: Record) -> bool:
        """Append `record` unless its id was written before; True if written."""
        rid = str(meta(record)["id"])
        if rid in self.seen:
            return False
        os.write(self._fd, (dumps(record) + "\n").encode("utf-8"))
        return True

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def records_file(dataset: Path) -> Path:
    """The records of a dataset given as a JSONL file or a synthaug output folder."""
    return dataset / "records.jsonl" if dataset.is_dir() else dataset


def data_file(name: str) -> Path:
    """A data file shipped with synthaug (synthaug/data/NAME)."""
    from importlib import resources

    path = Path(str(resources.files("synthaug.data").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"no data file {name!r} in synthaug/data")
    return path


def load_jsonl(path: Path) -> list[Record]:
    """Every record of a JSONL file (for small files and exports)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def export(records_path: Path, fmt: str) -> Path:
    """Write the records in `fmt` (parquet or hf) beside the JSONL; return the path."""
    rows = load_jsonl(records_path)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependency("pyarrow", "Parquet output", "parquet") from None
        target = records_path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), target)
        return target
    if fmt == "hf":
        try:
            import datasets
        except ImportError:
            raise MissingDependency("datasets", "Hugging Face output", "hf") from None
        target = records_path.parent / "hf"
        datasets.Dataset.from_list(rows).save_to_disk(str(target))
        return target
    if fmt in ("sft", "alpaca"):
        from synthaug.shapes import to_alpaca, to_sft

        target = records_path.with_name(f"records.{fmt}.jsonl")
        convert = to_sft if fmt == "sft" else to_alpaca
        with target.open("w", encoding="utf-8") as handle:
            for row in rows:
                shaped = convert(row)
                if shaped is not None:
                    handle.write(dumps(shaped) + "\n")
        return target
    raise ValueError(f"unknown format {fmt!r}; use jsonl, parquet, hf, sft or alpaca")
